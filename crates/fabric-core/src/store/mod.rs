//! The content-addressed store (`.fabric/store` by default).
//!
//! - `objects/ab/cdef…`: file contents by BLAKE3 hash;
//! - `trees/<hash>.json`: directory manifests ([`Tree`]) by tree hash;
//! - `runs/<fingerprint>.json`: the run cache, fingerprint → out records;
//! - `incoming/`: content from a second tier while it is checked;
//! - `far-damaged/<hash>`: objects a second tier sent damaged, to be sent
//!   again by the next push ([`TieredStorage`]).
//!
//! The store is split by what a second, shared tier can carry:
//! [`ObjectStore`] (objects and trees, with a batched "which are missing")
//! and [`RunCache`]; [`LocalStorage`] implements both in a directory and
//! alone can be administered ([`collect_garbage`]); [`TieredStorage`]
//! puts it in front of a second tier. [`Store`] adds the
//! operations the runner needs: save outs after a stage, look up a run,
//! restore outs — verifying every restored byte against its hash, so a
//! corrupted object is detected and never restored.
//!
//! Restoring copies (`std::fs::copy`, which uses `copy_file_range` and so
//! reflinks on file systems that support it); the workspace never shares
//! inodes with the store, so editing an out cannot damage the cache.
//!
//! Store writes are renamed into place but not fsync'd: every restore
//! verifies content against its hash and an unreadable record is a cache
//! miss, so what a power loss could damage is detected and recomputed, never
//! used. (The lock, releases and ingested snapshots are fsync'd.)

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::hash::{Content, Tree, TreeEntry, hash_file};
use crate::lock::{OutKind, OutRecord};
use crate::paths::RelPath;

pub mod tiered;

pub use tiered::{Moved, Reach, Tier, TieredStorage};

/// The kinds of small records kept beside objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecordKind {
    /// Directory manifests.
    Tree,
    /// Run-cache entries.
    Run,
}

impl RecordKind {
    fn dir(self) -> &'static str {
        match self {
            RecordKind::Tree => "trees",
            RecordKind::Run => "runs",
        }
    }
}

/// Where object `hash` is kept, relative to a store's root, in every tier:
/// `objects/ab/cdef…`.
pub fn object_key(hash: &Digest) -> String {
    let hex = hash.to_string();
    format!("objects/{}/{}", &hex[..2], &hex[2..])
}

/// The hash of the object kept as `objects/<dir>/<name>` ([`object_key`]'s
/// inverse), if that is what the names are.
pub fn object_hash(dir: &str, name: &str) -> Option<Digest> {
    (dir.len() == 2).then(|| format!("{dir}{name}").parse().ok()).flatten()
}

/// Where a record is kept, relative to a store's root, in every tier.
fn record_key(kind: RecordKind, key: &Digest) -> String {
    format!("{}/{key}.json", kind.dir())
}

/// Where directory manifest `hash` is kept in every tier.
pub fn tree_key(hash: &Digest) -> String {
    record_key(RecordKind::Tree, hash)
}

/// Where the run record of `fingerprint` is kept in every tier.
pub fn run_key(fingerprint: &Digest) -> String {
    record_key(RecordKind::Run, fingerprint)
}

