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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diagnostic::{Diagnostic, Location};
use crate::digest::Digest;
use crate::fingerprint::Inputs;
use crate::hash::Content;

/// The lock format version.
pub const VERSION: u32 = 1;

/// The whole lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Format version.
    pub version: u32,
    /// Stage name → entry.
    #[serde(default)]
    pub stage: BTreeMap<String, LockEntry>,
}

impl Default for Lock {
    fn default() -> Lock {
        Lock {
            version: VERSION,
            stage: BTreeMap::new(),
        }
    }
}

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
    pub outs: BTreeMap<String, OutRecord>,
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
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Lock::default()),
            Err(error) => return Err(Diagnostic::new(format!("cannot read {}: {error}", path.display()))),
        };
        let file = path.file_name().map(Into::into).unwrap_or_default();
        let lock: Lock = toml::from_str(&text).map_err(|error| {
            Diagnostic::new(format!("Fabric.lock is damaged: {}", error.message().trim()))
                .at(
                    Location {
                        file,
                        source: text.as_str().into(),
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
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        crate::atomic::write(path, |file| {
            file.write_all(b"# Written by fabric. Commit it; do not edit by hand.\n")?;
            file.write_all(text.as_bytes())
        })
    }
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
    pub fn load(lock_path: &Path, journal_path: &Path) -> Result<Lock, Diagnostic> {
        let mut lock = Lock::read(lock_path)?;
        let Ok(text) = std::fs::read_to_string(journal_path) else {
            return Ok(lock);
        };
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            match serde_json::from_str::<JournalRecord>(line) {
                Ok(JournalRecord::Set { stage, entry }) => {
                    lock.stage.insert(stage, *entry);
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

    /// Writes `Fabric.lock` atomically, then drops the journal it contains.
    pub fn compact(&self, lock_path: &Path, journal_path: &Path) -> std::io::Result<()> {
        self.write(lock_path)?;
        match std::fs::remove_file(journal_path) {
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
            params: BTreeMap::from([("seed".into(), "1".into())]),
            deps: BTreeMap::from([("src".into(), Digest::of(b"s").to_string())]),
            env: BTreeMap::new(),
            outs: vec!["out".into()],
            platform: "linux-x86_64".into(),
            facts: BTreeMap::new(),
        };
        let mut lock = Lock::default();
        lock.stage.insert(
            "build".into(),
            LockEntry {
                fingerprint: inputs.fingerprint(),
                inputs,
                outs: BTreeMap::from([(
                    "out".into(),
                    OutRecord {
                        kind: OutKind::File,
                        hash: Digest::of(b"o"),
                        size: 1,
                        files: 1,
                        executable: false,
                    },
                )]),
            },
        );
        lock.write(&path).unwrap();
        assert_eq!(Lock::read(&path).unwrap(), lock);

        // A journal applies on top; a torn last line is ignored.
        let journal = dir.path().join("lock.journal");
        Lock::journal(&journal, "build", None).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(b"{\"op\":\"se")
            .unwrap();
        assert!(Lock::load(&path, &journal).unwrap().stage.is_empty());
        lock.compact(&path, &journal).unwrap();
        assert!(!journal.exists());
        assert_eq!(Lock::load(&path, &journal).unwrap(), lock);

        std::fs::write(&path, "version = 1\n<<<<<<< HEAD\n").unwrap();
        let error = Lock::read(&path).unwrap_err();
        assert_eq!(error.location.unwrap().line_column().0, 2);
    }
}
