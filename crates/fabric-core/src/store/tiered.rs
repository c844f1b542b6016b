//! A store in two tiers: the workspace's own directory first, then a second
//! tier (a shared directory, or a remote) behind the same traits.
//!
//! Reads look in the near tier and fall through to the far one when
//! [`Reach::pull`] allows; what comes from the far tier is checked against
//! its address (an object by its BLAKE3, a tree by its digest) before it is
//! kept in the near tier, and refused otherwise, so a damaged or poisoned
//! second tier can cost a rerun, never a wrong restore. Writes go to the near
//! tier, and to the far one too when [`Reach::push`] allows. Damaged copies
//! are dropped from the near tier only: the far tier is shared, and not this
//! workspace's to prune; but an object it sent damaged is remembered in the
//! near tier (`far-damaged/HASH`), and the next write or push of that object
//! sends a sound copy over the damaged one, whatever its size there.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use super::{LocalStorage, ObjectStore, RunCache};
use crate::digest::Digest;
use crate::hash::{Tree, hash_file};
use crate::lock::{OutKind, OutRecords};

/// A second tier: objects, trees and run records.
pub trait Tier: ObjectStore + RunCache {}

impl<T: ObjectStore + RunCache> Tier for T {}

/// Which way content may travel between the tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reach {
    /// Read from the far tier what the near one lacks.
    pub pull: bool,
    /// Write to the far tier what is written to the near one.
    pub push: bool,
}

/// The two tiers, as one [`ObjectStore`] and [`RunCache`].
pub struct TieredStorage {
    near: Arc<LocalStorage>,
    far: Arc<dyn Tier>,
    reach: Reach,
    /// The far tier's first failure to answer a read; after it, reads do
    /// not wait on the far tier again (each would wait out its timeout).
    far_failed: std::sync::OnceLock<String>,
}

impl TieredStorage {
    /// `near` first, then `far`, as far as `reach` allows.
    pub fn new(near: Arc<LocalStorage>, far: Arc<dyn Tier>, reach: Reach) -> TieredStorage {
        TieredStorage {
            near,
            far,
            reach,
            far_failed: std::sync::OnceLock::new(),
        }
    }

    /// Why the far tier stopped being read, if it failed to answer.
    pub fn far_failure(&self) -> Option<&str> {
        self.far_failed.get().map(String::as_str)
    }

    /// A read of the far tier, unless it failed before; its first failure
    /// is kept, and later reads fail at once.
    fn read_far<T>(&self, read: impl FnOnce(&dyn Tier) -> io::Result<T>) -> io::Result<T> {
        if let Some(failure) = self.far_failed.get() {
            return Err(io::Error::other(format!("the second tier failed earlier: {failure}")));
        }
        read(self.far.as_ref()).inspect_err(|error| {
            let _ = self.far_failed.set(error.to_string());
        })
    }

    /// Fetches object `hash` from the far tier into the near one, refusing
    /// content that does not match its address.
    fn pull_object(&self, hash: &Digest) -> io::Result<()> {
        let incoming = tempfile::NamedTempFile::new_in(self.near.incoming_dir()?)?;
        self.read_far(|far| far.get_object(hash, incoming.path()))?;
        let found = hash_file(incoming.path(), std::fs::metadata(incoming.path())?.len())?;
        if found != *hash {
            let remembered = match self.near.mark_far_damaged(hash) {
                Ok(()) => String::new(),
                Err(error) => format!(" (nor remembered for the next push: {error})"),
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the second tier's object {hash} holds other content ({found}); not used{remembered}"),
            ));
        }
        self.near.put_object(hash, incoming.path())
    }

    /// Sends object `hash` to the far tier: over the copy there if it was
    /// found damaged (and then forgets that it was).
    fn send(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        if self.near.is_far_damaged(hash) {
            self.far.replace_object(hash, source)?;
            self.near.unmark_far_damaged(hash)
        } else {
            self.far.put_object(hash, source)
        }
    }
}

/// What the near tier remembers of objects the far tier sent damaged.
impl LocalStorage {
    fn far_damaged_marker(&self, hash: &Digest) -> std::path::PathBuf {
        self.dir.join("far-damaged").join(hash.to_string())
    }

