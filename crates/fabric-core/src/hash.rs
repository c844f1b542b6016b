//! Content hashing of files, directories and globs with BLAKE3.
//!
//! - A file hashes to BLAKE3 of its bytes; large files are memory-mapped and
//!   hashed on all cores, and unchanged files come from the [`StatCache`].
//! - A directory hashes as a Merkle tree: the canonical encoding of its
//!   sorted entries — `(relative path, file hash, size, executable bit)` for
//!   files, `(path, target)` for symlinks (never followed), `(path)` for empty
//!   directories. Files are hashed in parallel across cores.
//! - A glob hashes as the tree of the workspace files it matches.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use globset::GlobMatcher;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, KeyEncoder};
use crate::paths::RelPath;
use crate::stat_cache::{Listing, Look, Stamp, StatCache, now_ns};

/// Files at least this large are memory-mapped and hashed multi-threaded.
const LARGE_FILE: u64 = 4 << 20;

/// One entry of a directory tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TreeEntry {
    /// A regular file.
    File {
        path: String,
        hash: Digest,
        size: u64,
        executable: bool,
    },
    /// A symbolic link, recorded by its target text.
    Symlink { path: String, target: String },
    /// A directory with nothing in it.
    Empty { path: String },
}

impl TreeEntry {
    /// The entry's path relative to the tree root.
    pub fn path(&self) -> &str {
        match self {
            TreeEntry::File { path, .. } | TreeEntry::Symlink { path, .. } | TreeEntry::Empty { path } => path,
        }
    }
}

/// A directory's content: entries sorted by path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Tree {
    /// Sorted entries.
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// The first entry a restore must not write: a path that is empty,
    /// absolute or has `.`/`..` in it, or one below a symlink entry (writing
    /// it would follow the link out of the tree). A tree hashed from a real
    /// directory has none; one from a shared tier might.
    pub fn unsafe_entry(&self) -> Option<&str> {
        let links: std::collections::BTreeSet<&str> = self
            .entries
            .iter()
            .filter(|e| matches!(e, TreeEntry::Symlink { .. }))
            .map(TreeEntry::path)
            .collect();
        self.entries.iter().map(TreeEntry::path).find(|path| {
            let components = Path::new(path).components();
            let plain = !path.is_empty() && components.clone().all(|c| matches!(c, std::path::Component::Normal(_)));
            let below_link = Path::new(path)
                .ancestors()
                .skip(1)
                .any(|ancestor| ancestor.to_str().is_some_and(|a| links.contains(a)));
            !plain || below_link
        })
    }

    /// The content hashes of its files.
    pub fn file_hashes(&self) -> impl Iterator<Item = Digest> + '_ {
        self.entries.iter().filter_map(|entry| match entry {
            TreeEntry::File { hash, .. } => Some(*hash),
            _ => None,
        })
    }

    /// The Merkle hash over the canonical encoding of the entries.
    pub fn digest(&self) -> Digest {
        let mut key = KeyEncoder::new("fabric-tree-v1");
        for entry in &self.entries {
            match entry {
                TreeEntry::File {
                    path,
                    hash,
                    size,
                    executable,
                } => {
                    key.text(b'f', path)
                        .bytes(b'h', &hash.0)
                        .bytes(b's', &size.to_le_bytes())
                        .bytes(b'x', &[u8::from(*executable)]);
                }
                TreeEntry::Symlink { path, target } => {
                    key.text(b'l', path).text(b't', target);
                }
                TreeEntry::Empty { path } => {
                    key.text(b'e', path);
                }
            }
        }
        key.finish()
    }

    /// Total bytes of the files.
    pub fn size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e {
                TreeEntry::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// Number of regular files.
    pub fn files(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| matches!(e, TreeEntry::File { .. }))
            .count() as u64
    }
}

/// What a path holds, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Nothing is there.
    Missing,
    /// A regular file.
    File { hash: Digest, size: u64, executable: bool },
    /// A directory (or the files a glob matched) and its tree hash.
    Dir { tree: Tree, hash: Digest },
}

impl Content {
    /// The hash that stands for this content in fingerprints and the lock.
    pub fn digest(&self) -> Option<Digest> {
        match self {
            Content::Missing => None,
            Content::File { hash, .. } | Content::Dir { hash, .. } => Some(*hash),
        }
    }
}