/// Content-addressed objects and directory manifests: what a second,
/// shared tier can hold as well as a local directory.
pub trait ObjectStore: Send + Sync {
    /// Which of `hashes` are not held: one question for all of them (one
    /// listing or a bounded number of requests on a remote, not one each).
    fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>>;
    /// Which of these objects (hash → size) are not held, or held with
    /// another size: what a push must send (again). A store that cannot
    /// tell sizes answers as [`ObjectStore::missing`].
    fn missing_or_wrong_size(&self, objects: &std::collections::BTreeMap<Digest, u64>) -> io::Result<BTreeSet<Digest>> {
        self.missing(&objects.keys().copied().collect())
    }
    /// Copies the file at `source` in as object `hash` (idempotent).
    fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()>;
    /// Copies the file at `source` in as object `hash`, over a copy already
    /// held (one found damaged). A store whose writes always replace
    /// answers as [`ObjectStore::put_object`].
    fn replace_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        self.put_object(hash, source)
    }
    /// Copies object `hash` to `destination`.
    fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()>;
    /// Drops a copy of object `hash` found damaged.
    fn discard_object(&self, hash: &Digest) -> io::Result<()>;
    /// Brings these objects near, many at a time, before they are read one
    /// by one (a tiered store pulls what its local tier lacks; a store of
    /// one tier has nothing to do). What cannot be brought is left absent.
    fn fetch(&self, _hashes: &BTreeSet<Digest>) -> io::Result<()> {
        Ok(())
    }
    /// Stores a directory manifest under its tree hash (idempotent).
    fn put_tree(&self, hash: &Digest, bytes: &[u8]) -> io::Result<()>;
    /// Reads a directory manifest.
    fn get_tree(&self, hash: &Digest) -> io::Result<Option<Vec<u8>>>;
}

/// The run cache: which outs a fingerprint produced.
pub trait RunCache: Send + Sync {
    /// Records the outs of `fingerprint` (replacing an older record).
    fn put_run(&self, fingerprint: &Digest, bytes: &[u8]) -> io::Result<()>;
    /// The record of `fingerprint`.
    fn get_run(&self, fingerprint: &Digest) -> io::Result<Option<Vec<u8>>>;
}

/// A store in a local directory. Besides the [`ObjectStore`] and
/// [`RunCache`] every tier offers, it lists and deletes what it holds:
/// administration (`gc`, [`collect_garbage`]) is possible only on a store
/// the workspace owns, never on a shared tier.
pub struct LocalStorage {
    dir: PathBuf,
}

impl LocalStorage {
    /// A store rooted at `dir` (created on first write).
    pub fn new(dir: &Path) -> LocalStorage {
        LocalStorage { dir: dir.to_path_buf() }
    }

    /// The file holding object `hash` (present or not).
    pub fn object_file(&self, hash: &Digest) -> PathBuf {
        self.dir.join(object_key(hash))
    }

    fn record_path(&self, kind: RecordKind, key: &Digest) -> PathBuf {
        self.dir.join(record_key(kind, key))
    }

    fn put_record(&self, kind: RecordKind, key: &Digest, bytes: &[u8]) -> io::Result<()> {
        let path = self.record_path(kind, key);
        let parent = path.parent().expect("record paths have a parent");
        std::fs::create_dir_all(parent)?;
        let mut temp = tempfile::Builder::new().prefix(".incoming-").tempfile_in(parent)?;
        io::Write::write_all(&mut temp, bytes)?;
        temp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    fn get_record(&self, kind: RecordKind, key: &Digest) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.record_path(kind, key)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Where content on its way in is written first (created if needed).
    fn incoming_dir(&self) -> io::Result<PathBuf> {
        let dir = self.dir.join("incoming");
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Every object hash.
    fn list_objects(&self) -> io::Result<Vec<Digest>> {
        let mut found = Vec::new();
        let objects = self.dir.join("objects");
        if !objects.is_dir() {
            return Ok(found);
        }
        for entry in walkdir::WalkDir::new(&objects).min_depth(2).max_depth(2) {
            let entry = entry.map_err(io::Error::other)?;
            let dir = entry.path().parent().and_then(|p| p.file_name()).unwrap_or_default();
            if let Some(hash) = object_hash(&dir.to_string_lossy(), &entry.file_name().to_string_lossy()) {
                found.push(hash);
            }
        }
        Ok(found)
    }

    /// Every record key of a kind, with its last-write time.
    fn list_records(&self, kind: RecordKind) -> io::Result<Vec<(Digest, SystemTime)>> {
        let dir = self.dir.join(kind.dir());
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(hash) = name.strip_suffix(".json").and_then(|h| h.parse().ok()) {
                found.push((hash, entry.metadata()?.modified()?));
            }
        }
        Ok(found)
    }
}

impl ObjectStore for LocalStorage {
    fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
        Ok(hashes
            .iter()
            .filter(|hash| !self.object_file(hash).is_file())
            .copied()
            .collect())
    }

    fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        if self.object_file(hash).is_file() {
            return Ok(());
        }
        self.replace_object(hash, source)
    }

    fn replace_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        let target = self.object_file(hash);
        let parent = target.parent().expect("object paths have a parent");
        std::fs::create_dir_all(parent)?;
        let temp = tempfile::Builder::new().prefix(".incoming-").tempfile_in(parent)?;
        std::fs::copy(source, temp.path())?;
        temp.persist(&target).map_err(|e| e.error)?;
        Ok(())
    }

    fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()> {
        std::fs::copy(self.object_file(hash), destination).map(|_| ())
    }

    fn discard_object(&self, hash: &Digest) -> io::Result<()> {
        std::fs::remove_file(self.object_file(hash))
    }

    fn put_tree(&self, hash: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.put_record(RecordKind::Tree, hash, bytes)
    }

    fn get_tree(&self, hash: &Digest) -> io::Result<Option<Vec<u8>>> {
        self.get_record(RecordKind::Tree, hash)
    }
}

impl RunCache for LocalStorage {
    fn put_run(&self, fingerprint: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.put_record(RecordKind::Run, fingerprint, bytes)
    }

    fn get_run(&self, fingerprint: &Digest) -> io::Result<Option<Vec<u8>>> {
        self.get_record(RecordKind::Run, fingerprint)
    }
}

/// A run-cache entry: the outs a fingerprint produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Out path → record.
    pub outs: crate::lock::OutRecords,
}

impl RunRecord {
    /// The stored form of a record of `outs`.
    pub fn encode(outs: &crate::lock::OutRecords) -> Vec<u8> {
        serde_json::to_vec_pretty(&RunRecord { outs: outs.clone() }).expect("run records serialize")
    }
}

/// Why outs could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Something the record needs is not in the store.
    #[error("`{0}` is not in the store")]
    Absent(String),
    /// Stored content does not match its hash (the bad object is removed).
    #[error("store object for `{path}` is corrupt (expected {expected}, found {found}); it was removed")]
    Corrupt {
        path: String,
        expected: Digest,
        found: Digest,
    },
    /// A directory manifest names a path outside the out (or below one
    /// of its symlinks); nothing of it is written.
    #[error("the stored listing of `{path}` names `{entry}`, which would be written outside it; not restored")]
    Unsafe { path: String, entry: String },
    /// The file system failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The store operations the runner uses, over an object store and a run
/// cache (a local directory now; a tier in front of a shared one later).
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    runs: Arc<dyn RunCache>,
}

impl Store {
    /// A store in the local directory `dir`.
    pub fn local(dir: &Path) -> Store {
        let local = Arc::new(LocalStorage::new(dir));
        Store {
            objects: local.clone(),
            runs: local,
        }
    }

    /// The local directory first, then a second tier ([`tiered`]).
    pub fn tiered(tiers: Arc<TieredStorage>) -> Store {
        Store {
            objects: tiers.clone(),
            runs: tiers,
        }
    }

    /// Saves an out's content (objects and tree) and returns its record.
    pub fn save(&self, root: &Path, path: &RelPath, content: &Content) -> io::Result<Option<OutRecord>> {
        let absolute = path.under(root);
        match content {
            Content::Missing => {}
            Content::File { hash, .. } => self.objects.put_object(hash, &absolute)?,
            Content::Dir { tree, hash } => {
                for entry in &tree.entries {
                    if let TreeEntry::File { path, hash, .. } = entry {
                        self.objects.put_object(hash, &absolute.join(path))?;
                    }
                }
                let bytes = serde_json::to_vec(tree).map_err(io::Error::other)?;
                self.objects.put_tree(hash, &bytes)?;
            }
        }
        Ok(OutRecord::of(content))
    }

    /// Records that `fingerprint` produced `outs`.
    pub fn record_run(&self, fingerprint: &Digest, outs: &crate::lock::OutRecords) -> io::Result<()> {
        self.runs.put_run(fingerprint, &RunRecord::encode(outs))
    }

