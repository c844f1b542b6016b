//! Step memos: what a built-in step computed from each of its input files,
//! kept between runs so a rerun after a few files changed redoes only those.
//!
//! A memo (`.fabric/memo/STAGE`) is one file of entries in the order the step
//! visits its input files (path order, component by component). Each entry
//! holds the file's path, its content hash and the step's result for it.
//! The step reads the old memo and writes the new one
//! as two streams side by side, so memory does not grow with the input; the
//! new memo replaces the old one (rename) only when the step succeeded.
//!
//! A memo is only an accelerator and can never change a result:
//! - it opens with a domain key (step, step version, fabric version and the
//!   step's arguments); any other domain is ignored;
//! - an entry is used only for the same path with the same content hash;
//! - anything unreadable ends the old memo there (those files are computed),
//!   and a step decodes a result only if it has exactly the expected shape.
//!
//! Like the stat cache, a memo is trusted as local state that only fabric
//! writes (replaced whole, by rename); it carries no checksum per entry,
//! which would cost as much as the work it saves.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::digest::Digest;
use crate::hash::Hasher;

const MAGIC: &[u8; 12] = b"FABRICMEMO1\n";

/// A step's memo: where it lives, its domain, and how the step learns its
/// input files' content hashes (through the stat cache, without reading
/// unchanged files).
pub struct Memo<'a> {
    /// The memo file.
    pub path: std::path::PathBuf,
    /// What the results depend on besides each file's content.
    pub domain: Digest,
    /// Hashes input files.
    pub hasher: &'a Hasher<'a>,
    /// Content hashes already known (the stage's deps, as fingerprinted).
    pub known: &'a std::collections::HashMap<std::path::PathBuf, Digest>,
}

impl Memo<'_> {
    /// The content hash of the input file at `path`.
    pub fn content_hash(&self, path: &Path) -> io::Result<Digest> {
        match self.known.get(path) {
            Some(hash) => Ok(*hash),
            None => self.hasher.file_digest(path),
        }
    }

    /// The files the stage's fingerprint found under `dir` (a directory dep:
    /// its whole tree), in path order component by component: what a walk of
    /// `dir` in name order finds, without walking it again.
    pub fn files_under(&self, dir: &Path) -> Vec<KnownFile> {
        use std::os::unix::ffi::OsStrExt;
        let dir = dir.as_os_str().as_bytes();
        let mut files: Vec<KnownFile> = self
            .known
            .iter()
            .filter_map(|(path, hash)| {
                let name = path.as_os_str().as_bytes().strip_prefix(dir)?.strip_prefix(b"/")?;
                Some(KnownFile {
                    name: String::from_utf8_lossy(name).into_owned(),
                    path: path.clone(),
                    hash: *hash,
                })
            })
            .collect();
        files.sort_unstable_by(|a, b| path_order(Path::new(&a.name), Path::new(&b.name)));
        files
    }

    /// Where the step keeps another memo of its own, beside this one
    /// (`.fabric/memo/STAGE.KIND`: stage names hold no dot).
    pub fn beside(&self, kind: &str) -> std::path::PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(".");
        name.push(kind);
        name.into()
    }

    /// The memo of the last successful run.
    pub fn reader(&self) -> MemoReader {
        MemoReader::open(&self.path, &self.domain)
    }

    /// The memo of this run.
    pub fn writer(&self) -> io::Result<MemoWriter> {
        MemoWriter::create(&self.path, &self.domain)
    }
}

/// The order of memo entries: path order component by component (as
/// `Path::cmp` and a walk in name order), compared as bytes with the
/// separator ranked first, which is the same for the normalized paths steps
/// use and far cheaper than parsing components.
pub fn path_order(a: &Path, b: &Path) -> Ordering {
    use std::os::unix::ffi::OsStrExt;
    fn ranked(path: &Path) -> impl Iterator<Item = u8> + '_ {
        let bytes = path.as_os_str().as_bytes();
        bytes.iter().map(|&byte| if byte == b'/' { 0 } else { byte })
    }
    ranked(a).cmp(ranked(b))
}

/// An input file the stage's fingerprint found, as [`Memo::files_under`]
/// gives it.
pub struct KnownFile {
    /// Where it is.
    pub path: std::path::PathBuf,
    /// Its path under the directory asked for: its key in the memo.
    pub name: String,
    /// Its content hash.
    pub hash: Digest,
}

/// The old memo, read forward as the step asks for files in order.
pub struct MemoReader {
    reader: Option<BufReader<File>>,
    /// The next entry's path and content hash, read ahead.
    next: Option<(String, Digest)>,
}