/// What single files (or their absence) hashed to, remembered over a stretch
/// in which nothing writes to the workspace, so a file that is one stage's
/// out and other stages' dep is looked at once.
pub type FileMemo = Mutex<HashMap<RelPath, Content>>;

/// What a run saw, in order: every path a hasher looked at (directories
/// walked included) as it was then, and every path the run itself cleared
/// to write it anew. What a verdict computed from those paths rests on
/// ([`crate::run::noop`]).
#[derive(Default)]
pub struct Witness(Mutex<Vec<Sighting>>);

/// One thing a [`Witness`] saw.
// Nearly every sighting is a look: boxing it would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sighting {
    /// A look, and when it was taken (nanoseconds since the epoch, read
    /// before the stamp).
    Look(Look, i128),
    /// A path (with everything under it) removed or rewritten by the run:
    /// what was seen there before no longer counts.
    Cleared(String),
}

impl Witness {
    /// Notes a look taken at `at`.
    pub fn look(&self, look: Look, at: i128) {
        self.push(Sighting::Look(look, at));
    }

    /// Notes that the run clears `path` (before it does).
    pub fn clear(&self, path: &str) {
        self.push(Sighting::Cleared(path.to_string()));
    }

    fn push(&self, sighting: Sighting) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(sighting);
    }

    /// Everything seen, in order.
    pub fn into_sightings(self) -> Vec<Sighting> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hashes workspace paths, consulting and feeding the stat cache.
pub struct Hasher<'a> {
    root: &'a Path,
    cache: &'a StatCache,
    memo: Option<&'a FileMemo>,
    witness: Option<&'a Witness>,
}

