//! The no-op memo, `.fabric/noop`: what the last "everything is up to date"
//! rested on, so the next identical request can check that instead of
//! planning again.
//!
//! A run that leaves every selected stage up to date (each was found up to
//! date or ran; nothing failed, was restored or warned) keeps, under the
//! request (targets, options and params as given, the fabric binary, the
//! workspace root): the stamp of every path the verdict read, each taken
//! before it was read — the manifest files and the directories `include`
//! walked, `Fabric.lock` and its journal, every dep and out and every
//! directory listed to hash them — and the values of the environment
//! variables and step facts that enter the fingerprints. The next run with
//! the same request stats those paths; when every stamp is the same and so
//! are the variables and facts, it reports every stage up to date without
//! loading the manifest, the lock or the graph. This is a memo of the
//! planner's answer, not a second way to decide. Anything else, and the run
//! plans as usual.
//!
//! A build keeps it from its own looks, without planning again (which made
//! an edit-and-rerun over 100,000 files 2.4 times slower, benches/README.md):
//! a stage that runs clears its outs first, and what was seen of a path
//! before the run last cleared it no longer counts; every look since must
//! agree ([`settled`]), or a path changed during the run and there is no
//! memo. Each stage's lock entry was made from those same looks.
//!
//! A stamp only vouches for a file that was not written within the racy
//! window before it was looked at (see [`crate::stat_cache`]); for a file
//! written later than that (an out just written, data written just before
//! the run) the memo keeps the hash of its bytes, and recalling reads the
//! file again to compare. A run hashes such small files again at its end,
//! and that later look is the one kept. A directory that fresh, or a file
//! that was not hashed, means no memo. The memo is an accelerator:
//! unreadable, damaged or stale, it is ignored.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::digest::{Digest, KeyEncoder};
use crate::hash::Sighting;
use crate::manifest::Observed;
use crate::stat_cache::{Look, Stamp, now_ns};
use crate::steps::Registry;

/// What `.fabric/noop` starts with.
const MAGIC: &[u8] = b"FABRICNOOP1\n";

/// A run's request: everything on its command line that can change the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request(Digest);

impl Request {
    /// The request to run `args` (targets, options, params as given) in the
    /// workspace at `root`.
    pub fn new(root: &Path, args: &[String]) -> Request {
        let mut key = KeyEncoder::new("fabric-noop-request");
        key.binary().text(b'r', &root.to_string_lossy());
        for arg in args {
            key.text(b'a', arg);
        }
        Request(key.finish())
    }
}

/// What a verdict rested on besides the request.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Grounds {
    /// Paths as they were when read (the stamp taken before reading).
    pub observed: Observed,
    /// Environment variables the stages declare, and the BLAKE3 of each value.
    pub env: Vec<(String, Option<Digest>)>,
    /// Built-in steps used, with their facts.
    pub facts: Vec<(String, Vec<(String, String)>)>,
}

impl Grounds {
    /// The environment variable `name` as the memo keeps it.
    pub fn env_value(name: &str) -> Option<Digest> {
        std::env::var_os(name).map(|value| Digest::of(value.as_encoded_bytes()))
    }

    /// The facts of the step `name` now.
    pub fn step_facts(registry: &Registry, name: &str, root: &Path) -> Option<Vec<(String, String)>> {
        Some(registry.get(name)?.facts(root).into_iter().collect())
    }

    /// True when every path still has its stamp and every variable and fact
    /// its value.
    fn hold(&self, root: &Path, registry: &Registry) -> bool {
        self.observed.par_iter().all(|look| still(root, look))
            && self.env.iter().all(|(name, value)| Grounds::env_value(name) == *value)
            && self
                .facts
                .iter()
                .all(|(step, facts)| Grounds::step_facts(registry, step, root).as_ref() == Some(facts))
    }
}

/// The memo's body.
#[derive(Serialize, Deserialize)]
struct Memo {
    request: Digest,
    /// The up-to-date stages, in the order the run reported them.
    stages: Vec<String>,
    grounds: Grounds,
}

/// True when `look` still describes its path: the same stamp and, when a
/// hash was kept, the same bytes.
fn still(root: &Path, look: &Look) -> bool {
    let path = root.join(&look.path);
    if let Some(listing) = &look.listing {
        let now = if listing.glob {
            crate::hash::glob_listing(root, &look.path)
        } else {
            crate::hash::tree_listing(&path)
        };
        return (listing.glob || Stamp::at(&path) == look.stamp) && now.is_ok_and(|now| now.digest == listing.digest);
    }
    Stamp::at(&path) == look.stamp
        && look.hash.is_none_or(|hash| {
            let size = look.stamp.map_or(0, |s| s.size());
            crate::hash::hash_file(&path, size).is_ok_and(|now| now == hash)
        })
}