impl MemoReader {
    /// Opens the memo at `path` if it belongs to `domain`; otherwise (or if
    /// there is none) every lookup misses.
    pub fn open(path: &Path, domain: &Digest) -> MemoReader {
        let mut memo = MemoReader {
            reader: None,
            next: None,
        };
        let Ok(file) = File::open(path) else { return memo };
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut header = [0u8; MAGIC.len() + 32];
        if reader.read_exact(&mut header).is_ok()
            && header[..MAGIC.len()] == *MAGIC
            && header[MAGIC.len()..] == domain.0
        {
            memo.reader = Some(reader);
            memo.advance();
        }
        memo
    }

    /// The result kept for the file at `path` with content `hash`, if any.
    /// Paths must be asked for in increasing order; entries before `path`
    /// are skipped.
    pub fn take(&mut self, path: &str, hash: &Digest) -> Option<Vec<u8>> {
        loop {
            let (next_path, next_hash) = self.next.as_ref()?;
            let wanted = next_hash == hash;
            match path_order(Path::new(next_path.as_str()), Path::new(path)) {
                Ordering::Greater => return None,
                Ordering::Less => self.skip_result(),
                Ordering::Equal if wanted => return self.read_result(),
                Ordering::Equal => {
                    self.skip_result();
                    return None;
                }
            }
        }
    }

    /// Reads the next entry's path and hash (ending the memo on any error).
    fn advance(&mut self) {
        self.next = self.reader.as_mut().and_then(|reader| {
            let path = String::from_utf8(read_bytes(reader).ok()?).ok()?;
            let mut hash = [0u8; 32];
            reader.read_exact(&mut hash).ok()?;
            Some((path, Digest(hash)))
        });
        if self.next.is_none() {
            self.reader = None;
        }
    }

    /// Reads the current entry's result.
    fn read_result(&mut self) -> Option<Vec<u8>> {
        match read_bytes(self.reader.as_mut()?).ok() {
            Some(bytes) => {
                self.advance();
                Some(bytes)
            }
            None => {
                self.reader = None;
                self.next = None;
                None
            }
        }
    }

    /// Skips the current entry's result.
    fn skip_result(&mut self) {
        let skipped = self.reader.as_mut().is_some_and(|reader| {
            read_len(reader).is_ok_and(|len| i64::try_from(len).is_ok_and(|len| reader.seek_relative(len).is_ok()))
        });
        if skipped {
            self.advance();
        } else {
            self.reader = None;
            self.next = None;
        }
    }
}

/// The new memo, written as the step goes.
pub struct MemoWriter {
    writer: BufWriter<tempfile::NamedTempFile>,
    target: std::path::PathBuf,
}

impl MemoWriter {
    /// Starts a new memo for `domain`, to replace the one at `path`.
    pub fn create(path: &Path, domain: &Digest) -> io::Result<MemoWriter> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = tempfile::Builder::new().prefix(".memo-").tempfile_in(dir)?;
        let mut writer = BufWriter::with_capacity(1 << 16, temp);
        writer.write_all(MAGIC)?;
        writer.write_all(&domain.0)?;
        Ok(MemoWriter {
            writer,
            target: path.to_path_buf(),
        })
    }

    /// Records `result` for the file at `path` with content `hash` (paths in
    /// increasing order).
    pub fn put(&mut self, path: &str, hash: &Digest, result: &[u8]) -> io::Result<()> {
        write_bytes(&mut self.writer, path.as_bytes())?;
        self.writer.write_all(&hash.0)?;
        write_bytes(&mut self.writer, result)
    }

    /// Replaces the old memo with this one. Not fsync'd: a memo lost to a
    /// power failure only costs the next run its shortcut. The old memo is
    /// removed first: renaming over it would make ext4 start writing the
    /// new one out at once (`auto_da_alloc`), which costs more than the
    /// moment without a memo.
    pub fn commit(self) -> io::Result<()> {
        let temp = self.writer.into_inner().map_err(io::IntoInnerError::into_error)?;
        match std::fs::remove_file(&self.target) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        temp.persist(&self.target).map_err(|e| e.error)?;
        Ok(())
    }
}

fn write_bytes(writer: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    writer.write_all(&(bytes.len() as u64).to_le_bytes())?;
    writer.write_all(bytes)
}

fn read_len(reader: &mut impl Read) -> io::Result<u64> {
    let mut len = [0u8; 8];
    reader.read_exact(&mut len)?;
    Ok(u64::from_le_bytes(len))
}

fn read_bytes(reader: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = read_len(reader)?;
    // `take` bounds a damaged length by what the file really holds; the
    // room reserved at once is bounded too.
    let mut bytes = Vec::with_capacity(len.min(1 << 20) as usize);
    reader.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(bytes)
}

