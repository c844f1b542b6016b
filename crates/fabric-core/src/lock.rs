//! `Fabric.lock`: what each stage last succeeded with.
//!
//! TOML with one `[stage.NAME]` table per stage, keys in a fixed order and no
//! timestamps, so diffs are small and reviewable.
//!
//! During a run every change is appended to a journal
//! (`.fabric/lock.journal`, one JSON line per change: an entry set
//! after a stage succeeded, or removed before it reruns) and `Fabric.lock` is
//! rewritten atomically once, when the run ends. Readers apply the journal on
//! top of the file ([`Lock::load`]), so an interrupted run resumes where it
//! stopped and never leaves a stage looking up to date; the journal makes
//! recording a stage O(1) instead of rewriting the whole lock each time.
//!
//! Parsing TOML is the slowest part of a no-op run over a large lock, so the
//! last `Fabric.lock` read or written is also kept parsed, as JSON, in
//! `.fabric/lock.parsed`, under the BLAKE3 of the lock's bytes and the fabric
//! binary ([`KeyEncoder::binary`]): it is used only when both match, so it can never disagree with
//! the file (a stale or damaged copy is ignored and rewritten).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use litemap::LiteMap;
use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Location};
use crate::digest::{Digest, KeyEncoder};
use crate::fingerprint::Inputs;
use crate::hash::Content;

/// The lock format version.
pub const VERSION: u32 = 1;

/// What `.fabric/lock.parsed` starts with.
const PARSED_MAGIC: &[u8] = b"FABRICLOCKPARSED1\n";

/// Where a workspace keeps its lock.
#[derive(Debug, Clone)]
pub struct LockFiles {
    /// `Fabric.lock`, the committed file.
    pub lock: PathBuf,
    /// `.fabric/lock.journal`, the changes of a run in progress.
    pub journal: PathBuf,
    /// `.fabric/lock.parsed`, the last lock read or written, parsed.
    pub parsed: PathBuf,
}

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version.
    pub version: u32,
    /// Stage name → entry.
    #[serde(default)]
    pub stage: BTreeMap<String, Arc<LockEntry>>,
}

impl Default for Lock {
    fn default() -> Lock {
        Lock {
            version: VERSION,
            stage: BTreeMap::new(),
        }
    }
}

/// Out path → what it held (a sorted small map: a stage has few outs).
pub type OutRecords = LiteMap<String, OutRecord>;

/// One stage's last successful run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockEntry {
    /// The stage fingerprint.
    pub fingerprint: Digest,
    /// The inputs it was computed from.
    #[serde(flatten)]
    pub inputs: Inputs,
    /// Out path → what it held.
    #[serde(default, rename = "out")]
    pub outs: OutRecords,
}

/// Whether an out is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutKind {
    /// A regular file.
    File,
    /// A directory (its hash is the tree hash).
    Dir,
}

/// What an out held after its stage succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutRecord {
    /// File or directory.
    pub kind: OutKind,
    /// Content hash (tree hash for directories).
    pub hash: Digest,
    /// Bytes.
    pub size: u64,
    /// Number of files (1 for a file).
    pub files: u64,
    /// The executable bit, for files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
}

impl OutRecord {
    /// The record of hashed content; `None` when the out is missing.
    pub fn of(content: &Content) -> Option<OutRecord> {
        match content {
            Content::Missing => None,
            Content::File { hash, size, executable } => Some(OutRecord {
                kind: OutKind::File,
                hash: *hash,
                size: *size,
                files: 1,
                executable: *executable,
            }),
            Content::Dir { tree, hash } => Some(OutRecord {
                kind: OutKind::Dir,
                hash: *hash,
                size: tree.size(),
                files: tree.files(),
                executable: false,
            }),
        }
    }
}

impl Lock {
    /// Reads the lock; a missing file is an empty lock, a damaged one is a
    /// diagnostic pointing at the damage.
    pub fn read(path: &Path) -> Result<Lock, Diagnostic> {
        match read_text(path)? {
            Some(text) => Lock::parse(path, &text),
            None => Ok(Lock::default()),
        }
    }