impl<'a> Hasher<'a> {
    /// A hasher for paths under `root`.
    pub fn new(root: &'a Path, cache: &'a StatCache) -> Hasher<'a> {
        Hasher {
            root,
            cache,
            memo: None,
            witness: None,
        }
    }

    /// The same hasher, noting every path it looks at in `witness`.
    pub fn witnessed(self, witness: Option<&'a Witness>) -> Hasher<'a> {
        Hasher { witness, ..self }
    }

    fn saw(&self, at: i128, key: &str, stamp: Option<Stamp>, hash: Option<Digest>, listing: Option<Listing>) {
        if let Some(witness) = self.witness {
            let look = Look {
                path: key.to_string(),
                stamp,
                hash,
                listing,
            };
            witness.look(look, at);
        }
    }

    /// The same hasher, remembering files in `memo`; the caller empties the
    /// memo before anything may write to the workspace.
    pub fn remembering(self, memo: &'a FileMemo) -> Hasher<'a> {
        Hasher {
            memo: Some(memo),
            ..self
        }
    }

    /// Hashes a file or directory (a top-level symlink is followed).
    pub fn hash(&self, path: &RelPath) -> io::Result<Content> {
        let Some(memo) = self.memo else {
            return self.hash_now(path);
        };
        if let Some(content) = memo.lock().unwrap_or_else(PoisonError::into_inner).get(path) {
            return Ok(content.clone());
        }
        let content = self.hash_now(path)?;
        if !matches!(content, Content::Dir { .. }) {
            memo.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(path.clone(), content.clone());
        }
        Ok(content)
    }

    fn hash_now(&self, path: &RelPath) -> io::Result<Content> {
        let absolute = path.under(self.root);
        let at = self.witness.map_or(0, |_| now_ns());
        let meta = match std::fs::metadata(&absolute) {
            Ok(meta) => meta,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.saw(at, path.as_str(), None, None, None);
                return Ok(Content::Missing);
            }
            Err(error) => return Err(error),
        };
        if meta.is_dir() {
            let (tree, listing) = self.tree(&absolute, path.as_str())?;
            self.saw(at, path.as_str(), Some(Stamp::of(&meta)), None, listing);
            let hash = tree.digest();
            Ok(Content::Dir { tree, hash })
        } else {
            let hash = self.file(&absolute, path.as_str(), &meta)?;
            self.saw(at, path.as_str(), Some(Stamp::of(&meta)), Some(hash), None);
            Ok(Content::File {
                hash,
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            })
        }
    }

    /// Hashes again the small files that were too fresh to cache when they
    /// were hashed, so the ones that have settled since are cached: a run
    /// does this last, and the run after it need not read the outs it just
    /// wrote. A file still too fresh, large, or gone is left alone.
    /// Each file hashed again is a new look.
    pub fn settle(&self) {
        self.cache.take_racy().into_par_iter().for_each(|key| {
            let path = self.root.join(&key);
            let at = now_ns();
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
                && meta.len() < LARGE_FILE
                && let Ok(hash) = self.file(&path, &key, &meta)
            {
                self.saw(at, &key, Some(Stamp::of(&meta)), Some(hash), None);
            }
        });
    }

    /// The content hash of the file at `path` (absolute, inside the workspace).
    pub fn file_digest(&self, path: &Path) -> io::Result<Digest> {
        let meta = std::fs::metadata(path)?;
        self.file(path, &relative_string(path, self.root), &meta)
    }

    /// Hashes the workspace files matching a glob as one tree (a glob
    /// matching nothing is an empty tree, not an error).
    pub fn hash_glob(&self, pattern: &str, matcher: &GlobMatcher) -> io::Result<Content> {
        let at = self.witness.map_or(0, |_| now_ns());
        let mut dirs = Vec::new();
        let found = glob_files(self.root, pattern, matcher, self.witness.map(|_| &mut dirs))?;
        let (entries, stamps): (Vec<TreeEntry>, Vec<Stamp>) = self.hash_files(found, "")?.into_iter().unzip();
        if self.witness.is_some() {
            let files = entries.iter().map(|e| e.path().to_string()).zip(stamps);
            let listed = glob_listing_entries(self.root, files, &dirs);
            self.saw(at, pattern, None, None, Some(Listing::of(true, listed)));
        }
        let tree = Tree { entries };
        let hash = tree.digest();
        Ok(Content::Dir { tree, hash })
    }

    /// The tree under `dir`, and what it listed when witnessing.
    fn tree(&self, dir: &Path, key_prefix: &str) -> io::Result<(Tree, Option<Listing>)> {
        let mut files = Vec::new();
        let mut others = Vec::new();
        let mut dirs = Vec::new();
        list_tree(dir, "", &mut files, &mut others, self.witness.map(|_| &mut dirs))?;
        let (mut entries, stamps): (Vec<TreeEntry>, Vec<Stamp>) =
            self.hash_files(files, &format!("{key_prefix}/"))?.into_iter().unzip();
        let listing = self.witness.map(|_| {
            let files = entries.iter().map(|e| e.path().to_string()).zip(stamps);
            Listing::of(false, tree_listing_entries(files, dirs, &others))
        });
        entries.extend(others);
        entries.sort_by(|a, b| a.path().cmp(b.path()));
        Ok((Tree { entries }, listing))
    }

    /// Hashes files in parallel; `key_prefix` plus the entry path is the
    /// file's workspace-relative path (its stat-cache key).
    fn hash_files(&self, files: Vec<ListedFile>, key_prefix: &str) -> io::Result<Vec<(TreeEntry, Stamp)>> {
        files
            .into_par_iter()
            .map(|file| {
                let meta = file.metadata()?;
                let ListedFile { path, entry, .. } = file;
                let hash = self.file(&path, &format!("{key_prefix}{entry}"), &meta)?;
                let file = TreeEntry::File {
                    path: entry,
                    hash,
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                };
                Ok((file, Stamp::of(&meta)))
            })
            .collect()
    }

    fn file(&self, path: &Path, key: &str, meta: &std::fs::Metadata) -> io::Result<Digest> {
        let stamp = Stamp::of(meta);
        if let Some(digest) = self.cache.get(key, &stamp) {
            return Ok(digest);
        }
        let hashed_at = SystemTime::now();
        let digest = hash_file(path, meta.len())?;
        // The file may have changed while we read it; only a stable stamp is cached.
        if Stamp::of(&std::fs::metadata(path)?) == stamp {
            self.cache.insert(key, stamp, digest, hashed_at);
        }
        Ok(digest)
    }
}

/// BLAKE3 of a file's bytes, multi-threaded for large files.
pub fn hash_file(path: &Path, size: u64) -> io::Result<Digest> {
    if size >= LARGE_FILE {
        let mut hasher = blake3::Hasher::new();
        hasher.update_mmap_rayon(path)?;
        Ok(hasher.finalize().into())
    } else {
        Ok(Digest::of(&std::fs::read(path)?))
    }
}