    fn mark_far_damaged(&self, hash: &Digest) -> io::Result<()> {
        let marker = self.far_damaged_marker(hash);
        std::fs::create_dir_all(marker.parent().expect("markers have a parent"))?;
        std::fs::write(marker, b"")
    }

    fn is_far_damaged(&self, hash: &Digest) -> bool {
        self.far_damaged_marker(hash).is_file()
    }

    /// Every object marked, read in one listing.
    fn far_damaged(&self) -> io::Result<BTreeSet<Digest>> {
        match std::fs::read_dir(self.dir.join("far-damaged")) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
                .collect()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(error) => Err(error),
        }
    }

    fn unmark_far_damaged(&self, hash: &Digest) -> io::Result<()> {
        match std::fs::remove_file(self.far_damaged_marker(hash)) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

/// What a push or a pull moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moved {
    /// Objects copied (those the receiving tier already held are not).
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Objects the receiving tier already held.
    pub present: usize,
    /// Objects neither tier holds (a pull gets the others).
    pub lacking: usize,
    /// Why objects the far tier sent were refused (content that does not
    /// match its address); a pull gets the others.
    pub refused: Vec<String>,
}

/// Transfers in flight at once: a remote's latency, not this machine's
/// cores, is what they wait on.
const TRANSFERS: usize = 8;

impl TieredStorage {
    /// Copies to the far tier what these runs made and the far tier lacks:
    /// objects (asked about in one batch), directory manifests and run
    /// records. `progress` is told the bytes of each object sent.
    pub fn push(&self, runs: &[(Digest, &OutRecords)], progress: &(dyn Fn(u64) + Sync)) -> io::Result<Moved> {
        let files = files_of(runs, |hash| {
            let bytes = self.near.get_tree(hash)?.ok_or_else(|| absent("tree", hash))?;
            self.far.put_tree(hash, &bytes)?;
            Ok(bytes)
        })?;
        let unheld = self.near.missing(&files)?;
        if let Some(hash) = unheld.first() {
            return Err(absent("object", hash));
        }
        let sizes = files
            .iter()
            .map(|hash| Ok((*hash, std::fs::metadata(self.near.object_file(hash))?.len())))
            .collect::<io::Result<_>>()?;
        let mut sending = self.far.missing_or_wrong_size(&sizes)?;
        sending.extend(files.intersection(&self.near.far_damaged()?));
        let moved = transfer(&sending, |hash| {
            let source = self.near.object_file(hash);
            let size = std::fs::metadata(&source)?.len();
            self.send(hash, &source)?;
            progress(size);
            Ok(Some(size))
        })?;
        for (fingerprint, outs) in runs {
            self.far.put_run(fingerprint, &super::RunRecord::encode(outs))?;
        }
        Ok(Moved {
            present: files.len() - sending.len(),
            ..moved
        })
    }

    /// Copies from the far tier what these runs made and the near tier
    /// lacks, each object checked against its address; run records are
    /// written from `runs` (the lock), never taken from the far tier.
    pub fn pull(&self, runs: &[(Digest, &OutRecords)], progress: &(dyn Fn(u64) + Sync)) -> io::Result<Moved> {
        // A directory whose listing neither tier has (or the far one sends
        // damaged) is counted, and the others are still pulled.
        let mut unlisted = Moved::default();
        let files = files_of(runs, |hash| match self.get_tree(hash) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => {
                unlisted.lacking += 1;
                Ok(serde_json::to_vec(&Tree::default()).map_err(io::Error::other)?)
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                unlisted.refused.push(error.to_string());
                Ok(serde_json::to_vec(&Tree::default()).map_err(io::Error::other)?)
            }
            Err(error) => Err(error),
        })?;
        let mut moved = self.fetch_missing(&files, progress)?;
        moved.lacking += unlisted.lacking;
        moved.refused.extend(unlisted.refused);
        for (fingerprint, outs) in runs {
            self.near.put_run(fingerprint, &super::RunRecord::encode(outs))?;
        }
        Ok(moved)
    }

    /// Copies from the far tier those of `files` the near tier lacks,
    /// [`TRANSFERS`] at a time, each checked against its address: what
    /// does not match is refused (and counted), not kept.
    fn fetch_missing(&self, files: &BTreeSet<Digest>, progress: &(dyn Fn(u64) + Sync)) -> io::Result<Moved> {
        let missing = self.near.missing(files)?;
        if missing.is_empty() {
            return Ok(Moved {
                present: files.len(),
                ..Moved::default()
            });
        }
        let lacking = self.read_far(|far| far.missing(&missing))?;
        let fetching: BTreeSet<Digest> = missing.difference(&lacking).copied().collect();
        let refused = std::sync::Mutex::new(Vec::new());
        let moved = transfer(&fetching, |hash| match self.pull_object(hash) {
            Ok(()) => {
                let size = std::fs::metadata(self.near.object_file(hash))?.len();
                progress(size);
                Ok(Some(size))
            }
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(error.to_string());
                Ok(None)
            }
            Err(error) => Err(error),
        })?;
        Ok(Moved {
            present: files.len() - missing.len(),
            lacking: lacking.len(),
            refused: refused.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
            ..moved
        })
    }
}

