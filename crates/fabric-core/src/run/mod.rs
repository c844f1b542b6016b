//! Running stages: the planner ([`plan`]: what is stale and why), the
//! scheduler ([`Runner`]: stale stages in parallel, each as soon as its
//! inputs are ready), and the executors ([`executor`]: where commands run).
//!
//! Record only after success: a stage's lock entry is removed before it
//! executes and written back (atomically, with its outs stored) only after
//! it succeeded, so an interrupted run never leaves a stage looking fresh.

pub mod executor;
pub mod freshness;
pub mod group;
pub mod noop;
pub mod plan;
pub mod step;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::fingerprint::{DirtyReason, Inputs};
use crate::hash::{Content, FileMemo};
use crate::lock::{Lock, LockEntry};
use crate::manifest::{Action, Stage};
use crate::report::{Event, Outcome, Reporter, Summary};
use crate::store::{RestoreError, remove_path};
use executor::{Executor, Job, JobEnd, JobEvent, JobId};
pub use plan::{Decision, Planned, Planner, Verdict};
use step::StepJob;

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

/// Carries out a plan: each selected stage, as soon as the stages above it
/// are done, is decided by the [`Planner`] (once: its inputs are final by
/// then) and then finished, restored, or run — a command through the
/// [`Executor`], a built-in step in-process.
pub struct Runner<'a> {
    planner: Planner<'a>,
    executor: &'a dyn Executor,
    reporter: &'a dyn Reporter,
    interrupted: AtomicBool,
    /// Built-in steps go to the executor as `fabric` processes.
    step_processes: bool,
}

/// The result of processing one stage.
struct StageResult {
    outcome: Outcome,
    reasons: Vec<DirtyReason>,
    error: Option<String>,
}

impl StageResult {
    fn finished(outcome: Outcome, reasons: Vec<DirtyReason>) -> StageResult {
        StageResult {
            outcome,
            reasons,
            error: None,
        }
    }

    fn failed(reasons: Vec<DirtyReason>, error: impl Into<String>) -> StageResult {
        StageResult {
            outcome: Outcome::Failed,
            reasons,
            error: Some(error.into()),
        }
    }
}

/// A stage whose command is with the executor.
struct Pending {
    inputs: Inputs,
    reasons: Vec<DirtyReason>,
    log: PathBuf,
    /// How the executor names the job (`Slurm job 42`), if it does.
    job: Option<String>,
}

/// The stages whose commands are with the executor, by job.
type Submitted = Mutex<HashMap<JobId, (usize, Pending)>>;

/// What a worker did with a stage.
enum Worked {
    /// The stage is done.
    Finished(StageResult),
    /// Its command is to be submitted.
    Submit(Box<(Job, Pending)>),
}

/// Work for the worker threads.
/// Bytes of deps or outs up to which a stage's bookkeeping is done on the
/// scheduling thread rather than handed to a worker.
const LIGHT: u64 = 64 * 1024;

/// Deps up to which a command stage counts as light.
const LIGHT_FILES: usize = 16;

enum Task {
    /// Decide (unless decided) and carry out what stage `.0` needs.
    Process(usize, Option<Verdict>),
    /// Check and record the outs of a stage whose command ended.
    Collect(usize, Pending, JobEnd),
}

impl<'a> Runner<'a> {
    /// A runner that carries out what `planner` decides, running commands
    /// on `executor` and telling `reporter`.
    pub fn new(planner: Planner<'a>, executor: &'a dyn Executor, reporter: &'a dyn Reporter) -> Runner<'a> {
        Runner {
            planner,
            executor,
            reporter,
            interrupted: AtomicBool::new(false),
            step_processes: false,
        }
    }

    /// The runner handing built-in steps to the executor as `fabric`
    /// processes ([`step::StepJob`]) rather than running them in-process,
    /// as a cluster executor needs.
    pub fn with_step_processes(self, step_processes: bool) -> Runner<'a> {
        Runner { step_processes, ..self }
    }