/// Top-level workspace entries that are never workspace content.
pub fn is_ignored_root_entry(name: &std::ffi::OsStr) -> bool {
    name == crate::layout::Layout::STATE_DIR || name == ".git"
}

/// The workspace files a glob matches, sorted by path (each with its path
/// relative to `root` as its entry): the walk starts at the pattern's literal prefix
/// (`data/*.csv` reads `data/` only), never enters `.fabric` or `.git` at
/// the root, and does not descend into a build or cache directory (one
/// holding a `CACHEDIR.TAG`, like cargo's `target/`) unless the pattern
/// names it before its first wildcard.
/// With `dirs`, the directories walked (or the one that would have been)
/// are added to it.
pub fn glob_files(
    root: &Path,
    pattern: &str,
    matcher: &GlobMatcher,
    mut dirs: Option<&mut Vec<PathBuf>>,
) -> io::Result<Vec<ListedFile>> {
    let start = root.join(crate::paths::literal_prefix(pattern));
    if !start.is_dir() {
        if let Some(dirs) = dirs {
            dirs.push(start);
        }
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    walk_glob(root, &start, matcher, &mut found, &mut dirs)?;
    Ok(found)
}

/// Walks `dir` in name order for [`glob_files`] (symlinks not followed),
/// keeping each matching file's directory entry for the stat.
fn walk_glob(
    root: &Path,
    dir: &Path,
    matcher: &GlobMatcher,
    found: &mut Vec<ListedFile>,
    dirs: &mut Option<&mut Vec<PathBuf>>,
) -> io::Result<()> {
    if let Some(dirs) = dirs.as_deref_mut() {
        dirs.push(dir.to_path_buf());
    }
    let mut entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_cached_key(std::fs::DirEntry::file_name);
    for entry in entries {
        if dir == root && is_ignored_root_entry(&entry.file_name()) {
            continue;
        }
        let file_type = entry.file_type()?;
        let path = entry.path();
        if file_type.is_dir() {
            if is_cache_dir(&path) {
                // Kept among the walked directories: a removed tag shows as a
                // change of its directory.
                if let Some(dirs) = dirs.as_deref_mut() {
                    dirs.push(path);
                }
                continue;
            }
            walk_glob(root, &path, matcher, found, dirs)?;
        } else if file_type.is_file() {
            let relative = relative_string(&path, root);
            if matcher.is_match(&relative) {
                found.push(ListedFile {
                    path,
                    entry: relative,
                    dirent: Some(entry),
                });
            }
        }
    }
    Ok(())
}

/// Whether `dir` is tagged as a cache or build directory, as the Cache
/// Directory Tagging Specification says: a `CACHEDIR.TAG` file starting
/// with its signature (cargo tags `target/` so).
fn is_cache_dir(dir: &Path) -> bool {
    const SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";
    let mut start = [0u8; SIGNATURE.len()];
    std::fs::File::open(dir.join("CACHEDIR.TAG"))
        .and_then(|mut tag| io::Read::read_exact(&mut tag, &mut start))
        .is_ok_and(|()| start == SIGNATURE)
}

/// What a tree under `dir` lists now (see [`Listing`]), read the way the
/// hasher lists it, without reading any file.
pub fn tree_listing(dir: &Path) -> io::Result<Listing> {
    let (mut files, mut others, mut dirs) = (Vec::new(), Vec::new(), Vec::new());
    list_tree(dir, "", &mut files, &mut others, Some(&mut dirs))?;
    let files = files
        .into_par_iter()
        .map(|file| Ok((file.entry.clone(), Stamp::of(&file.metadata()?))))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Listing::of(
        false,
        tree_listing_entries(files.into_iter(), dirs, &others),
    ))
}

/// What the glob `pattern` lists now (see [`Listing`]), walked the way the
/// hasher walks it, without reading any file.
pub fn glob_listing(root: &Path, pattern: &str) -> io::Result<Listing> {
    let matcher = globset::Glob::new(pattern).map_err(io::Error::other)?.compile_matcher();
    let mut dirs = Vec::new();
    let files = glob_files(root, pattern, &matcher, Some(&mut dirs))?
        .into_par_iter()
        .map(|file| Ok((file.entry.clone(), Stamp::of(&file.metadata()?))))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Listing::of(true, glob_listing_entries(root, files.into_iter(), &dirs)))
}