/// The files these runs' outs hold; `tree` gives (and may pass on) the
/// manifest of each directory out.
fn files_of(
    runs: &[(Digest, &OutRecords)],
    mut tree: impl FnMut(&Digest) -> io::Result<Vec<u8>>,
) -> io::Result<BTreeSet<Digest>> {
    let mut files = BTreeSet::new();
    for (_, outs) in runs {
        for out in outs.values() {
            match out.kind {
                OutKind::File => {
                    files.insert(out.hash);
                }
                OutKind::Dir => {
                    let listed: Tree = serde_json::from_slice(&tree(&out.hash)?).map_err(io::Error::other)?;
                    files.extend(listed.file_hashes());
                }
            }
        }
    }
    Ok(files)
}

/// Runs `copy` on every hash, [`TRANSFERS`] at a time; the first error
/// ends the transfer. `copy` gives the bytes copied, or None for an object
/// it refused.
fn transfer(hashes: &BTreeSet<Digest>, copy: impl Fn(&Digest) -> io::Result<Option<u64>> + Sync) -> io::Result<Moved> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(TRANSFERS)
        .build()
        .map_err(io::Error::other)?;
    let sizes: Vec<Option<u64>> = pool.install(|| hashes.par_iter().map(&copy).collect::<io::Result<_>>())?;
    Ok(Moved {
        objects: sizes.iter().flatten().count(),
        bytes: sizes.iter().flatten().sum(),
        ..Moved::default()
    })
}

fn absent(what: &str, hash: &Digest) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what} {hash} is not in the local store; run the stage that makes it first"),
    )
}

impl ObjectStore for TieredStorage {
    fn missing(&self, hashes: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
        let missing = self.near.missing(hashes)?;
        if missing.is_empty() || !self.reach.pull {
            return Ok(missing);
        }
        self.read_far(|far| far.missing(&missing))
    }

    fn put_object(&self, hash: &Digest, source: &Path) -> io::Result<()> {
        self.near.put_object(hash, source)?;
        if self.reach.push {
            self.send(hash, source)?;
        }
        Ok(())
    }

    fn get_object(&self, hash: &Digest, destination: &Path) -> io::Result<()> {
        if self.reach.pull && !self.near.missing(&BTreeSet::from([*hash]))?.is_empty() {
            self.pull_object(hash)?;
        }
        self.near.get_object(hash, destination)
    }

    fn discard_object(&self, hash: &Digest) -> io::Result<()> {
        self.near.discard_object(hash)
    }

    fn fetch(&self, hashes: &BTreeSet<Digest>) -> io::Result<()> {
        if self.reach.pull {
            self.fetch_missing(hashes, &|_| {})?;
        }
        Ok(())
    }

    fn put_tree(&self, hash: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.near.put_tree(hash, bytes)?;
        if self.reach.push {
            self.far.put_tree(hash, bytes)?;
        }
        Ok(())
    }