fn path(root: &Path) -> PathBuf {
    crate::layout::Layout::new(root).noop_memo()
}

/// The stages found up to date by the last run of `request`, when nothing
/// that verdict rested on has changed since.
pub fn recall(root: &Path, request: Request, registry: &Registry) -> Option<Vec<String>> {
    let bytes = std::fs::read(path(root)).ok()?;
    let memo: Memo = postcard::from_bytes(bytes.strip_prefix(MAGIC)?).ok()?;
    (memo.request == request.0 && memo.grounds.hold(root, registry)).then_some(memo.stages)
}

/// The looks a run's verdict rests on, from what its witness saw: for each
/// path, its looks since the run last cleared it (wrote it anew as an out),
/// which must all agree; the latest is kept, with when it was taken. `None`
/// when two looks disagree (the path changed during the run) or a path the
/// run cleared was not looked at again (restored outs are not read back: a
/// run that restored keeps no memo).
pub fn settled(sightings: Vec<Sighting>) -> Option<Vec<(Look, i128)>> {
    // None: cleared, not looked at since.
    let mut latest: BTreeMap<String, Option<(Look, i128)>> = BTreeMap::new();
    for sighting in sightings {
        match sighting {
            Sighting::Cleared(path) => {
                let under = format!("{path}/");
                let inside: Vec<String> = latest
                    .range(under.clone()..)
                    .take_while(|(key, _)| key.starts_with(&under))
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in inside {
                    latest.remove(&key);
                }
                latest.insert(path, None);
            }
            Sighting::Look(look, at) => match latest.get_mut(&look.path) {
                Some(Some((seen, when))) => {
                    if *seen != look {
                        return None;
                    }
                    *when = at;
                }
                Some(slot) => *slot = Some((look, at)),
                None => {
                    latest.insert(look.path.clone(), Some((look, at)));
                }
            },
        }
    }
    latest.into_values().collect()
}

/// A look at `path` now, with the hash of its bytes when it was written too
/// recently for its stamp to vouch for it (the lock a run just wrote).
pub fn look_now(root: &Path, path: &str) -> (Look, i128) {
    let at = now_ns();
    let mut look = Look::now(root, path);
    if let Some(stamp) = look.stamp.filter(|stamp| stamp.is_racy(at)) {
        look.hash = crate::hash::hash_file(&root.join(path), stamp.size()).ok();
    }
    (look, at)
}

/// Keeps the verdict "`stages` are up to date" for `request`. `grounds`
/// holds looks taken after `started` (nanoseconds since the epoch), `seen`
/// looks with the moment each was taken. No memo when a directory or an
/// unhashed file was written too close to the moment it was looked at to
/// be vouched for by its stamp.
pub fn remember(
    root: &Path,
    request: Request,
    started: i128,
    stages: Vec<String>,
    mut grounds: Grounds,
    seen: Vec<(Look, i128)>,
) -> std::io::Result<()> {
    let manifest = std::mem::take(&mut grounds.observed)
        .into_iter()
        .map(|look| (look, started));
    // A settled stamp vouches for its path; a fresh one only through the
    // hash of the bytes, which recall compares.
    for (mut look, at) in manifest.chain(seen) {
        let newest = look.listing.as_ref().and_then(|l| l.newest);
        if newest.is_some_and(|stamp| stamp.is_racy(at)) {
            return forget(root); // an entry too fresh for its stamp, and its bytes not kept
        }
        match look.stamp {
            Some(stamp) if stamp.is_racy(at) => {
                if look.hash.is_none() {
                    return forget(root);
                }
            }
            _ => look.hash = None,
        }
        grounds.observed.push(look);
    }
    grounds.observed.sort_by(|a, b| a.path.cmp(&b.path));
    grounds.observed.dedup();
    // A path changed since it was looked at needs no check here: its stamp
    // (or kept bytes) no longer match, so recall will plan.
    let memo = Memo {
        request: request.0,
        stages,
        grounds,
    };
    let bytes = postcard::to_stdvec(&memo).map_err(std::io::Error::other)?;
    crate::atomic::replace(&path(root), |file| {
        file.write_all(MAGIC)?;
        file.write_all(&bytes)
    })
}

