//! Running stages: the plan (what is stale and why), the scheduler (stale
//! stages in parallel, each as soon as its inputs are ready), and what
//! happens to one stage (up to date, restored from the run cache, or run).
//!
//! Record only after success: a stage's lock entry is removed before it
//! executes and written back (atomically, with its outs stored) only after
//! it succeeded, so an interrupted run never leaves a stage looking fresh.

pub mod executor;
pub mod freshness;
pub mod group;
pub mod noop;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::fingerprint::{DirtyReason, Inputs};
use crate::graph::StageGraph;
use crate::hash::{Content, FileMemo, Hasher, Witness};
use crate::lock::{Lock, LockEntry};
use crate::manifest::{Action, Stage, Workspace};
use crate::report::{Event, Outcome, Reporter, Summary};
use crate::stat_cache::StatCache;
use crate::steps::{Registry, StepContext};
use crate::store::{RestoreError, Store, remove_path};
use executor::{Executor, Interrupts, Job};

/// Which stages run regardless of their fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Force {
    /// None.
    Nothing,
    /// Every selected stage.
    All,
    /// These stages.
    Stages(BTreeSet<String>),
}

impl Force {
    fn covers(&self, stage: &str) -> bool {
        match self {
            Force::Nothing => false,
            Force::All => true,
            Force::Stages(names) => names.contains(stage),
        }
    }
}

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

/// Everything a run needs, borrowed from the command layer.
pub struct Runner<'a> {
    /// The workspace.
    pub workspace: &'a Workspace,
    /// Its validated graph.
    pub graph: &'a StageGraph,
    /// Built-in steps.
    pub registry: &'a Registry,
    /// The content-addressed store.
    pub store: &'a Store,
    /// The stat cache.
    pub cache: &'a StatCache,
    /// Where commands run.
    pub executor: &'a dyn Executor,
    /// Where events go.
    pub reporter: &'a dyn Reporter,
    /// Ctrl-C / SIGTERM state.
    pub interrupts: &'a Interrupts,
    /// The lock, updated after each stage.
    pub lock: Mutex<Lock>,
    /// Where to note every path looked at and every out cleared, when the
    /// caller wants to know what the run's verdicts rest on ([`noop`]).
    pub witness: Option<&'a Witness>,
}

/// A stage's current inputs and why it differs from the lock (empty: up to date).
struct Known {
    inputs: Inputs,
    reasons: Vec<DirtyReason>,
    /// What each dep held when hashed.
    deps: Vec<Content>,
}

/// The result of processing one stage.
struct StageResult {
    outcome: Outcome,
    reasons: Vec<DirtyReason>,
    error: Option<String>,
}

impl StageResult {
    fn failed(reasons: Vec<DirtyReason>, error: impl Into<String>) -> StageResult {
        StageResult {
            outcome: Outcome::Failed,
            reasons,
            error: Some(error.into()),
        }
    }
}

