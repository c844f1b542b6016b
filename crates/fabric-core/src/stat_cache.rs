//! The stat cache (`.fabric/state`): file identity and timestamps → content
//! hash, so unchanged files are not read again.
//!
//! An entry is trusted only when device, inode, size, mtime and ctime all
//! match. The racy-timestamp problem (a file rewritten within the timestamp
//! granularity right after it was hashed keeps its mtime) is avoided the way
//! git does it in spirit: a file whose mtime or ctime is within the racy
//! window of the moment it was hashed is not cached, so it is hashed again
//! next time. The window is the filesystem's timestamp granularity with a
//! margin: [`RACY_WINDOW`] (2 s: FAT, HFS+, ext3 keep whole seconds, which
//! shows as a zero sub-second part) unless the stamp has a sub-second part,
//! then [`FINE_RACY_WINDOW`] (20 ms: ext4, XFS, btrfs, tmpfs take timestamps
//! from the kernel's coarse clock, one tick of at most 10 ms). A rewrite after
//! the hash therefore always lands on a later timestamp. Without the fine
//! window, files written less than 2 s before a run (a fresh checkout, a data
//! generator) were hashed again by every run within those 2 s.
//!
//! The file is a small binary format (magic, then fixed-width records) read
//! and written whole; it is replaced atomically (not fsync'd: it is only an
//! accelerator) and only when it changed. Paths are kept as their BLAKE3,
//! never as text: a raw input's file name (which may name a person) does not
//! land in `.fabric/` through the cache.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::digest::Digest;

/// Files with whole-second timestamps modified this recently when hashed are
/// not cached.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

/// The same for files whose timestamps have a sub-second part.
pub const FINE_RACY_WINDOW: Duration = Duration::from_millis(20);

const MAGIC: &[u8; 12] = b"FABRICSTATE2";

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The stamp of what is at `path` now (symlinks followed); `None` when
    /// nothing is.
    pub fn at(path: &Path) -> Option<Stamp> {
        std::fs::metadata(path).ok().map(|meta| Stamp::of(&meta))
    }

    /// True when the file was modified too close to `at` (nanoseconds since
    /// the epoch) for a later rewrite to be sure to change the stamp.
    pub fn is_racy(&self, hashed_at_ns: i128) -> bool {
        const SECOND: i128 = 1_000_000_000;
        let whole_seconds = self.mtime_ns % SECOND == 0 || self.ctime_ns % SECOND == 0;
        let window = if whole_seconds { RACY_WINDOW } else { FINE_RACY_WINDOW };
        self.mtime_ns.max(self.ctime_ns) + window.as_nanos() as i128 > hashed_at_ns
    }
}

/// Now, in nanoseconds since the epoch (the unit of stamps and looks).
pub fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// One look at a workspace path (relative): its stamp (`None`: nothing
/// there) and, for a file whose bytes were hashed, their hash; for a
/// directory or glob dep, what it listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Look {
    /// The workspace-relative path (the pattern, for a glob).
    pub path: String,
    /// What was there.
    pub stamp: Option<Stamp>,
    /// The BLAKE3 of the file's bytes, when they were hashed.
    pub hash: Option<Digest>,
    /// What a directory or glob dep listed.
    pub listing: Option<Listing>,
}

/// What a directory tree or a glob listed, kept without naming its entries
/// (a raw file's name may name a person): the BLAKE3 of every entry's path
/// and stamp, and the newest modification among them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Listing {
    /// A glob's matches (and the directories walked) rather than a tree.
    pub glob: bool,
    /// The entries' paths and stamps, digested.
    pub digest: Digest,
    /// The entry modified last (by mtime or ctime).
    pub newest: Option<Stamp>,
}

impl Listing {
    /// The listing of `entries` (paths relative to the tree or workspace;
    /// `None`: a symlink, listed by name).
    pub fn of(glob: bool, mut entries: Vec<(String, Option<Stamp>)>) -> Listing {
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut key = crate::digest::KeyEncoder::new("fabric-listing-v1");
        let mut newest: Option<Stamp> = None;
        for (path, stamp) in &entries {
            key.text(b'p', path);
            if let Some(stamp) = stamp {
                let time = |s: &Stamp| s.mtime_ns.max(s.ctime_ns);
                if newest.is_none_or(|n| time(stamp) > time(&n)) {
                    newest = Some(*stamp);
                }
                for value in [stamp.dev, stamp.ino, stamp.size] {
                    key.bytes(b'n', &value.to_le_bytes());
                }
                for value in [stamp.mtime_ns, stamp.ctime_ns] {
                    key.bytes(b't', &value.to_le_bytes());
                }
            }
        }
        Listing {
            glob,
            digest: key.finish(),
            newest,
        }
    }
}

impl Look {
    /// A look at `path` (relative to `root`) now, without reading it.
    pub fn now(root: &Path, path: &str) -> Look {
        Look {
            path: path.to_string(),
            stamp: Stamp::at(&root.join(path)),
            hash: None,
            listing: None,
        }
    }
}

/// The cache, shared by hashing threads.
pub struct StatCache {
    path: PathBuf,
    /// BLAKE3 of the key → what the file was and hashed to.
    entries: RwLock<HashMap<Digest, (Stamp, Digest)>>,
    dirty: AtomicBool,
    /// Keys of files that were too fresh to cache when hashed.
    racy: Mutex<Vec<String>>,
}