    /// The run-cache entry for `fingerprint`, if every object it needs is present.
    pub fn lookup_run(&self, fingerprint: &Digest) -> Option<RunRecord> {
        let bytes = self.runs.get_run(fingerprint).ok()??;
        let record: RunRecord = serde_json::from_slice(&bytes).ok()?;
        self.holds(record.outs.values()).then_some(record)
    }

    /// True when the store holds every file of these outs (asked in one
    /// batch, whatever their number).
    pub fn holds<'a>(&self, outs: impl IntoIterator<Item = &'a OutRecord>) -> bool {
        let mut files = BTreeSet::new();
        for out in outs {
            match out.kind {
                OutKind::File => {
                    files.insert(out.hash);
                }
                OutKind::Dir => match self.tree(&out.hash) {
                    Some(tree) => files.extend(tree.file_hashes()),
                    None => return false,
                },
            }
        }
        self.holds_files(&files)
    }

    /// True when the store holds every one of these files.
    pub fn holds_files(&self, hashes: &BTreeSet<Digest>) -> bool {
        self.objects.missing(hashes).is_ok_and(|missing| missing.is_empty())
    }

    /// The bytes of a file out as `record` describes it, checked against
    /// its hash; None when the store does not hold it (or holds it damaged).
    pub fn read_file(&self, record: &OutRecord) -> Option<Vec<u8>> {
        if record.kind != OutKind::File {
            return None;
        }
        let scratch = tempfile::NamedTempFile::new().ok()?;
        self.objects.get_object(&record.hash, scratch.path()).ok()?;
        let bytes = std::fs::read(scratch.path()).ok()?;
        (Digest::of(&bytes) == record.hash).then_some(bytes)
    }

    /// A directory manifest.
    pub fn tree(&self, hash: &Digest) -> Option<Tree> {
        let bytes = self.objects.get_tree(hash).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Restores one out into the workspace, verifying every file's hash. The
    /// content is assembled beside the target and renamed over it, so a
    /// failed restore leaves nothing half-written behind.
    pub fn restore(&self, root: &Path, path: &RelPath, record: &OutRecord) -> Result<(), RestoreError> {
        let target = path.under(root);
        let parent = target.parent().expect("workspace paths have a parent");
        std::fs::create_dir_all(parent)?;
        let staging = tempfile::Builder::new().prefix(".fabric-restore-").tempdir_in(parent)?;
        let built = staging.path().join("out");
        let tree = match record.kind {
            OutKind::File => None,
            OutKind::Dir => {
                let tree = self
                    .tree(&record.hash)
                    .ok_or_else(|| RestoreError::Absent(path.to_string()))?;
                if let Some(entry) = tree.unsafe_entry() {
                    return Err(RestoreError::Unsafe {
                        path: path.to_string(),
                        entry: entry.to_string(),
                    });
                }
                Some(tree)
            }
        };
        let files = tree
            .as_ref()
            .map_or_else(|| BTreeSet::from([record.hash]), |t| t.file_hashes().collect());
        self.objects.fetch(&files)?;
        match &tree {
            None => {
                self.fetch_verified(&record.hash, &built, path.as_str(), record.executable)?;
            }
            Some(tree) => {
                std::fs::create_dir(&built)?;
                for entry in &tree.entries {
                    let destination = built.join(entry.path());
                    if let Some(dir) = destination.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    match entry {
                        TreeEntry::File {
                            path: inner,
                            hash,
                            executable,
                            ..
                        } => self.fetch_verified(hash, &destination, &format!("{path}/{inner}"), *executable)?,
                        TreeEntry::Symlink { target, .. } => std::os::unix::fs::symlink(target, &destination)?,
                        TreeEntry::Empty { .. } => std::fs::create_dir_all(&destination)?,
                    }
                }
            }
        }
        remove_path(&target)?;
        std::fs::rename(&built, &target)?;
        Ok(())
    }

    fn fetch_verified(
        &self,
        hash: &Digest,
        destination: &Path,
        shown: &str,
        executable: bool,
    ) -> Result<(), RestoreError> {
        if !self.holds_files(&BTreeSet::from([*hash])) {
            return Err(RestoreError::Absent(shown.to_string()));
        }
        self.objects.get_object(hash, destination)?;
        let size = std::fs::metadata(destination)?.len();
        let found = hash_file(destination, size)?;
        if found != *hash {
            self.objects.discard_object(hash)?;
            return Err(RestoreError::Corrupt {
                path: shown.to_string(),
                expected: *hash,
                found,
            });
        }
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(destination, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }
}

/// `fabric gc` on the workspace's own store: deletes run records older than
/// `keep_since` whose fingerprint is not in `pinned`, then every tree and
/// object nothing left refers to. Returns (runs, trees, objects) removed;
/// with `dry_run`, only counts. It takes a [`LocalStorage`]: a shared tier,
/// which other workspaces' locks pin, is never pruned by one workspace.
pub fn collect_garbage(
    store: &LocalStorage,
    pinned: &BTreeSet<Digest>,
    keep_since: SystemTime,
    dry_run: bool,
) -> io::Result<(usize, usize, usize)> {
    let mut live_outs = Vec::new();
    let mut removed_runs = 0;
    for (fingerprint, written) in store.list_records(RecordKind::Run)? {
        let keep = pinned.contains(&fingerprint) || written >= keep_since;
        if keep {
            if let Some(bytes) = store.get_run(&fingerprint)?
                && let Ok(record) = serde_json::from_slice::<RunRecord>(&bytes)
            {
                live_outs.extend(record.outs.values().cloned());
            }
        } else {
            removed_runs += 1;
            if !dry_run {
                std::fs::remove_file(store.record_path(RecordKind::Run, &fingerprint))?;
            }
        }
    }
    let mut live_trees = BTreeSet::new();
    let mut live_objects = BTreeSet::new();
    for out in live_outs {
        match out.kind {
            OutKind::File => {
                live_objects.insert(out.hash);
            }
            OutKind::Dir => {
                live_trees.insert(out.hash);
                let tree = store.get_tree(&out.hash)?;
                let tree = tree.and_then(|bytes| serde_json::from_slice::<Tree>(&bytes).ok());
                live_objects.extend(tree.iter().flat_map(Tree::file_hashes));
            }
        }
    }
    let mut removed_trees = 0;
    for (tree, _) in store.list_records(RecordKind::Tree)? {
        if !live_trees.contains(&tree) {
            removed_trees += 1;
            if !dry_run {
                std::fs::remove_file(store.record_path(RecordKind::Tree, &tree))?;
            }
        }
    }
    let mut removed_objects = 0;
    for object in store.list_objects()? {
        if !live_objects.contains(&object) {
            removed_objects += 1;
            if !dry_run {
                store.discard_object(&object)?;
            }
        }
    }
    Ok((removed_runs, removed_trees, removed_objects))
}

/// Removes a file, symlink or directory tree; absent is fine. A directory
/// that gains entries while it is being removed (a dying command's last
/// write) is retried a few times.
pub fn remove_path(path: &Path) -> io::Result<()> {
    let mut attempts = 0;
    loop {
        let result = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        };
        match result {
            Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

/// A store for tests that counts the questions it is asked.
#[cfg(test)]
pub(crate) mod counting {
    use super::*;

    /// A local store that counts the "which are missing" questions (and
    /// how many hashes each asked about).
    pub(crate) struct Counting {
        pub(crate) local: LocalStorage,
        pub(crate) asked: std::sync::Mutex<Vec<usize>>,
    }

    impl ObjectStore for Counting {
        fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
            self.asked.lock().unwrap().push(hashes.len());
            self.local.missing(hashes)
        }
        fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
            self.local.put_object(hash, source)
        }
        fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()> {
            self.local.get_object(hash, destination)
        }
        fn discard_object(&self, hash: &Digest) -> io::Result<()> {
            self.local.discard_object(hash)
        }
        fn put_tree(&self, hash: &Digest, bytes: &[u8]) -> io::Result<()> {
            self.local.put_tree(hash, bytes)
        }
        fn get_tree(&self, hash: &Digest) -> io::Result<Option<Vec<u8>>> {
            self.local.get_tree(hash)
        }
    }

    impl RunCache for Counting {
        fn put_run(&self, fingerprint: &Digest, bytes: &[u8]) -> io::Result<()> {
            self.local.put_run(fingerprint, bytes)
        }
        fn get_run(&self, fingerprint: &Digest) -> io::Result<Option<Vec<u8>>> {
            self.local.get_run(fingerprint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::counting::Counting;
    use super::*;
    use crate::hash::Hasher;
    use crate::stat_cache::StatCache;

    #[test]
    fn a_listing_that_reaches_outside_its_out_is_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::local(&dir.path().join("store"));
        let content = dir.path().join("content");
        std::fs::write(&content, "x").unwrap();
        let hash = Digest::of(b"x");
        LocalStorage::new(&dir.path().join("store"))
            .put_object(&hash, &content)
            .unwrap();
        let file = |path: &str| TreeEntry::File {
            path: path.into(),
            hash,
            size: 1,
            executable: false,
        };
        let link = TreeEntry::Symlink {
            path: "link".into(),
            target: dir.path().display().to_string(),
        };
        for entries in [
            vec![file("../escaped")],
            vec![file("/tmp/escaped")],
            vec![link.clone(), file("link/escaped")],
        ] {
            let tree = Tree { entries };
            let bytes = serde_json::to_vec(&tree).unwrap();
            store.objects.put_tree(&tree.digest(), &bytes).unwrap();
            let record = OutRecord {
                kind: OutKind::Dir,
                hash: tree.digest(),
                size: 1,
                files: 1,
                executable: false,
            };
            let root = dir.path().join("ws");
            let restored = store.restore(&root, &RelPath::new("out/inner").unwrap(), &record);
            assert!(matches!(restored, Err(RestoreError::Unsafe { .. })), "{restored:?}");
            assert!(!dir.path().join("escaped").exists() && !root.join("out/escaped").exists());
        }
        let sound = Tree {
            entries: vec![link, file("linked/kept")],
        };
        assert_eq!(
            sound.unsafe_entry(),
            None,
            "a sibling that only starts like the link is fine"
        );
    }

    #[test]
    fn a_cache_hit_asks_which_objects_are_missing_once_for_all_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        for i in 0..50 {
            std::fs::create_dir_all(root.join("out/sub")).unwrap();
            std::fs::write(root.join(format!("out/sub/{i}.txt")), i.to_string()).unwrap();
        }
        std::fs::write(root.join("model.bin"), b"weights").unwrap();
        let counting = Arc::new(Counting {
            local: LocalStorage::new(&dir.path().join("store")),
            asked: Default::default(),
        });
        let store = Store {
            objects: counting.clone(),
            runs: Arc::new(LocalStorage::new(&dir.path().join("store"))),
        };
        let cache = StatCache::load(&dir.path().join("stat"));
        let hasher = Hasher::new(&root, &cache);
        let mut outs = crate::lock::OutRecords::new();
        for path in ["out", "model.bin"] {
            let path = RelPath::new(path).unwrap();
            let record = store.save(&root, &path, &hasher.hash(&path).unwrap()).unwrap().unwrap();
            outs.insert(path.to_string(), record);
        }
        let fingerprint = Digest::of(b"stage");
        store.record_run(&fingerprint, &outs).unwrap();

        assert!(store.lookup_run(&fingerprint).is_some());
        assert_eq!(*counting.asked.lock().unwrap(), [51], "one question for 51 files");

        // One object gone: the run is not a hit.
        let gone = outs.get("model.bin").unwrap().hash;
        counting.local.discard_object(&gone).unwrap();
        assert!(store.lookup_run(&fingerprint).is_none());
        assert!(!store.holds_files(&BTreeSet::from([gone])));
    }
}
