//! The no-op memo, `.fabric/noop`: what the last "everything is up to date"
//! rested on, so the next identical request can check that instead of
//! planning again.
//!
//! A run that finds every selected stage up to date (nothing ran, was
//! restored, failed or warned) keeps, under the request (targets, options and
//! params as given, the fabric binary, the workspace root): the stamp of every
//! path the verdict read, each taken before it was read — the manifest files
//! and the directories `include` walked, `Fabric.lock` and its journal, every
//! dep and out and every directory listed to hash them — and the values of the
//! environment variables and step facts that enter the fingerprints. The next
//! run with the same request stats those paths; when every stamp is the same
//! and so are the variables and facts, it reports the same verdict without
//! loading the manifest, the lock or the graph. The planner decided once and
//! nothing it read has changed: this is a memo of its answer, not a second
//! way to decide. Anything else, and the run plans as usual.
//!
//! A stamp only vouches for a file that was not written within the racy
//! window of the run that recorded it (see [`crate::stat_cache`]); a run that
//! saw such a file records nothing. The memo is an accelerator: unreadable,
//! damaged or stale, it is ignored.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, KeyEncoder};
use crate::manifest::Observed;
use crate::stat_cache::Stamp;
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
    /// Paths and their stamps (`None`: absent), each taken before it was read.
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
        self.observed
            .iter()
            .all(|(path, stamp)| Stamp::at(&root.join(path)) == *stamp)
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

fn path(root: &Path) -> PathBuf {
    root.join(".fabric/noop")
}

/// The stages found up to date by the last run of `request`, when nothing
/// that verdict rested on has changed since.
pub fn recall(root: &Path, request: Request, registry: &Registry) -> Option<Vec<String>> {
    let bytes = std::fs::read(path(root)).ok()?;
    let memo: Memo = postcard::from_bytes(bytes.strip_prefix(MAGIC)?).ok()?;
    (memo.request == request.0 && memo.grounds.hold(root, registry)).then_some(memo.stages)
}

/// Keeps the verdict "`stages` are up to date" for `request`, from a run that
/// started at `started` (nanoseconds since the epoch), unless a path it read
/// was written too close to that moment to be vouched for by its stamp, or
/// changed while the run went on.
pub fn remember(
    root: &Path,
    request: Request,
    started: i128,
    stages: Vec<String>,
    grounds: Grounds,
) -> std::io::Result<()> {
    let settled = grounds
        .observed
        .iter()
        .all(|(_, stamp)| stamp.is_none_or(|stamp| !stamp.is_racy(started)));
    let unchanged = grounds
        .observed
        .iter()
        .all(|(path, stamp)| Stamp::at(&root.join(path)) == *stamp);
    if !settled || !unchanged {
        return forget(root);
    }
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