    /// Parses the text of the lock at `path` (or of a lock `path` names, e.g.
    /// one committed at a git revision).
    pub fn parse(path: &Path, text: &str) -> Result<Lock, Diagnostic> {
        let file = path.file_name().map(Into::into).unwrap_or_default();
        let lock: Lock = toml::from_str(text).map_err(|error| {
            Diagnostic::new(format!("Fabric.lock is damaged: {}", error.message().trim()))
                .at(
                    Location {
                        file,
                        source: text.into(),
                        span: error.span().unwrap_or(0..0),
                    },
                    "here",
                )
                .hint("resolve merge conflicts, or delete Fabric.lock and run `fabric run` to rebuild it")
        })?;
        if lock.version != VERSION {
            return Err(Diagnostic::new(format!(
                "Fabric.lock has format version {}, this fabric reads version {VERSION}",
                lock.version
            ))
            .hint("use the fabric version that wrote it, or delete Fabric.lock and rerun"));
        }
        Ok(lock)
    }

    /// Writes the lock atomically.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = self.to_text()?;
        crate::atomic::write(path, |file| file.write_all(text.as_bytes()))
    }

    /// The text of `Fabric.lock`: the text TOML gives the whole lock, built
    /// one stage at a time (the serializer joins a document's tables in time
    /// quadratic in their number: 4.5 of the 6 s a one-change rerun of 20,000
    /// stages took).
    fn to_text(&self) -> std::io::Result<String> {
        /// One stage of the lock, as the whole lock serializes it.
        #[derive(Serialize)]
        struct Stage<'a> {
            stage: BTreeMap<&'a str, &'a LockEntry>,
        }
        let mut text = format!(
            "# Written by fabric. Commit it; do not edit by hand.\nversion = {}\n",
            self.version
        );
        for (name, entry) in &self.stage {
            let one = Stage {
                stage: BTreeMap::from([(name.as_str(), entry.as_ref())]),
            };
            text.push('\n');
            text.push_str(&toml::to_string(&one).map_err(std::io::Error::other)?);
        }
        Ok(text)
    }

    /// Reads `Fabric.lock` through its parsed copy.
    /// The lock's text is only streamed through BLAKE3 to find its parsed
    /// copy; it is read whole when it has to be parsed.
    fn read_parsed(files: &LockFiles) -> Result<Lock, Diagnostic> {
        let streamed = match parsed_key_of_file(&files.lock) {
            Ok(key) => Some(key),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(_) => None, // reading it whole reports the problem
        };
        if let Some(lock) = streamed.and_then(|key| {
            let bytes = std::fs::read(&files.parsed).ok()?;
            decode_parsed(&bytes, &key)
        }) {
            return Ok(lock);
        }
        let Some(text) = read_text(&files.lock)? else {
            return Ok(Lock::default());
        };
        let key = parsed_key(&text);
        let lock = Lock::parse(&files.lock, &text)?;
        // Only an accelerator: failing to keep it costs the next run a parse.
        let _ = lock.write_parsed(&files.parsed, &key);
        Ok(lock)
    }

    /// Keeps this lock, parsed, under `key`.
    fn write_parsed(&self, path: &Path, key: &Digest) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        crate::atomic::replace(path, |file| {
            file.write_all(PARSED_MAGIC)?;
            file.write_all(&key.0)?;
            file.write_all(&json)
        })
    }
}

/// The text of a file; `None` when it does not exist.
fn read_text(path: &Path) -> Result<Option<String>, Diagnostic> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Diagnostic::new(format!("cannot read {}: {error}", path.display()))),
    }
}

/// What a parsed copy of the lock text `text` is kept under.
fn parsed_key(text: &str) -> Digest {
    KeyEncoder::new("fabric-lock-parsed").binary().text(b'l', text).finish()
}

/// [`parsed_key`] of the lock file's text, streamed from the file.
fn parsed_key_of_file(path: &Path) -> std::io::Result<Digest> {
    Ok(KeyEncoder::new("fabric-lock-parsed")
        .binary()
        .file(b'l', path)?
        .finish())
}

/// The lock in a parsed copy, when the copy is intact and kept under `key`.
fn decode_parsed(bytes: &[u8], key: &Digest) -> Option<Lock> {
    let rest = bytes.strip_prefix(PARSED_MAGIC)?;
    let (stored, json) = rest.split_at_checked(key.0.len())?;
    (stored == key.0).then(|| serde_json::from_slice(json).ok())?
}