/// Drops the memo (a run that did something, or could not vouch for its verdict).
pub fn forget(root: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(root)) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A look at `path` now, with the hash of its bytes, as the hasher takes one.
    fn hashed_look(root: &Path, path: &str) -> Look {
        let mut look = Look::now(root, path);
        look.hash = look
            .stamp
            .and_then(|stamp| crate::hash::hash_file(&root.join(path), stamp.size()).ok());
        look
    }

    #[test]
    fn a_look_holds_only_while_stamp_and_kept_bytes_are_the_same() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"same size").unwrap();
        let look = hashed_look(dir.path(), "f");
        assert!(still(dir.path(), &look));
        let wrong_bytes = Look {
            hash: Some(Digest::of(b"other byte")),
            ..look.clone()
        };
        assert!(!still(dir.path(), &wrong_bytes), "bytes compared when a hash is kept");
        let gone = Look {
            stamp: None,
            hash: None,
            ..look.clone()
        };
        assert!(!still(dir.path(), &gone), "absent then, present now");
        std::fs::write(dir.path().join("f"), b"same-size").unwrap();
        assert!(!still(dir.path(), &look));
    }

    #[test]
    fn fresh_paths_are_kept_by_their_bytes_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join(".fabric")).unwrap();
        std::fs::write(root.join("f"), b"fresh").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        let request = Request::new(root, &[]);
        let registry = Registry::default();
        let started = now_ns() - 1_000_000_000; // the files are newer: too fresh for stamps
        let grounds = |observed| Grounds {
            observed,
            ..Grounds::default()
        };

        remember(
            root,
            request,
            started,
            vec!["s".into()],
            grounds(vec![hashed_look(root, "f")]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(recall(root, request, &registry), Some(vec!["s".to_string()]));
        assert_eq!(
            recall(root, Request::new(root, &["t".into()]), &registry),
            None,
            "another request"
        );

        remember(
            root,
            request,
            started,
            vec!["s".into()],
            grounds(vec![Look::now(root, "f")]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(
            recall(root, request, &registry),
            None,
            "a fresh file without its hash: no memo"
        );
        remember(
            root,
            request,
            started,
            vec!["s".into()],
            grounds(vec![Look::now(root, "d")]),
            Vec::new(),
        )
        .unwrap();
        assert_eq!(recall(root, request, &registry), None, "a fresh directory: no memo");

        let settled = now_ns() + 10_000_000_000; // as if the files were long written
        remember(
            root,
            request,
            settled,
            vec!["s".into()],
            grounds(vec![hashed_look(root, "f")]),
            Vec::new(),
        )
        .unwrap();
        let bytes = std::fs::read(path(root)).unwrap();
        let memo: Memo = postcard::from_bytes(bytes.strip_prefix(MAGIC).unwrap()).unwrap();
        assert_eq!(memo.grounds.observed[0].hash, None, "a settled stamp vouches alone");
    }

    fn seen(path: &str, size: u64) -> Look {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), vec![b'x'; size as usize]).unwrap();
        Look {
            path: path.to_string(),
            ..hashed_look(dir.path(), "f")
        }
    }

    fn look(look: &Look, at: i128) -> Sighting {
        Sighting::Look(look.clone(), at)
    }

    #[test]
    fn agreeing_looks_settle_on_the_latest_moment() {
        let a = seen("a", 1);
        assert_eq!(settled(vec![look(&a, 1), look(&a, 5)]), Some(vec![(a, 5)]));
    }

    #[test]
    fn a_path_seen_two_ways_settles_nothing() {
        let (before, after) = (seen("a", 1), seen("a", 2));
        assert_eq!(settled(vec![look(&before, 1), look(&after, 2)]), None);
    }

    #[test]
    fn what_was_seen_before_the_run_cleared_a_path_no_longer_counts() {
        let (old, new, inside) = (seen("out", 1), seen("out", 2), seen("out/f", 3));
        let other = seen("outer", 4);
        let sightings = vec![
            look(&old, 1),
            look(&inside, 1),
            look(&other, 1),
            Sighting::Cleared("out".into()),
            look(&new, 2),
        ];
        assert_eq!(settled(sightings), Some(vec![(new, 2), (other, 1)]));
    }

    #[test]
    fn a_cleared_path_not_seen_again_settles_nothing() {
        let a = seen("a", 1);
        assert_eq!(settled(vec![look(&a, 1), Sighting::Cleared("a".into())]), None);
    }
}