impl Runner<'_> {
    fn hasher(&self) -> Hasher<'_> {
        Hasher::new(&self.workspace.root, self.cache).witnessed(self.witness)
    }

    fn lock_entry(&self, name: &str) -> Option<Arc<LockEntry>> {
        self.lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .stage
            .get(name)
            .cloned()
    }

    /// What `run` would do, stage by stage in topological order, without
    /// changing anything. A stage below one that will change is stale too.
    pub fn plan(&self, selection: &BTreeSet<usize>, force: &Force) -> std::io::Result<Vec<Planned>> {
        let memo = FileMemo::default();
        let hasher = self.hasher().remembering(&memo);
        let mut decisions: BTreeMap<usize, Decision> = BTreeMap::new();
        let mut plan = Vec::new();
        for index in self.graph.order(selection) {
            let stage = &self.workspace.stages[index];
            if stage.frozen {
                decisions.insert(index, Decision::Frozen);
                plan.push(Planned {
                    stage: index,
                    decision: Decision::Frozen,
                    reasons: Vec::new(),
                });
                continue;
            }
            let inputs = freshness::inputs(&self.workspace.root, self.registry, &hasher, stage)?;
            let mut reasons = Vec::new();
            for upstream in self.graph.upstream(index) {
                if let Some(decision @ (Decision::Run | Decision::Restore)) = decisions.get(&upstream) {
                    reasons.push(DirtyReason::UpstreamStale {
                        stage: self.workspace.stages[upstream].name.clone(),
                        restored: *decision == Decision::Restore,
                    });
                }
            }
            if let Some(reason) = freshness::unconditional(stage, force) {
                reasons.insert(0, reason);
            }
            let own = freshness::dirty_reasons(&hasher, stage, self.lock_entry(&stage.name).as_deref(), &inputs)?;
            reasons.extend(own);
            let decision = if reasons.is_empty() {
                Decision::UpToDate
            } else if freshness::restorable(&reasons) && self.store.lookup_run(&inputs.fingerprint()).is_some() {
                Decision::Restore
            } else {
                Decision::Run
            };
            decisions.insert(index, decision);
            plan.push(Planned {
                stage: index,
                decision,
                reasons,
            });
        }
        Ok(plan)
    }

    /// Brings the selected stages up to date with up to `jobs` running at once.
    pub fn run(&self, selection: &BTreeSet<usize>, force: &Force, jobs: usize, keep_going: bool) -> Summary {
        let jobs = jobs.max(1);
        let mut summary = Summary::default();
        self.reporter.report(Event::RunStarted {
            stages: selection.len(),
        });
        let order = self.graph.order(selection);
        let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut waiting: BTreeMap<usize, usize> = order
            .iter()
            .map(|&s| {
                (
                    s,
                    self.graph.upstream(s).iter().filter(|u| selection.contains(u)).count(),
                )
            })
            .collect();
        // Ready stages keyed by their topological position, for a stable order.
        let mut ready: BTreeSet<(usize, usize)> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(s, _)| (position[s], *s))
            .collect();
        let mut finished: BTreeSet<usize> = BTreeSet::new();
        let mut blocked: BTreeSet<usize> = BTreeSet::new();
        let mut stop = false;

        let (job_sender, job_receiver) = mpsc::channel::<(usize, Option<Known>)>();
        let job_receiver = Mutex::new(job_receiver);
        let (result_sender, result_receiver) = mpsc::channel::<(usize, StageResult, std::time::Duration)>();
        std::thread::scope(|scope| {
            for _ in 0..jobs.min(order.len().max(1)) {
                let result_sender = result_sender.clone();
                let job_receiver = &job_receiver;
                scope.spawn(move || {
                    loop {
                        let next = job_receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok((index, known)) = next else { break };
                        let started = Instant::now();
                        let result = self.process(index, force, known);
                        if result_sender.send((index, result, started.elapsed())).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(result_sender);
            let mut running = 0;
            // Files hashed while no stage runs; emptied before one starts.
            let memo = FileMemo::default();
            loop {
                // Stages already up to date finish right here; only stale
                // ones go to a worker (a no-op run never leaves this thread).
                let mut done_here = None;
                while running < jobs && !stop {
                    let Some((_, index)) = ready.pop_first() else { break };
                    let known = self.precheck(&self.workspace.stages[index], force, (running == 0).then_some(&memo));
                    if known.as_ref().is_some_and(|k| k.reasons.is_empty()) {
                        let result = StageResult {
                            outcome: Outcome::UpToDate,
                            reasons: Vec::new(),
                            error: None,
                        };
                        done_here = Some((index, result, std::time::Duration::ZERO));
                        break;
                    }
                    memo.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    if job_sender.send((index, known)).is_err() {
                        break;
                    }
                    running += 1;
                }
                let (index, result, elapsed) = match done_here {
                    Some(done) => done,
                    None if running == 0 => break,
                    None => {
                        let Ok(received) = result_receiver.recv() else { break };
                        running -= 1;
                        received
                    }
                };
                finished.insert(index);
                let name = self.workspace.stages[index].name.clone();
                summary.add(&name, result.outcome);
                let failed = result.outcome == Outcome::Failed;
                self.reporter.report(Event::StageFinished {
                    stage: name,
                    outcome: result.outcome,
                    elapsed,
                    reasons: result.reasons.iter().map(ToString::to_string).collect(),
                    error: result.error,
                });
                if failed {
                    for below in self.graph.closure(&[index], true) {
                        if below != index && selection.contains(&below) {
                            blocked.insert(below);
                        }
                    }
                    stop |= !keep_going;
                } else {
                    for next in self.graph.downstream(index) {
                        if let Some(count) = waiting.get_mut(&next) {
                            *count -= 1;
                            if *count == 0 && !blocked.contains(&next) {
                                ready.insert((position[&next], next));
                            }
                        }
                    }
                }
                if self.interrupts.is_interrupted() {
                    stop = true;
                    summary.interrupted = true;
                }
            }
            drop(job_sender);
        });
        for index in order {
            if !finished.contains(&index) {
                let outcome = if blocked.contains(&index) {
                    Outcome::Skipped
                } else {
                    Outcome::Cancelled
                };
                let name = self.workspace.stages[index].name.clone();
                summary.add(&name, outcome);
                self.reporter.report(Event::StageFinished {
                    stage: name,
                    outcome,
                    elapsed: Default::default(),
                    reasons: Vec::new(),
                    error: None,
                });
            }
        }
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Nothing journaled, nothing to fold: a no-op run writes no lock.
        let files = self.workspace.layout().lock_files();
        if files.journal.exists()
            && let Err(error) = lock.compact(&files)
        {
            self.reporter.report(Event::Warning {
                stage: "(lock)".into(),
                message: format!("could not write Fabric.lock ({error}); the journal keeps the results"),
            });
        }
        drop(lock);
        self.hasher().settle();
        if let Err(error) = self.cache.save() {
            self.reporter.report(Event::Warning {
                stage: "(stat cache)".into(),
                message: format!("could not save .fabric/state: {error}"),
            });
        }
        self.reporter.report(Event::RunFinished {
            summary: summary.clone(),
        });
        summary
    }

    /// A recorded stage's current inputs and reasons, checked on the
    /// scheduling thread: up-to-date stages finish there, stale ones hand the
    /// result to their worker so nothing is hashed twice. `None` (frozen,
    /// forced, always run, never recorded, or an error) leaves it all to the
    /// worker. `memo` is given while no stage runs.
    fn precheck(&self, stage: &Stage, force: &Force, memo: Option<&FileMemo>) -> Option<Known> {
        if stage.frozen || freshness::unconditional(stage, force).is_some() {
            return None;
        }
        let entry = self.lock_entry(&stage.name)?;
        let hasher = match memo {
            Some(memo) => self.hasher().remembering(memo),
            None => self.hasher(),
        };
        let (inputs, deps) = freshness::hash_inputs(&self.workspace.root, self.registry, &hasher, stage).ok()?;
        let reasons = freshness::dirty_reasons(&hasher, stage, Some(&entry), &inputs).ok()?;
        Some(Known { inputs, reasons, deps })
    }

    /// Decides and does what one stage needs.
    fn process(&self, index: usize, force: &Force, known: Option<Known>) -> StageResult {
        let stage = &self.workspace.stages[index];
        match self.try_process(stage, force, known) {
            Ok(result) => result,
            Err(error) => StageResult::failed(Vec::new(), format!("{error:#}")),
        }
    }

    fn try_process(&self, stage: &Stage, force: &Force, known: Option<Known>) -> anyhow::Result<StageResult> {
        let hasher = self.hasher();
        let entry = self.lock_entry(&stage.name);
        if stage.frozen {
            return Ok(if entry.is_some() {
                StageResult {
                    outcome: Outcome::UpToDate,
                    reasons: Vec::new(),
                    error: None,
                }
            } else {
                StageResult::failed(
                    Vec::new(),
                    "the stage is frozen but has never run; set `frozen = false` to run it once",
                )
            });
        }
        let Known { inputs, reasons, deps } = match known {
            Some(known) => known,
            None => {
                let (inputs, deps) = freshness::hash_inputs(&self.workspace.root, self.registry, &hasher, stage)?;
                let reasons = match freshness::unconditional(stage, force) {
                    Some(reason) => vec![reason],
                    None => freshness::dirty_reasons(&hasher, stage, entry.as_deref(), &inputs)?,
                };
                Known { inputs, reasons, deps }
            }
        };
        let fingerprint = inputs.fingerprint();
        if reasons.is_empty() {
            return Ok(StageResult {
                outcome: Outcome::UpToDate,
                reasons,
                error: None,
            });
        }
        if freshness::restorable(&reasons)
            && let Some(record) = self.store.lookup_run(&fingerprint)
        {
            // Clear the old record first: an interrupted restore must not
            // leave the lock vouching for half-replaced outs.
            if entry.is_some() {
                self.record(&stage.name, None)?;
            }
            self.clearing(stage);
            match self.restore_outs(&record.outs) {
                Ok(()) => {
                    self.record(
                        &stage.name,
                        Some(LockEntry {
                            fingerprint,
                            inputs,
                            outs: record.outs,
                        }),
                    )?;
                    return Ok(StageResult {
                        outcome: Outcome::Restored,
                        reasons,
                        error: None,
                    });
                }
                Err(error) => self.reporter.report(Event::Warning {
                    stage: stage.name.clone(),
                    message: format!("cannot restore from the cache ({error}); running the stage instead"),
                }),
            }
        }
        self.execute(stage, inputs, &deps, reasons)
    }

    /// Notes that `stage`'s outs are about to be written anew.
    fn clearing(&self, stage: &Stage) {
        if let Some(witness) = self.witness {
            for out in stage.out_paths() {
                witness.clear(out.as_str());
            }
        }
    }

    fn restore_outs(&self, outs: &crate::lock::OutRecords) -> Result<(), RestoreError> {
        for (path, record) in outs {
            let path = crate::paths::RelPath::new(path).map_err(|e| RestoreError::Absent(e.to_string()))?;
            self.store.restore(&self.workspace.root, &path, record)?;
        }
        Ok(())
    }

    /// Runs the command or step, checks and stores the outs, records the stage.
    fn execute(
        &self,
        stage: &Stage,
        inputs: Inputs,
        deps: &[Content],
        reasons: Vec<DirtyReason>,
    ) -> anyhow::Result<StageResult> {
        self.reporter.report(Event::StageStarted {
            stage: stage.name.clone(),
            reasons: reasons.iter().map(ToString::to_string).collect(),
        });
        let root = &self.workspace.root;
        if self.lock_entry(&stage.name).is_some() {
            self.record(&stage.name, None)?;
        }
        self.clearing(stage);
        for out in stage.out_paths() {
            let path = out.under(root);
            remove_path(&path)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let layout = self.workspace.layout();
        match &stage.action {
            Action::Cmd(cmd) => {
                let logs = layout.logs();
                std::fs::create_dir_all(&logs)?;
                let log = logs.join(format!("{}.log", stage.name));
                let dir = stage.wdir.as_ref().map_or_else(|| root.clone(), |w| w.under(root));
                let job = Job {
                    stage: &stage.name,
                    cmd,
                    dir,
                    log: &log,
                    output: &|line| {
                        self.reporter.report(Event::Output {
                            stage: stage.name.clone(),
                            line: line.to_string(),
                        })
                    },
                };
                let status = self.executor.execute(&job, self.interrupts)?;
                if self.interrupts.is_interrupted() {
                    return Ok(StageResult::failed(reasons, "interrupted"));
                }
                if !status.success() {
                    let why = match status.code() {
                        Some(code) => format!("command exited with status {code}"),
                        None => "command was killed by a signal".to_string(),
                    };
                    let output = if log.exists() {
                        format!("log: {}\n{}", relative(&log, root), log_tail(&log, 20))
                    } else {
                        "no log: it printed nothing (or its log could not be written)".to_string()
                    };
                    return Ok(StageResult::failed(reasons, format!("{why}; {output}")));
                }
            }
            Action::Step { name, with } => {
                let step = self
                    .registry
                    .get(name)
                    .ok_or_else(|| anyhow::anyhow!("unknown step `{name}`"))?;
                let scratch_root = layout.scratch();
                std::fs::create_dir_all(&scratch_root)?;
                let scratch = tempfile::Builder::new()
                    .prefix(&format!("{}-", stage.name))
                    .tempdir_in(&scratch_root)?;
                let outs: Vec<PathBuf> = (0..stage.outs.len())
                    .map(|i| scratch.path().join(format!("out{i}")))
                    .collect();
                let context = StepContext {
                    root,
                    with,
                    deps: stage.deps.iter().map(|d| root.join(d.value.key())).collect(),
                    outs: outs.clone(),
                    declared: stage.out_paths().map(|p| p.to_string()).collect(),
                    upstream: self.upstream_entries(stage),
                    memo_path: layout.step_memo(&stage.name),
                    hasher: &self.hasher(),
                    dep_files: freshness::dep_files(root, stage, deps),
                    note: &|message| {
                        self.reporter.report(Event::Warning {
                            stage: stage.name.clone(),
                            message: message.to_string(),
                        })
                    },
                };
                if let Err(error) = step.run(&context) {
                    return Ok(StageResult::failed(reasons, format!("step `{name}` failed: {error:#}")));
                }
                for (temp, out) in outs.iter().zip(stage.out_paths()) {
                    if std::fs::symlink_metadata(temp).is_ok() {
                        std::fs::rename(temp, out.under(root))?;
                    }
                }
            }
        }
        let hasher = self.hasher();
        let mut records = crate::lock::OutRecords::new();
        for out in stage.out_paths() {
            let content = hasher.hash(out)?;
            if content == Content::Missing {
                return Ok(StageResult::failed(
                    reasons,
                    format!("declared out `{out}` was not created; make the stage write it or remove it from `outs`"),
                ));
            }
            if let Some(record) = self.store.save(root, out, &content)? {
                records.insert(out.to_string(), record);
            }
        }
        let fingerprint = inputs.fingerprint();
        self.store.record_run(&fingerprint, &records)?;
        self.record(
            &stage.name,
            Some(LockEntry {
                fingerprint,
                inputs,
                outs: records,
            }),
        )?;
        Ok(StageResult {
            outcome: Outcome::Ran,
            reasons,
            error: None,
        })
    }

    /// The lock entries of every stage upstream of `stage` (transitively).
    fn upstream_entries(&self, stage: &Stage) -> BTreeMap<String, Arc<LockEntry>> {
        let Some(index) = self.workspace.stages.iter().position(|s| s.name == stage.name) else {
            return BTreeMap::new();
        };
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.graph
            .closure(&[index], false)
            .into_iter()
            .filter(|i| *i != index)
            .filter_map(|i| {
                let name = &self.workspace.stages[i].name;
                lock.stage.get(name).map(|entry| (name.clone(), entry.clone()))
            })
            .collect()
    }

    /// Sets or clears a stage's lock entry: journaled now, folded into
    /// `Fabric.lock` when the run ends.
    fn record(&self, name: &str, entry: Option<LockEntry>) -> std::io::Result<()> {
        let mut lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        Lock::journal(&self.workspace.layout().lock_files().journal, name, entry.as_ref())?;
        match entry {
            Some(entry) => lock.stage.insert(name.to_string(), Arc::new(entry)),
            None => lock.stage.remove(name),
        };
        Ok(())
    }
}

fn relative(path: &Path, root: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// The last `lines` lines of a log file.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