/// Builds a memo result: length-prefixed fields, read back by [`Fields`].
#[derive(Default)]
pub struct FieldWriter(Vec<u8>);

impl FieldWriter {
    /// Appends a number.
    pub fn number(&mut self, value: u64) -> &mut Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// Appends a text.
    pub fn text(&mut self, value: &str) -> &mut Self {
        self.number(value.len() as u64);
        self.0.extend_from_slice(value.as_bytes());
        self
    }

    /// How many bytes were written.
    pub fn written(&self) -> usize {
        self.0.len()
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// Reads the fields of a memo result in the order they were written; every
/// read is `None` once the bytes do not fit.
pub struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    /// Reads from `bytes`.
    pub fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields(bytes)
    }

    /// The next number.
    pub fn number(&mut self) -> Option<u64> {
        let (head, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*head))
    }

    /// The next text.
    pub fn text(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.number()?).ok()?;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        std::str::from_utf8(head).ok()
    }

    /// True when every byte was read.
    pub fn is_done(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_found_by_path_and_content_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memo");
        let domain = Digest::of(b"step v1");
        let (a, b, c) = (Digest::of(b"a"), Digest::of(b"b"), Digest::of(b"c"));
        let mut writer = MemoWriter::create(&path, &domain).unwrap();
        // Component order: `x/y` sorts before `x-z`, as a directory walk visits them.
        writer.put("x/y", &a, b"result a").unwrap();
        writer.put("x-z", &b, b"result b").unwrap();
        writer.put("z", &c, b"result c").unwrap();
        writer.commit().unwrap();

        let mut memo = MemoReader::open(&path, &domain);
        assert_eq!(memo.take("x/y", &a).as_deref(), Some(&b"result a"[..]));
        assert_eq!(memo.take("x-z", &c), None, "another content misses");
        assert_eq!(memo.take("z", &c).as_deref(), Some(&b"result c"[..]));

        let mut memo = MemoReader::open(&path, &domain);
        assert_eq!(memo.take("w", &a), None, "a new file misses");
        assert_eq!(
            memo.take("z", &c).as_deref(),
            Some(&b"result c"[..]),
            "skips what was not asked for"
        );

        assert_eq!(MemoReader::open(&path, &Digest::of(b"step v2")).take("z", &c), None);

        // A cut file ends the memo where it was cut.
        let bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(8).position(|w| w == b"result c").unwrap();
        std::fs::write(&path, &bytes[..at + 4]).unwrap();
        let mut memo = MemoReader::open(&path, &domain);
        assert_eq!(memo.take("x/y", &a).as_deref(), Some(&b"result a"[..]));
        assert_eq!(memo.take("z", &c), None);
    }

    #[test]
    fn path_order_is_component_order() {
        let paths = ["a", "a b", "a-b/c", "a.json", "a/b.json", "a/b/c", "a/b0", "ab", "b"];
        for x in paths {
            for y in paths {
                let (x, y) = (Path::new(x), Path::new(y));
                assert_eq!(path_order(x, y), x.cmp(y), "{x:?} against {y:?}");
            }
        }
    }

    #[test]
    fn files_under_a_dep_come_in_walk_order_with_their_hashes() {
        let root = Path::new("/w");
        let known: std::collections::HashMap<_, _> = ["raw/a.json", "raw/a/b.json", "raw-2/c.json", "raw/b.json"]
            .into_iter()
            .map(|path| (root.join(path), Digest::of(path.as_bytes())))
            .collect();
        let cache = crate::stat_cache::StatCache::load(Path::new("/nonexistent"));
        let hasher = Hasher::new(root, &cache);
        let memo = Memo {
            path: root.join(".fabric/memo/s"),
            domain: Digest::of(b"d"),
            hasher: &hasher,
            known: &known,
        };
        let files = memo.files_under(&root.join("raw"));
        let names: Vec<_> = files.iter().map(|file| file.name.as_str()).collect();
        assert_eq!(names, ["a/b.json", "a.json", "b.json"]);
        assert_eq!(files[0].path, root.join("raw/a/b.json"));
        assert_eq!(files[0].hash, Digest::of(b"raw/a/b.json"));
    }

    #[test]
    fn fields_round_trip_and_reject_short_input() {
        let mut writer = FieldWriter::default();
        writer.number(7).text("héllo");
        let bytes = writer.finish();
        let mut fields = Fields::new(&bytes);
        assert_eq!(fields.number(), Some(7));
        assert_eq!(fields.text(), Some("héllo"));
        assert!(fields.is_done());
        let mut short = Fields::new(&bytes[..bytes.len() - 1]);
        short.number();
        assert_eq!(short.text(), None);
    }
}