    fn get_tree(&self, hash: &Digest) -> io::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.near.get_tree(hash)? {
            return Ok(Some(bytes));
        }
        if !self.reach.pull {
            return Ok(None);
        }
        let Some(bytes) = self.read_far(|far| far.get_tree(hash))? else {
            return Ok(None);
        };
        let tree: Tree = serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if tree.digest() != *hash {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the second tier's tree {hash} lists other content; not used"),
            ));
        }
        self.near.put_tree(hash, &bytes)?;
        Ok(Some(bytes))
    }
}

impl RunCache for TieredStorage {
    fn put_run(&self, fingerprint: &Digest, bytes: &[u8]) -> io::Result<()> {
        self.near.put_run(fingerprint, bytes)?;
        if self.reach.push {
            self.far.put_run(fingerprint, bytes)?;
        }
        Ok(())
    }

    /// A run record vouches only for outs whose content is checked when it
    /// is restored, so one from the far tier is kept as it is.
    fn get_run(&self, fingerprint: &Digest) -> io::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.near.get_run(fingerprint)? {
            return Ok(Some(bytes));
        }
        if !self.reach.pull {
            return Ok(None);
        }
        let found = self.read_far(|far| far.get_run(fingerprint))?;
        if let Some(bytes) = &found {
            self.near.put_run(fingerprint, bytes)?;
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hasher;
    use crate::lock::OutRecords;
    use crate::paths::RelPath;
    use crate::stat_cache::StatCache;
    use crate::store::Store;
    use crate::store::counting::Counting;

    /// A workspace with a file out and a directory out, saved and recorded
    /// in a store at `far` only; returns the fingerprint and the records.
    fn recorded_in_far(dir: &Path) -> (Digest, OutRecords) {
        let root = dir.join("ws");
        std::fs::create_dir_all(root.join("out/sub")).unwrap();
        std::fs::write(root.join("out/sub/a.txt"), "a").unwrap();
        std::fs::write(root.join("out/b.txt"), "b").unwrap();
        std::fs::write(root.join("model.bin"), "weights").unwrap();
        let far = Store::local(&dir.join("far"));
        let cache = StatCache::load(&dir.join("stat"));
        let hasher = Hasher::new(&root, &cache);
        let mut outs = OutRecords::new();
        for path in ["out", "model.bin"] {
            let path = RelPath::new(path).unwrap();
            let record = far.save(&root, &path, &hasher.hash(&path).unwrap()).unwrap().unwrap();
            outs.insert(path.to_string(), record);
        }
        let fingerprint = Digest::of(b"stage");
        far.record_run(&fingerprint, &outs).unwrap();
        (fingerprint, outs)
    }

    fn tiered(dir: &Path, reach: Reach) -> Store {
        Store::tiered(Arc::new(TieredStorage::new(
            Arc::new(LocalStorage::new(&dir.join("near"))),
            Arc::new(LocalStorage::new(&dir.join("far"))),
            reach,
        )))
    }

    fn restore_all(store: &Store, root: &Path, outs: &OutRecords) -> Result<(), super::super::RestoreError> {
        for (path, record) in outs {
            store.restore(root, &RelPath::new(path).unwrap(), record)?;
        }
        Ok(())
    }

    #[test]
    fn what_the_near_tier_lacks_comes_from_the_far_one_and_stays_near() {
        let dir = tempfile::tempdir().unwrap();
        let (fingerprint, outs) = recorded_in_far(dir.path());
        let pulling = tiered(
            dir.path(),
            Reach {
                pull: true,
                push: false,
            },
        );
        let record = pulling.lookup_run(&fingerprint).expect("found in the far tier");
        assert_eq!(record.outs, outs);
        let elsewhere = dir.path().join("elsewhere");
        restore_all(&pulling, &elsewhere, &outs).unwrap();
        assert_eq!(std::fs::read_to_string(elsewhere.join("out/sub/a.txt")).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(elsewhere.join("model.bin")).unwrap(), "weights");

        // Now the near tier alone answers.
        let near = Store::local(&dir.path().join("near"));
        assert_eq!(near.lookup_run(&fingerprint).unwrap().outs, outs);
        std::fs::remove_dir_all(dir.path().join("far")).unwrap();
        restore_all(&near, &dir.path().join("again"), &outs).unwrap();
    }

    #[test]
    fn without_pull_the_far_tier_is_not_read_and_without_push_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let (fingerprint, outs) = recorded_in_far(dir.path());
        let local_only = tiered(dir.path(), Reach::default());
        assert!(local_only.lookup_run(&fingerprint).is_none());
        assert!(restore_all(&local_only, &dir.path().join("x"), &outs).is_err());

        // A run saved through the tiers: near always, far only with push.
        let other = Digest::of(b"other stage");
        local_only.record_run(&other, &outs).unwrap();
        let far = LocalStorage::new(&dir.path().join("far"));
        assert!(far.get_run(&other).unwrap().is_none());
        tiered(
            dir.path(),
            Reach {
                pull: false,
                push: true,
            },
        )
        .record_run(&other, &outs)
        .unwrap();
        assert!(far.get_run(&other).unwrap().is_some());
    }