/// Three-way merge, stage by stage: a stage changed on one side takes that
/// side; changed identically on both, either; changed differently on both, it
/// is dropped (it will simply run or be restored again) and named as a
/// conflict.
pub fn merge(base: &Lock, ours: &Lock, theirs: &Lock) -> (Lock, Vec<String>) {
    let mut merged = Lock::default();
    let mut conflicts = Vec::new();
    let names: std::collections::BTreeSet<&String> = base
        .stage
        .keys()
        .chain(ours.stage.keys())
        .chain(theirs.stage.keys())
        .collect();
    for name in names {
        let (b, o, t) = (base.stage.get(name), ours.stage.get(name), theirs.stage.get(name));
        let pick = if o == t {
            o
        } else if o == b {
            t
        } else if t == b {
            o
        } else {
            conflicts.push(name.clone());
            None
        };
        if let Some(entry) = pick {
            merged.stage.insert(name.clone(), entry.clone());
        }
    }
    (merged, conflicts)
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum JournalRecord {
    /// A stage succeeded with this entry.
    Set { stage: String, entry: Box<LockEntry> },
    /// A stage's entry was cleared (it is about to rerun).
    Remove { stage: String },
}

impl Lock {
    /// `Fabric.lock` with the journal of an unfinished run applied; a torn
    /// last journal line (a crash mid-append) is ignored.
    pub fn load(files: &LockFiles) -> Result<Lock, Diagnostic> {
        let mut lock = Lock::read_parsed(files)?;
        let Ok(text) = std::fs::read_to_string(&files.journal) else {
            return Ok(lock);
        };
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            match serde_json::from_str::<JournalRecord>(line) {
                Ok(JournalRecord::Set { stage, entry }) => {
                    lock.stage.insert(stage, Arc::new(*entry));
                }
                Ok(JournalRecord::Remove { stage }) => {
                    lock.stage.remove(&stage);
                }
                Err(_) => break,
            }
        }
        Ok(lock)
    }

    /// Appends one change to the journal. Not fsync'd: a process crash keeps
    /// it (the page cache survives), and one lost to a power failure only
    /// means the stage runs again.
    pub fn journal(journal_path: &Path, stage: &str, entry: Option<&LockEntry>) -> std::io::Result<()> {
        let record = match entry {
            Some(entry) => JournalRecord::Set {
                stage: stage.to_string(),
                entry: Box::new(entry.clone()),
            },
            None => JournalRecord::Remove {
                stage: stage.to_string(),
            },
        };
        let line = serde_json::to_string(&record).map_err(std::io::Error::other)? + "\n";
        if let Some(dir) = journal_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(journal_path)?;
        file.write_all(line.as_bytes())
    }

    /// Writes `Fabric.lock` atomically (and its parsed copy), then drops
    /// the journal it contains.
    pub fn compact(&self, files: &LockFiles) -> std::io::Result<()> {
        let text = self.to_text()?;
        crate::atomic::write(&files.lock, |file| file.write_all(text.as_bytes()))?;
        let _ = self.write_parsed(&files.parsed, &parsed_key(&text));
        match std::fs::remove_file(&files.journal) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fingerprint::{ActionKey, Inputs};

    #[test]
    fn round_trips_and_reports_damage_with_a_location() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Fabric.lock");
        let inputs = Inputs {
            action: ActionKey::Cmd {
                cmd: "make".into(),
                wdir: String::new(),
            },
            with: String::new(),
            params: LiteMap::from_iter([("seed".into(), "1".into())]),
            deps: LiteMap::from_iter([("src".into(), Digest::of(b"s").to_string())]),
            env: LiteMap::new(),
            outs: vec!["out".into()],
            platform: "linux-x86_64".into(),
            facts: LiteMap::new(),
        };
        let mut lock = Lock::default();
        lock.stage.insert(
            "build".into(),
            Arc::new(LockEntry {
                fingerprint: inputs.fingerprint(),
                inputs,
                outs: LiteMap::from_iter([(
                    "out".into(),
                    OutRecord {
                        kind: OutKind::File,
                        hash: Digest::of(b"o"),
                        size: 1,
                        files: 1,
                        executable: false,
                    },
                )]),
            }),
        );
        let mut other = (*lock.stage["build"]).clone();
        other.inputs.outs = vec!["out dir/\"quoted\".txt".into(), "b".into()];
        other.inputs.env = LiteMap::from_iter([("HOME".into(), "unset".into())]);
        other.outs = LiteMap::new();
        lock.stage.insert("a-first".into(), Arc::new(other.clone()));
        lock.stage.insert("z_last".into(), Arc::new(other));
        // Built a stage at a time, the text is what TOML makes of the whole.
        let whole = toml::to_string(&lock).unwrap();
        assert_eq!(
            lock.to_text().unwrap(),
            format!("# Written by fabric. Commit it; do not edit by hand.\n{whole}")
        );
        lock.stage.remove("a-first");
        lock.stage.remove("z_last");
        lock.write(&path).unwrap();
        assert_eq!(Lock::read(&path).unwrap(), lock);

        // A journal applies on top; a torn last line is ignored.
        let files = LockFiles {
            lock: path.clone(),
            journal: dir.path().join("lock.journal"),
            parsed: dir.path().join("lock.parsed"),
        };
        Lock::journal(&files.journal, "build", None).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&files.journal)
            .unwrap()
            .write_all(b"{\"op\":\"se")
            .unwrap();
        assert!(Lock::load(&files).unwrap().stage.is_empty());
        lock.compact(&files).unwrap();
        assert!(!files.journal.exists());
        assert_eq!(Lock::load(&files).unwrap(), lock);

        std::fs::write(&path, "version = 1\n<<<<<<< HEAD\n").unwrap();
        let error = Lock::read(&path).unwrap_err();
        assert_eq!(error.location.unwrap().line_column().0, 2);
        let error = Lock::load(&files).unwrap_err();
        assert!(
            error.to_string().contains("damaged"),
            "a parsed copy never hides a damaged lock: {error}"
        );
    }

    #[test]
    fn the_parsed_copy_follows_the_lock_text() {
        let dir = tempfile::tempdir().unwrap();
        let files = LockFiles {
            lock: dir.path().join("Fabric.lock"),
            journal: dir.path().join("lock.journal"),
            parsed: dir.path().join("lock.parsed"),
        };
        let entry = |cmd: &str| {
            let inputs = Inputs {
                action: ActionKey::Cmd {
                    cmd: cmd.into(),
                    wdir: String::new(),
                },
                with: String::new(),
                params: LiteMap::new(),
                deps: LiteMap::new(),
                env: LiteMap::new(),
                outs: Vec::new(),
                platform: "linux-x86_64".into(),
                facts: LiteMap::new(),
            };
            LockEntry {
                fingerprint: inputs.fingerprint(),
                inputs,
                outs: LiteMap::new(),
            }
        };
        let mut lock = Lock::default();
        lock.stage.insert("a".into(), Arc::new(entry("one")));
        lock.write(&files.lock).unwrap();
        assert_eq!(Lock::load(&files).unwrap(), lock, "first read: parsed from TOML");
        assert!(files.parsed.exists(), "the first read keeps a parsed copy");
        assert_eq!(Lock::load(&files).unwrap(), lock, "second read: from the parsed copy");

        // The copy is found by the file's streamed key: a copy kept under the
        // key of the text (here holding another lock, to tell them apart) is read.
        let text = std::fs::read_to_string(&files.lock).unwrap();
        let mut marked = Lock::default();
        marked.stage.insert("marked".into(), Arc::new(entry("marked")));
        marked.write_parsed(&files.parsed, &parsed_key(&text)).unwrap();
        assert_eq!(Lock::load(&files).unwrap(), marked);

        // Edited by hand (or by git): the copy no longer matches and is not used.
        let text = std::fs::read_to_string(&files.lock).unwrap().replace("one", "two");
        std::fs::write(&files.lock, text).unwrap();
        let mut edited = Lock::default();
        let mut two = entry("two");
        two.fingerprint = lock.stage["a"].fingerprint;
        edited.stage.insert("a".into(), Arc::new(two));
        assert_eq!(Lock::load(&files).unwrap(), edited);

        // A damaged copy is ignored.
        std::fs::write(&files.parsed, b"FABRICLOCKPARSED1\ngarbage").unwrap();
        assert_eq!(Lock::load(&files).unwrap(), edited);
    }
}