    /// The planner, with the lock as the run leaves it.
    pub fn planner(&self) -> &Planner<'a> {
        &self.planner
    }

    /// Stops the run (Ctrl-C, SIGTERM): no stage starts any more, running
    /// commands are cancelled, and nothing is recorded for them.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.executor.cancel_all();
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Brings the selected stages up to date with up to `jobs` of them in
    /// progress at once.
    pub fn run(&self, selection: &BTreeSet<usize>, force: &Force, jobs: usize, keep_going: bool) -> Summary {
        let jobs = jobs.max(1);
        let graph = self.planner.graph;
        let stages = &self.planner.workspace.stages;
        let mut summary = Summary::default();
        self.reporter.report(Event::RunStarted {
            stages: selection.len(),
        });
        let order = graph.order(selection);
        let position: BTreeMap<usize, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        let mut waiting: BTreeMap<usize, usize> = order
            .iter()
            .map(|&s| (s, graph.upstream(s).iter().filter(|u| selection.contains(u)).count()))
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

        let (task_sender, task_receiver) = mpsc::channel::<Task>();
        let task_receiver = Mutex::new(task_receiver);
        let (sender, results) = mpsc::channel::<(usize, StageResult)>();
        // Commands with the executor, by job.
        let submitted = Submitted::default();
        std::thread::scope(|scope| {
            for _ in 0..self.workers(&order, jobs) {
                let sender = sender.clone();
                let (task_receiver, submitted) = (&task_receiver, &submitted);
                scope.spawn(move || {
                    loop {
                        let next = task_receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok(task) = next else { break };
                        if let Some(result) = self.work(task, force, submitted) {
                            if sender.send(result).is_err() {
                                break;
                            }
                            // The scheduling thread may be waiting for jobs.
                            self.executor.wake();
                        }
                    }
                });
            }
            drop(sender);
            // Stages taken up and not finished (with a worker or the executor).
            let mut busy = 0;
            let mut started: HashMap<usize, Instant> = HashMap::new();
            // Files hashed while no stage is busy; emptied before one starts.
            let memo = FileMemo::default();
            loop {
                // Stages already up to date finish right here; only stale
                // ones go to a worker (a no-op run never leaves this thread).
                let mut done_here = None;
                while busy < jobs && !stop {
                    let Some((_, index)) = ready.pop_first() else { break };
                    let verdict = self.precheck(index, force, (busy == 0).then_some(&memo));
                    if verdict.as_ref().is_some_and(|v| v.decision == Decision::UpToDate) {
                        done_here = Some((index, StageResult::finished(Outcome::UpToDate, Vec::new())));
                        break;
                    }
                    memo.lock().unwrap_or_else(PoisonError::into_inner).clear();
                    started.insert(index, Instant::now());
                    busy += 1;
                    if self.is_light(&stages[index]) {
                        // A command over a few small files: deciding and
                        // submitting it here costs less than a hand-over.
                        if let Some(result) = self.work(Task::Process(index, verdict), force, &submitted) {
                            done_here = Some(result);
                            break;
                        }
                    } else if task_sender.send(Task::Process(index, verdict)).is_err() {
                        break;
                    }
                }
                let done = match done_here {
                    Some(done) => Some(done),
                    None if busy == 0 => break,
                    None => results.try_recv().ok(),
                };
                let done = match done {
                    Some(done) => Some(done),
                    // Nothing finished: wait for the executor's jobs (a
                    // worker that finishes a stage wakes this wait).
                    None => self.attend_jobs(&submitted, &task_sender),
                };
                let Some((index, result)) = done else { continue };
                finished.insert(index);
                let elapsed = match started.remove(&index) {
                    Some(at) => {
                        busy -= 1;
                        at.elapsed()
                    }
                    // Up to date, found so on this thread.
                    None => Duration::ZERO,
                };
                let name = stages[index].name.clone();
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
                    for below in graph.closure(&[index], true) {
                        if below != index && selection.contains(&below) {
                            blocked.insert(below);
                        }
                    }
                    stop |= !keep_going;
                } else {
                    for next in graph.downstream(index) {
                        if let Some(count) = waiting.get_mut(&next) {
                            *count -= 1;
                            if *count == 0 && !blocked.contains(&next) {
                                ready.insert((position[&next], next));
                            }
                        }
                    }
                }
                if self.is_interrupted() {
                    stop = true;
                    summary.interrupted = true;
                }
            }
            drop(task_sender);
        });
        for index in order {
            if !finished.contains(&index) {
                let outcome = if blocked.contains(&index) {
                    Outcome::Skipped
                } else {
                    Outcome::Cancelled
                };
                let name = stages[index].name.clone();
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
        let lock = self.planner.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Nothing journaled, nothing to fold: a no-op run writes no lock.
        let files = self.planner.workspace.layout().lock_files();
        if files.journal.exists()
            && let Err(error) = lock.compact(&files)
        {
            self.reporter.report(Event::Warning {
                stage: "(lock)".into(),
                message: format!("could not write Fabric.lock ({error}); the journal keeps the results"),
            });
        }
        drop(lock);
        self.planner.hasher().settle();
        if let Err(error) = self.planner.cache.save() {
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

    /// How many worker threads a run of the stages in `order` needs with
    /// `jobs` in flight: one per built-in step run in-process (it holds its
    /// worker), else no more than cores (workers hash and store; an
    /// executor's jobs, however many, need none).
    fn workers(&self, order: &[usize], jobs: usize) -> usize {
        let stages = &self.planner.workspace.stages;
        let in_process = order
            .iter()
            .filter(|&&index| {
                let stage = &stages[index];
                matches!(stage.action, Action::Step { .. })
                    && !self.step_processes
                    && !self.executor.is_remote(&stage.name)
            })
            .count();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        jobs.min(order.len()).min(cores.max(in_process)).max(1)
    }

    /// Does a worker's task: the stage's result, unless its command went
    /// to the executor.
    fn work(&self, task: Task, force: &Force, submitted: &Submitted) -> Option<(usize, StageResult)> {
        match task {
            Task::Process(index, verdict) => match self.process(index, force, verdict) {
                Worked::Finished(result) => Some((index, result)),
                Worked::Submit(submit) => self.submit(index, *submit, submitted),
            },
            Task::Collect(index, pending, end) => Some((index, self.collect_command(index, pending, end))),
        }
    }

    /// Waits for the executor's next event and handles it: passes on what
    /// a command printed; collects the outs of one that ended, right here
    /// when they are a few small files (cheaper than a hand-over to a
    /// worker), else on a worker.
    fn attend_jobs(&self, submitted: &Submitted, tasks: &mpsc::Sender<Task>) -> Option<(usize, StageResult)> {
        let stages = &self.planner.workspace.stages;
        match self.executor.next_event() {
            JobEvent::Output(id, line) => {
                let submitted = submitted.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some((index, _)) = submitted.get(&id) {
                    self.reporter.report(Event::Output {
                        stage: stages[*index].name.clone(),
                        line,
                    });
                }
                None
            }
            JobEvent::Ended(id, end) => {
                let (index, pending) = submitted.lock().unwrap_or_else(PoisonError::into_inner).remove(&id)?;
                if self.outs_are_light(&stages[index]) {
                    return Some((index, self.collect_command(index, pending, end)));
                }
                let _ = tasks.send(Task::Collect(index, pending, end));
                None
            }
            JobEvent::Woken => None,
        }
    }

    /// Whether a stage's outs are files of [`LIGHT`] bytes or less in all
    /// (or absent): hashing and storing them costs less than waking a worker.
    fn outs_are_light(&self, stage: &Stage) -> bool {
        self.light_files(stage.out_paths())
    }

    /// Whether stage is a command whose deps and outs are a few small files:
    /// deciding and submitting it costs less than waking a worker.
    fn is_light(&self, stage: &Stage) -> bool {
        let mut deps = Vec::with_capacity(stage.deps.len());
        for dep in &stage.deps {
            match &dep.value {
                crate::manifest::Dep::Path(path) => deps.push(path),
                crate::manifest::Dep::Glob { .. } => return false,
            }
        }
        matches!(stage.action, crate::manifest::Action::Cmd(_))
            && deps.len() <= LIGHT_FILES
            && self.light_files(deps)
            && self.outs_are_light(stage)
    }

    /// Whether `paths` are files (or absent) of [`LIGHT`] bytes or less in all.
    fn light_files<'p>(&self, paths: impl IntoIterator<Item = &'p crate::paths::RelPath>) -> bool {
        let root = &self.planner.workspace.root;
        let mut total = 0;
        for path in paths {
            match std::fs::symlink_metadata(path.under(root)) {
                Ok(meta) if meta.is_file() => total += meta.len(),
                Ok(_) => return false,
                Err(_) => {}
            }
        }
        total <= LIGHT
    }

    /// Hands a stage's command to the executor; the stage's result when
    /// it could not start.
    fn submit(
        &self,
        index: usize,
        (job, mut pending): (Job, Pending),
        submitted: &Submitted,
    ) -> Option<(usize, StageResult)> {
        // Held while submitting: the job's end cannot be looked up before
        // the job is noted.
        let mut submitted = submitted.lock().unwrap_or_else(PoisonError::into_inner);
        match self.executor.submit(job) {
            Ok(id) => {
                pending.job = self.executor.describe(id);
                submitted.insert(id, (index, pending));
                None
            }
            Err(error) => {
                let error = if self.is_interrupted() {
                    "interrupted".to_string()
                } else {
                    format!("cannot start the command: {error}")
                };
                Some((index, StageResult::failed(pending.reasons, error)))
            }
        }
    }

    /// The verdict on a recorded stage, reached on the scheduling thread so
    /// that up-to-date stages finish there; a stale one hands it to its
    /// worker, so nothing is hashed twice. `None` (frozen, forced, always
    /// run, never recorded, or an error) leaves deciding to the worker,
    /// where hashing a stage's deps does not hold up the others. `memo` is
    /// given while no stage is busy.
    fn precheck(&self, index: usize, force: &Force, memo: Option<&FileMemo>) -> Option<Verdict> {
        let stage = &self.planner.workspace.stages[index];
        if stage.frozen || freshness::unconditional(stage, force).is_some() {
            return None;
        }
        self.planner.lock_entry(&stage.name)?;
        let hasher = match memo {
            Some(memo) => self.planner.hasher().remembering(memo),
            None => self.planner.hasher(),
        };
        self.planner.decide(index, force, Vec::new(), &hasher).ok()
    }

    /// Decides (unless decided) and carries out what stage `index` needs.
    fn process(&self, index: usize, force: &Force, verdict: Option<Verdict>) -> Worked {
        match self.try_process(index, force, verdict) {
            Ok(worked) => worked,
            Err(error) => Worked::Finished(StageResult::failed(Vec::new(), format!("{error:#}"))),
        }
    }

    fn try_process(&self, index: usize, force: &Force, verdict: Option<Verdict>) -> anyhow::Result<Worked> {
        let stage = &self.planner.workspace.stages[index];
        let verdict = match verdict {
            Some(verdict) => verdict,
            None => self.planner.decide(index, force, Vec::new(), &self.planner.hasher())?,
        };
        let Verdict {
            decision,
            reasons,
            inputs,
            deps,
            cached,
        } = verdict;
        let (decision, inputs) = match (decision, inputs) {
            (Decision::Frozen, _) | (_, None) => {
                return Ok(Worked::Finished(if self.planner.lock_entry(&stage.name).is_some() {
                    StageResult::finished(Outcome::UpToDate, Vec::new())
                } else {
                    StageResult::failed(
                        Vec::new(),
                        "the stage is frozen but has never run; set `frozen = false` to run it once",
                    )
                }));
            }
            (decision, Some(inputs)) => (decision, inputs),
        };
        match (decision, cached) {
            (Decision::UpToDate, _) => return Ok(Worked::Finished(StageResult::finished(Outcome::UpToDate, reasons))),
            (Decision::Restore, Some(record)) => {
                // Clear the old record first: an interrupted restore must not
                // leave the lock vouching for half-replaced outs.
                if self.planner.lock_entry(&stage.name).is_some() {
                    self.record(&stage.name, None)?;
                }
                self.clearing(stage);
                match self.restore_outs(&record.outs) {
                    Ok(()) => {
                        self.record(
                            &stage.name,
                            Some(LockEntry {
                                fingerprint: inputs.fingerprint(),
                                inputs,
                                outs: record.outs,
                            }),
                        )?;
                        return Ok(Worked::Finished(StageResult::finished(Outcome::Restored, reasons)));
                    }
                    Err(error) => self.reporter.report(Event::Warning {
                        stage: stage.name.clone(),
                        message: format!("cannot restore from the cache ({error}); running the stage instead"),
                    }),
                }
            }
            _ => {}
        }
        self.start(stage, inputs, &deps, reasons)
    }

    /// Notes that `stage`'s outs are about to be written anew.
    fn clearing(&self, stage: &Stage) {
        if let Some(witness) = self.planner.witness {
            for out in stage.out_paths() {
                witness.clear(out.as_str());
            }
        }
    }

    fn restore_outs(&self, outs: &crate::lock::OutRecords) -> Result<(), RestoreError> {
        for (path, record) in outs {
            let path = crate::paths::RelPath::new(path).map_err(|e| RestoreError::Absent(e.to_string()))?;
            self.planner
                .store
                .restore(&self.planner.workspace.root, &path, record)?;
        }
        Ok(())
    }

    /// Clears the stage's record and outs, then runs its step in-process
    /// or hands back its command (or its step as a `fabric` process) for
    /// the executor.
    fn start(
        &self,
        stage: &Stage,
        inputs: Inputs,
        deps: &[Content],
        reasons: Vec<DirtyReason>,
    ) -> anyhow::Result<Worked> {
        self.reporter.report(Event::StageStarted {
            stage: stage.name.clone(),
            reasons: reasons.iter().map(ToString::to_string).collect(),
        });
        let root = &self.planner.workspace.root;
        if self.planner.lock_entry(&stage.name).is_some() {
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
        let cmd = match &stage.action {
            Action::Cmd(cmd) => cmd.clone(),
            Action::Step { .. } if self.step_processes || self.executor.is_remote(&stage.name) => StepJob {
                root: root.clone(),
                stage: stage.clone(),
                upstream: self.upstream_entries(stage),
                fingerprint: inputs.fingerprint(),
            }
            .command()?,
            Action::Step { .. } => {
                let note = |message: &str| {
                    self.reporter.report(Event::Warning {
                        stage: stage.name.clone(),
                        message: message.to_string(),
                    })
                };
                let dep_files = freshness::dep_files(root, stage, deps);
                let hasher = self.planner.hasher();
                let upstream = self.upstream_entries(stage);
                let interrupted = || self.is_interrupted();
                let ran = step::run(
                    self.planner.registry,
                    root,
                    stage,
                    upstream,
                    &hasher,
                    dep_files,
                    &note,
                    &interrupted,
                );
                if let Err(error) = ran {
                    let error = if self.is_interrupted() {
                        crate::steps::INTERRUPTED.to_string()
                    } else {
                        format!("{error:#}")
                    };
                    return Ok(Worked::Finished(StageResult::failed(reasons, error)));
                }
                return Ok(Worked::Finished(self.collect(stage, inputs, reasons)?));
            }
        };
        let logs = self.planner.workspace.layout().logs();
        std::fs::create_dir_all(&logs)?;
        let log = logs.join(format!("{}.log", stage.name));
        let job = Job {
            stage: stage.name.clone(),
            cmd,
            dir: stage.wdir.as_ref().map_or_else(|| root.clone(), |w| w.under(root)),
            env: stage
                .env
                .iter()
                .filter_map(|name| Some((name.clone(), std::env::var_os(name)?)))
                .collect(),
            outs: stage.out_paths().map(|out| out.under(root)).collect(),
            log: log.clone(),
            resources: stage.resources.clone(),
        };
        Ok(Worked::Submit(Box::new((
            job,
            Pending {
                inputs,
                reasons,
                log,
                job: None,
            },
        ))))
    }

    /// Judges how a stage's command ended and, when it succeeded, collects
    /// its outs.
    fn collect_command(&self, index: usize, pending: Pending, end: JobEnd) -> StageResult {
        let stage = &self.planner.workspace.stages[index];
        let Pending {
            inputs,
            reasons,
            log,
            job,
        } = pending;
        if self.is_interrupted() {
            return StageResult::failed(reasons, "interrupted");
        }
        if !end.success() {
            let root = &self.planner.workspace.root;
            let output = if log.exists() {
                format!("log: {}\n{}", relative(&log, root), log_tail(&log, 20))
            } else if job.is_some() {
                format!(
                    "no log at {}: the job ran where this workspace is not visible? The cluster's nodes must share the workspace's filesystem (outs and logs land there)",
                    relative(&log, root)
                )
            } else {
                "no log: it printed nothing (or its log could not be written)".to_string()
            };
            let job = job.map(|job| format!(" ({job})")).unwrap_or_default();
            return StageResult::failed(reasons, format!("{end}{job}; {output}"));
        }
        match self.collect(stage, inputs, reasons.clone()) {
            Ok(result) => result,
            Err(error) => StageResult::failed(reasons, format!("{error:#}")),
        }
    }

    /// Checks and stores the outs the stage made, and records the stage.
    fn collect(&self, stage: &Stage, inputs: Inputs, reasons: Vec<DirtyReason>) -> anyhow::Result<StageResult> {
        let root = &self.planner.workspace.root;
        let hasher = self.planner.hasher();
        let mut records = crate::lock::OutRecords::new();
        for out in stage.out_paths() {
            let content = hasher.hash(out)?;
            if content == Content::Missing {
                return Ok(StageResult::failed(
                    reasons,
                    format!("declared out `{out}` was not created; make the stage write it or remove it from `outs`"),
                ));
            }
            if let Some(record) = self.planner.store.save(root, out, &content)? {
                records.insert(out.to_string(), record);
            }
        }
        let fingerprint = inputs.fingerprint();
        self.planner.store.record_run(&fingerprint, &records)?;
        self.record(
            &stage.name,
            Some(LockEntry {
                fingerprint,
                inputs,
                outs: records,
            }),
        )?;
        Ok(StageResult::finished(Outcome::Ran, reasons))
    }

    /// The lock entries of every stage upstream of `stage` (transitively).
    fn upstream_entries(&self, stage: &Stage) -> BTreeMap<String, Arc<LockEntry>> {
        let stages = &self.planner.workspace.stages;
        let Some(index) = stages.iter().position(|s| s.name == stage.name) else {
            return BTreeMap::new();
        };
        let lock = self.planner.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.planner
            .graph
            .closure(&[index], false)
            .into_iter()
            .filter(|i| *i != index)
            .filter_map(|i| {
                let name = &stages[i].name;
                lock.stage.get(name).map(|entry| (name.clone(), entry.clone()))
            })
            .collect()
    }

    /// Sets or clears a stage's lock entry: journaled now, folded into
    /// `Fabric.lock` when the run ends.
    fn record(&self, name: &str, entry: Option<LockEntry>) -> std::io::Result<()> {
        let mut lock = self.planner.lock.lock().unwrap_or_else(PoisonError::into_inner);
        Lock::journal(
            &self.planner.workspace.layout().lock_files().journal,
            name,
            entry.as_ref(),
        )?;
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