    #[test]
    fn damaged_content_in_the_far_tier_is_refused_and_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (fingerprint, outs) = recorded_in_far(dir.path());
        let far = LocalStorage::new(&dir.path().join("far"));
        let model = outs.get("model.bin").unwrap().hash;
        std::fs::write(far.object_file(&model), "poisoned").unwrap();
        let pulling = tiered(
            dir.path(),
            Reach {
                pull: true,
                push: false,
            },
        );
        let error = pulling
            .restore(
                &dir.path().join("x"),
                &RelPath::new("model.bin").unwrap(),
                outs.get("model.bin").unwrap(),
            )
            .unwrap_err();
        assert!(error.to_string().contains("holds other content"), "{error}");
        assert!(!dir.path().join("x/model.bin").exists());
        let near = LocalStorage::new(&dir.path().join("near"));
        assert_eq!(
            near.missing(&BTreeSet::from([model])).unwrap().len(),
            1,
            "not kept near"
        );
        assert!(far.object_file(&model).is_file(), "the shared tier is not pruned");

        // A tree that lists other files than its address says is refused too.
        let tree = outs.get("out").unwrap().hash;
        let mut listed: Tree = serde_json::from_slice(&far.get_tree(&tree).unwrap().unwrap()).unwrap();
        listed.entries.pop();
        far.put_record(
            super::super::RecordKind::Tree,
            &tree,
            &serde_json::to_vec(&listed).unwrap(),
        )
        .unwrap();
        assert!(pulling.tree(&tree).is_none());
        assert!(
            pulling.lookup_run(&fingerprint).is_none(),
            "a run whose tree is refused is no hit"
        );
    }

    #[test]
    fn an_object_the_far_tier_sent_damaged_is_sent_again_by_the_next_push() {
        let dir = tempfile::tempdir().unwrap();
        let (fingerprint, outs) = recorded_in_far(dir.path());
        let far = LocalStorage::new(&dir.path().join("far"));
        let model = outs.get("model.bin").unwrap().hash;
        // Damaged in place, its size kept: a size check cannot see it.
        std::fs::write(far.object_file(&model), "weightz").unwrap();
        let storage = TieredStorage::new(
            Arc::new(LocalStorage::new(&dir.path().join("near"))),
            Arc::new(LocalStorage::new(&dir.path().join("far"))),
            Reach {
                pull: true,
                push: false,
            },
        );
        let store = Store::tiered(Arc::new(storage));
        let elsewhere = dir.path().join("elsewhere");
        store
            .restore(&elsewhere, &RelPath::new("out").unwrap(), outs.get("out").unwrap())
            .unwrap();
        let model_out = outs.get("model.bin").unwrap();
        assert!(
            store
                .restore(&elsewhere, &RelPath::new("model.bin").unwrap(), model_out)
                .is_err()
        );

        // The stage runs again and makes the model; a push sends it over
        // the damaged copy, and the next push has nothing to send.
        let near = Arc::new(LocalStorage::new(&dir.path().join("near")));
        near.put_object(&model, &dir.path().join("ws/model.bin")).unwrap();
        let storage = TieredStorage::new(
            near,
            Arc::new(LocalStorage::new(&dir.path().join("far"))),
            Reach::default(),
        );
        let moved = storage.push(&[(fingerprint, &outs)], &|_| {}).unwrap();
        assert_eq!((moved.objects, moved.present), (1, 2));
        assert_eq!(std::fs::read(far.object_file(&model)).unwrap(), b"weights");
        assert_eq!(storage.push(&[(fingerprint, &outs)], &|_| {}).unwrap().objects, 0);
    }

    #[test]
    fn the_far_tier_is_asked_once_and_only_about_what_the_near_one_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let (fingerprint, outs) = recorded_in_far(dir.path());
        let counting = Arc::new(Counting {
            local: LocalStorage::new(&dir.path().join("far")),
            asked: Default::default(),
        });
        // The near tier already holds the model.
        let near = LocalStorage::new(&dir.path().join("near"));
        let model = dir.path().join("ws/model.bin");
        near.put_object(&outs.get("model.bin").unwrap().hash, &model).unwrap();
        let store = Store::tiered(Arc::new(TieredStorage::new(
            Arc::new(near),
            counting.clone(),
            Reach {
                pull: true,
                push: false,
            },
        )));
        assert!(store.lookup_run(&fingerprint).is_some());
        assert_eq!(
            *counting.asked.lock().unwrap(),
            [2],
            "one question, about the two files not near"
        );
    }

    /// A far tier that fails every read, counting them.
    #[derive(Default)]
    struct Down {
        reads: std::sync::atomic::AtomicUsize,
    }

    impl Down {
        fn fail<T>(&self) -> io::Result<T> {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(io::Error::other("connection refused"))
        }
    }

    impl ObjectStore for Down {
        fn missing(&self, _: &BTreeSet<Digest>) -> io::Result<BTreeSet<Digest>> {
            self.fail()
        }
        fn put_object(&self, _: &Digest, _: &Path) -> io::Result<()> {
            self.fail()
        }
        fn get_object(&self, _: &Digest, _: &Path) -> io::Result<()> {
            self.fail()
        }
        fn discard_object(&self, _: &Digest) -> io::Result<()> {
            self.fail()
        }
        fn put_tree(&self, _: &Digest, _: &[u8]) -> io::Result<()> {
            self.fail()
        }
        fn get_tree(&self, _: &Digest) -> io::Result<Option<Vec<u8>>> {
            self.fail()
        }
    }

    impl RunCache for Down {
        fn put_run(&self, _: &Digest, _: &[u8]) -> io::Result<()> {
            self.fail()
        }
        fn get_run(&self, _: &Digest) -> io::Result<Option<Vec<u8>>> {
            self.fail()
        }
    }

    #[test]
    fn a_far_tier_that_fails_is_not_waited_on_again() {
        let dir = tempfile::tempdir().unwrap();
        let down = Arc::new(Down::default());
        let tiers = Arc::new(TieredStorage::new(
            Arc::new(LocalStorage::new(&dir.path().join("near"))),
            down.clone(),
            Reach {
                pull: true,
                push: false,
            },
        ));
        let store = Store::tiered(tiers.clone());
        for stage in [b"a", b"b", b"c"] {
            assert!(store.lookup_run(&Digest::of(stage)).is_none());
        }
        assert_eq!(
            down.reads.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "asked once, not per stage"
        );
        assert_eq!(tiers.far_failure(), Some("connection refused"));
    }

    #[test]
    fn restoring_a_directory_asks_the_far_tier_once_for_all_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_, outs) = recorded_in_far(dir.path());
        let counting = Arc::new(Counting {
            local: LocalStorage::new(&dir.path().join("far")),
            asked: Default::default(),
        });
        let store = Store::tiered(Arc::new(TieredStorage::new(
            Arc::new(LocalStorage::new(&dir.path().join("near"))),
            counting.clone(),
            Reach {
                pull: true,
                push: false,
            },
        )));
        let root = dir.path().join("clone");
        store
            .restore(&root, &RelPath::new("out").unwrap(), outs.get("out").unwrap())
            .unwrap();
        assert_eq!(std::fs::read_to_string(root.join("out/sub/a.txt")).unwrap(), "a");
        assert_eq!(
            *counting.asked.lock().unwrap(),
            [2],
            "one question for the directory's two files, not one per file"
        );
    }
}