/// A tree's listing entries: its files and subdirectories with their stamps,
/// its symlinks by name.
fn tree_listing_entries(
    files: impl Iterator<Item = (String, Stamp)>,
    dirs: Vec<(String, Stamp)>,
    others: &[TreeEntry],
) -> Vec<(String, Option<Stamp>)> {
    let symlinks = others.iter().filter_map(|entry| match entry {
        TreeEntry::Symlink { path, .. } => Some((path.clone(), None)),
        _ => None,
    });
    files
        .chain(dirs)
        .map(|(path, stamp)| (path, Some(stamp)))
        .chain(symlinks)
        .collect()
}

/// A glob's listing entries: the files it matched and the directories
/// walked, with their stamps.
fn glob_listing_entries(
    root: &Path,
    files: impl Iterator<Item = (String, Stamp)>,
    dirs: &[PathBuf],
) -> Vec<(String, Option<Stamp>)> {
    let dirs = dirs.iter().map(|dir| (relative_string(dir, root), Stamp::at(dir)));
    files.map(|(path, stamp)| (path, Some(stamp))).chain(dirs).collect()
}

fn relative_string(path: &Path, base: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned()
}

/// A regular file found by a listing.
pub struct ListedFile {
    /// Its path.
    pub path: PathBuf,
    /// The path relative to the listed directory (to the workspace, for a glob).
    pub entry: String,
    /// Its directory entry, when read from one: stat'ing through it is
    /// relative to the open directory (no path lookup), and it is done on
    /// the hashing threads.
    dirent: Option<std::fs::DirEntry>,
}

impl ListedFile {
    /// The file's metadata (it is a regular file, not a symlink), through
    /// its directory entry when there is one.
    fn metadata(&self) -> io::Result<std::fs::Metadata> {
        match &self.dirent {
            Some(dirent) => dirent.metadata(),
            None => std::fs::metadata(&self.path),
        }
    }
}

