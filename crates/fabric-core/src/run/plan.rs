//! The planner: what a stage needs (nothing, its outs from the run cache, or
//! a run) and why. [`Planner::decide`] is the one place that decides it;
//! `run` (as each stage becomes ready), `status`, `explain`, `--dry-run`
//! and `verify --fresh` all ask it. Planning reads the workspace, the lock
//! and the run cache; it needs no reporter, executor or interrupts.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::Force;
use super::freshness;
use crate::digest::Digest;
use crate::fingerprint::{DirtyReason, Inputs};
use crate::graph::StageGraph;
use crate::hash::{Content, FileMemo, Hasher, Witness};
use crate::lock::{Lock, LockEntry};
use crate::manifest::{Stage, Workspace};
use crate::paths::RelPath;
use crate::stat_cache::StatCache;
use crate::steps::Registry;
use crate::store::{RunRecord, Store};

/// What `run` would do with a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to do.
    UpToDate,
    /// Outs come from the run cache.
    Restore,
    /// The command or step runs.
    Run,
    /// Frozen: never run.
    Frozen,
}

/// One stage of a plan.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Index into `Workspace::stages`.
    pub stage: usize,
    /// What would happen.
    pub decision: Decision,
    /// Why (empty when up to date).
    pub reasons: Vec<DirtyReason>,
}

/// A decision with what was hashed to reach it, so that carrying it out
/// hashes nothing twice.
pub struct Verdict {
    /// What the stage needs.
    pub decision: Decision,
    /// Why (empty when up to date or frozen).
    pub reasons: Vec<DirtyReason>,
    /// The stage's current inputs (None when frozen).
    pub inputs: Option<Inputs>,
    /// What each dep held when hashed, in declaration order.
    pub deps: Vec<Content>,
    /// The run-cache record to restore from (with [`Decision::Restore`]).
    pub cached: Option<RunRecord>,
}

/// The workspace's state as the planner sees it: stages, lock, run cache.
pub struct Planner<'a> {
    /// The workspace.
    pub workspace: &'a Workspace,
    /// Its validated graph.
    pub graph: &'a StageGraph,
    /// Built-in steps (their versions and facts enter fingerprints).
    pub registry: &'a Registry,
    /// The content-addressed store and run cache.
    pub store: &'a Store,
    /// The stat cache.
    pub cache: &'a StatCache,
    /// The lock; a run updates it after each stage.
    pub lock: Mutex<Lock>,
    /// Where to note every path looked at and every out cleared, when the
    /// caller wants to know what verdicts rest on ([`super::noop`]).
    pub witness: Option<&'a Witness>,
}

impl<'a> Planner<'a> {
    /// A planner over `workspace` as `lock` records it.
    pub fn new(
        workspace: &'a Workspace,
        graph: &'a StageGraph,
        registry: &'a Registry,
        store: &'a Store,
        cache: &'a StatCache,
        lock: Lock,
    ) -> Planner<'a> {
        Planner {
            workspace,
            graph,
            registry,
            store,
            cache,
            lock: Mutex::new(lock),
            witness: None,
        }
    }

    /// The planner noting what it looks at in `witness`.
    pub fn witnessed(self, witness: Option<&'a Witness>) -> Planner<'a> {
        Planner { witness, ..self }
    }

    /// A hasher over the workspace, noting what it looks at in the witness.
    pub fn hasher(&self) -> Hasher<'_> {
        Hasher::new(&self.workspace.root, self.cache).witnessed(self.witness)
    }

    /// The lock entry of stage `name`.
    pub fn lock_entry(&self, name: &str) -> Option<Arc<LockEntry>> {
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stage
            .get(name)
            .cloned()
    }

    /// Decides what stage `index` needs. `upstream` holds the reasons that
    /// come from stages above it (those that will change first); forced
    /// and always-run stages run whatever their inputs; a stale stage whose
    /// fingerprint the run cache knows is restored, unless it runs
    /// unconditionally or something upstream is still to change.
    pub fn decide(
        &self,
        index: usize,
        force: &Force,
        upstream: Vec<DirtyReason>,
        hasher: &Hasher,
    ) -> io::Result<Verdict> {
        let stage = &self.workspace.stages[index];
        if stage.frozen {
            return Ok(Verdict {
                decision: Decision::Frozen,
                reasons: Vec::new(),
                inputs: None,
                deps: Vec::new(),
                cached: None,
            });
        }
        let (inputs, deps) = freshness::hash_inputs(&self.workspace.root, self.registry, hasher, stage)?;
        let mut reasons: Vec<DirtyReason> = freshness::unconditional(stage, force).into_iter().collect();
        reasons.extend(upstream);
        let entry = self.lock_entry(&stage.name);
        reasons.extend(freshness::dirty_reasons(hasher, stage, entry.as_deref(), &inputs)?);
        let cached = if !reasons.is_empty() && freshness::restorable(&reasons) {
            self.cached_run(stage, entry.as_deref(), &inputs.fingerprint())
        } else {
            None
        };
        let decision = match (&cached, reasons.is_empty()) {
            (_, true) => Decision::UpToDate,
            (Some(_), false) => Decision::Restore,
            (None, false) => Decision::Run,
        };
        Ok(Verdict {
            decision,
            reasons,
            inputs: Some(inputs),
            deps,
            cached,
        })
    }

    /// The outs a run of `stage` with `fingerprint` made, if the store
    /// holds them all. When the lock has a record of that very fingerprint,
    /// the lock is the truth: a run record (perhaps from a shared tier) that
    /// disagrees with it is not used; nor is one that names other paths
    /// than the stage's declared outs.
    fn cached_run(&self, stage: &Stage, entry: Option<&LockEntry>, fingerprint: &Digest) -> Option<RunRecord> {
        match entry {
            Some(entry) if entry.fingerprint == *fingerprint => {
                self.store.holds(entry.outs.values()).then(|| RunRecord {
                    outs: entry.outs.clone(),
                })
            }
            _ => self.store.lookup_run(fingerprint).filter(|record| {
                let declared: BTreeSet<&str> = stage.out_paths().map(RelPath::as_str).collect();
                record.outs.keys().map(String::as_str).collect::<BTreeSet<_>>() == declared
            }),
        }
    }

    /// What `run` would do, stage by stage in topological order, without
    /// changing anything. A stage below one that will change is stale too.
    pub fn plan(&self, selection: &BTreeSet<usize>, force: &Force) -> io::Result<Vec<Planned>> {
        let memo = FileMemo::default();
        let hasher = self.hasher().remembering(&memo);
        let mut decisions: BTreeMap<usize, Decision> = BTreeMap::new();
        let mut plan = Vec::new();
        for index in self.graph.order(selection) {
            let upstream = self
                .graph
                .upstream(index)
                .iter()
                .filter_map(|upstream| match decisions.get(upstream) {
                    Some(decision @ (Decision::Run | Decision::Restore)) => Some(DirtyReason::UpstreamStale {
                        stage: self.workspace.stages[*upstream].name.clone(),
                        restored: *decision == Decision::Restore,
                    }),
                    _ => None,
                })
                .collect();
            let verdict = self.decide(index, force, upstream, &hasher)?;
            decisions.insert(index, verdict.decision);
            plan.push(Planned {
                stage: index,
                decision: verdict.decision,
                reasons: verdict.reasons,
            });
        }
        Ok(plan)
    }
}