impl StatCache {
    /// Loads the cache at `path`; a missing or unreadable cache is empty
    /// (it is only an accelerator).
    pub fn load(path: &Path) -> StatCache {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|bytes| decode(&bytes))
            .unwrap_or_default();
        StatCache {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
            dirty: AtomicBool::new(false),
            racy: Mutex::new(Vec::new()),
        }
    }

    /// The cached hash for `key` when its stamp still matches.
    pub fn get(&self, key: &str, stamp: &Stamp) -> Option<Digest> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&Digest::of(key.as_bytes()))
            .filter(|(cached, _)| cached == stamp)
            .map(|(_, digest)| *digest)
    }

    /// Records a hash computed at `hashed_at` (taken before reading the file),
    /// unless the file is too fresh to be trusted later.
    pub fn insert(&self, key: &str, stamp: Stamp, digest: Digest, hashed_at: SystemTime) {
        let hashed_at_ns = hashed_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i128);
        let key_text = key;
        let key = Digest::of(key.as_bytes());
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if stamp.is_racy(hashed_at_ns) {
            if entries.remove(&key).is_some() {
                self.dirty.store(true, Ordering::Relaxed);
            }
            drop(entries);
            self.racy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(key_text.to_string());
            return;
        }
        if entries.get(&key) != Some(&(stamp, digest)) {
            entries.insert(key, (stamp, digest));
            self.dirty.store(true, Ordering::Relaxed);
        }
    }

    /// The keys of the files found too fresh to cache since the last call.
    pub fn take_racy(&self) -> Vec<String> {
        std::mem::take(&mut *self.racy.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Writes the cache back if it changed.
    pub fn save(&self) -> io::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut bytes = Vec::with_capacity(MAGIC.len() + entries.len() * 100);
        bytes.extend_from_slice(MAGIC);
        for (key, (stamp, digest)) in entries.iter() {
            bytes.extend_from_slice(&key.0);
            for value in [stamp.dev, stamp.ino, stamp.size] {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            for value in [stamp.mtime_ns, stamp.ctime_ns] {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
            bytes.extend_from_slice(&digest.0);
        }
        crate::atomic::replace(&self.path, |file| file.write_all(&bytes))
    }
}

fn decode(bytes: &[u8]) -> Option<HashMap<Digest, (Stamp, Digest)>> {
    let mut rest = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut entries = HashMap::new();
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    while !rest.is_empty() {
        let key = Digest(take(&mut rest, 32)?.try_into().ok()?);
        let u = |rest: &mut &[u8]| Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?));
        let i = |rest: &mut &[u8]| Some(i128::from_le_bytes(take(rest, 16)?.try_into().ok()?));
        let stamp = Stamp {
            dev: u(&mut rest)?,
            ino: u(&mut rest)?,
            size: u(&mut rest)?,
            mtime_ns: i(&mut rest)?,
            ctime_ns: i(&mut rest)?,
        };
        let digest = Digest(take(&mut rest, 32)?.try_into().ok()?);
        entries.insert(key, (stamp, digest));
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_files_are_not_cached_and_old_ones_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let stamp = Stamp::of(&std::fs::metadata(&file).unwrap());
        let digest = Digest::of(b"x");
        let cache = StatCache::load(&dir.path().join("state"));
        cache.insert("f", stamp, digest, SystemTime::now());
        assert_eq!(cache.get("f", &stamp), None, "a file modified just now is racy");

        let later = SystemTime::now() + Duration::from_secs(10);
        cache.insert("f", stamp, digest, later);
        assert_eq!(cache.get("f", &stamp), Some(digest));
        let key = b"raw/jane-doe-macbook.jsonl";
        cache.insert("raw/jane-doe-macbook.jsonl", stamp, digest, later);
        cache.save().unwrap();
        let bytes = std::fs::read(dir.path().join("state")).unwrap();
        assert!(!bytes.windows(key.len()).any(|w| w == key), "no path is stored as text");
        let reloaded = StatCache::load(&dir.path().join("state"));
        assert_eq!(reloaded.get("f", &stamp), Some(digest));
        let mut changed = stamp;
        changed.size += 1;
        assert_eq!(reloaded.get("f", &changed), None);
    }

    #[test]
    fn the_racy_window_follows_the_timestamp_granularity() {
        let at = |seconds: i128, nanos: i128| seconds * 1_000_000_000 + nanos;
        let stamp = |mtime_ns, ctime_ns| Stamp {
            dev: 1,
            ino: 1,
            size: 1,
            mtime_ns,
            ctime_ns,
        };
        let fine = stamp(at(100, 123_456_789), at(100, 123_456_789));
        assert!(fine.is_racy(at(100, 140_000_000)), "17 ms later: racy");
        assert!(!fine.is_racy(at(100, 150_000_000)), "27 ms later: settled");
        let whole = stamp(at(100, 0), at(100, 0));
        assert!(whole.is_racy(at(101, 500_000_000)), "whole seconds: 1.5 s is racy");
        assert!(!whole.is_racy(at(102, 1)), "whole seconds: past 2 s");
        let mixed = stamp(at(100, 123_456_789), at(100, 0));
        assert!(
            mixed.is_racy(at(101, 0)),
            "either stamp in whole seconds takes the long window"
        );
        let changed_later = stamp(at(100, 123_456_789), at(105, 7));
        assert!(
            changed_later.is_racy(at(105, 10_000_000)),
            "the newer of mtime and ctime counts"
        );
    }

    #[test]
    fn a_corrupt_state_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state"), b"FABRICSTATE2\x05\x00").unwrap();
        let cache = StatCache::load(&dir.path().join("state"));
        assert!(cache.entries.read().unwrap().is_empty());
    }
}