/// Lists `dir` recursively (`prefix` is its path in the tree): regular
/// files, symlinks by target, and empty directories.
/// With `dirs`, each subdirectory's path and stamp are added to it.
fn list_tree(
    dir: &Path,
    prefix: &str,
    files: &mut Vec<ListedFile>,
    others: &mut Vec<TreeEntry>,
    mut dirs: Option<&mut Vec<(String, Stamp)>>,
) -> io::Result<()> {
    let mut entries = std::fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    if entries.is_empty() && !prefix.is_empty() {
        others.push(TreeEntry::Empty {
            path: prefix.trim_end_matches('/').to_string(),
        });
    }
    entries.sort_by_cached_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let relative = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let file_type = entry.file_type()?;
        if file_type.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            others.push(TreeEntry::Symlink {
                path: relative,
                target: target.to_string_lossy().into_owned(),
            });
        } else if file_type.is_dir() {
            if let Some(dirs) = dirs.as_deref_mut() {
                dirs.push((relative.clone(), Stamp::of(&entry.metadata()?)));
            }
            list_tree(
                &entry.path(),
                &format!("{relative}/"),
                files,
                others,
                dirs.as_deref_mut(),
            )?;
        } else if file_type.is_file() {
            files.push(ListedFile {
                path: entry.path(),
                entry: relative,
                dirent: Some(entry),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_dir(root: &Path, name: &str) -> Content {
        let cache = StatCache::load(&root.join(".fabric/state"));
        Hasher::new(root, &cache).hash(&RelPath::new(name).unwrap()).unwrap()
    }

    #[test]
    fn files_too_fresh_to_cache_are_cached_once_settled() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("out.txt"), b"just written").unwrap();
        let cache = StatCache::load(&root.join("state"));
        let hasher = Hasher::new(root, &cache);
        let path = RelPath::new("out.txt").unwrap();
        let Content::File { hash, .. } = hasher.hash(&path).unwrap() else {
            panic!("a file")
        };
        let meta = std::fs::metadata(root.join("out.txt")).unwrap();
        let stamp = Stamp::of(&meta);
        assert_eq!(cache.get("out.txt", &stamp), None, "too fresh to cache when hashed");
        // Let the clock pass the racy window (a condition on time, not on another thread).
        let written = meta.modified().unwrap().max(
            std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos((meta.ctime() as u64) * 1_000_000_000 + meta.ctime_nsec() as u64),
        );
        while SystemTime::now() < written + crate::stat_cache::RACY_WINDOW {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        hasher.settle();
        assert_eq!(cache.get("out.txt", &stamp), Some(hash), "cached once settled");
        hasher.settle();
        assert!(cache.take_racy().is_empty(), "settling takes the list");
    }

    #[test]
    fn directory_hash_covers_names_content_mode_empty_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("d/sub")).unwrap();
        std::fs::write(root.join("d/a.txt"), b"a").unwrap();
        std::fs::write(root.join("d/sub/b.txt"), b"b").unwrap();
        let base = hash_dir(root, "d").digest();
        assert_eq!(hash_dir(root, "d").digest(), base, "hashing is deterministic");

        std::fs::write(root.join("d/a.txt"), b"A").unwrap();
        let edited = hash_dir(root, "d").digest();
        assert_ne!(edited, base);
        std::fs::write(root.join("d/a.txt"), b"a").unwrap();
        assert_eq!(hash_dir(root, "d").digest(), base, "reverting restores the hash");

        std::fs::set_permissions(root.join("d/a.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_ne!(hash_dir(root, "d").digest(), base, "executable bit counts");
        std::fs::set_permissions(root.join("d/a.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();

        std::fs::create_dir(root.join("d/empty")).unwrap();
        let with_empty = hash_dir(root, "d").digest();
        assert_ne!(with_empty, base, "empty directories count");
        std::fs::remove_dir(root.join("d/empty")).unwrap();

        std::os::unix::fs::symlink("a.txt", root.join("d/link")).unwrap();
        let Content::Dir { tree, .. } = hash_dir(root, "d") else {
            panic!("expected a directory")
        };
        assert!(tree.entries.contains(&TreeEntry::Symlink {
            path: "link".into(),
            target: "a.txt".into()
        }));
        assert_eq!(tree.files(), 2);
    }

    #[test]
    fn renaming_a_file_changes_the_tree_hash() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("d")).unwrap();
        std::fs::write(root.join("d/a"), b"x").unwrap();
        let before = hash_dir(root, "d").digest();
        std::fs::rename(root.join("d/a"), root.join("d/b")).unwrap();
        assert_ne!(hash_dir(root, "d").digest(), before);
    }

    #[test]
    fn large_files_hash_like_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(LARGE_FILE as usize + 12345)).map(|i| (i % 251) as u8).collect();
        let path = dir.path().join("big");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(hash_file(&path, bytes.len() as u64).unwrap(), Digest::of(&bytes));
    }

    #[test]
    fn a_glob_reads_only_below_its_literal_prefix_and_never_fabrics_state() {
        let dir = tempfile::tempdir().unwrap();
        for file in [
            "data/a.csv",
            "data/sub/b.csv",
            "other/c.csv",
            ".fabric/d.csv",
            "top.csv",
            "target/e.csv",
            "target/debug/f.csv",
            "notes/g.csv",
        ] {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        // `target/` is a tagged build directory; `notes/` has a tag without
        // the signature.
        let signature = "Signature: 8a477f597d28d172789f06886806bc55\n# a build directory\n";
        std::fs::write(dir.path().join("target/CACHEDIR.TAG"), signature).unwrap();
        std::fs::write(dir.path().join("notes/CACHEDIR.TAG"), "not a signature").unwrap();
        let found = |pattern: &str| -> Vec<String> {
            let matcher = globset::Glob::new(pattern).unwrap().compile_matcher();
            glob_files(dir.path(), pattern, &matcher, None)
                .unwrap()
                .into_iter()
                .map(|file| file.entry)
                .collect()
        };
        assert_eq!(found("data/*.csv"), ["data/a.csv", "data/sub/b.csv"]);
        assert_eq!(
            found("**/*.csv"),
            ["data/a.csv", "data/sub/b.csv", "notes/g.csv", "other/c.csv", "top.csv"]
        );
        // Named before the first wildcard, a build directory is walked.
        assert_eq!(found("target/**/*.csv"), ["target/debug/f.csv", "target/e.csv"]);
        assert_eq!(found("missing/*.csv"), Vec::<String>::new());
        assert_eq!(
            crate::paths::literal_prefix("data/raw/*.csv"),
            std::path::PathBuf::from("data/raw")
        );
        assert_eq!(crate::paths::literal_prefix("*.csv"), std::path::PathBuf::new());
    }
}
