//! `fabric run`.

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use std::collections::BTreeSet;
use std::sync::Mutex;

use fabric_core::layout::Layout;

use super::{Globals, Session, UsageError, remote, reporter};
use fabric_core::diagnostic::Diagnostic;
use fabric_core::hash::Witness;
use fabric_core::manifest::Action;
use fabric_core::manifest::ExecutorKind;
use fabric_core::report::{Event, Outcome, Reporter, Summary};
use fabric_core::run::executor::{Executor, LocalExecutor, SlurmExecutor};
use fabric_core::run::{Decision, Force, Planner, Runner, noop};
use fabric_core::stat_cache::now_ns;
use fabric_core::store::{Reach, Store, TieredStorage};
use std::sync::Arc;

/// Arguments of `fabric run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stages or pipelines to bring up to date (default: all), with what they need.
    targets: Vec<String>,
    /// Print the plan (run / restore / up to date, and why) without doing it;
    /// `--dry-run false` runs (as the Studio brief writes it), and a bare
    /// `--dry-run` (or `-n`) may be followed by targets.
    #[arg(
        long,
        short = 'n',
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    dry_run: Option<bool>,
    /// Run even if up to date: `--force` for every selected stage,
    /// `--force=STAGE` for one (repeatable).
    #[arg(long, value_name = "STAGE", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    force: Vec<String>,
    /// Stages to run at once (default: `[workspace] jobs`, or the number of cores).
    #[arg(short, long, value_name = "N")]
    jobs: Option<usize>,
    /// After a failure, finish the stages that do not depend on it.
    #[arg(short, long)]
    keep_going: bool,
    /// Select the targets and everything downstream of them (not upstream).
    #[arg(long)]
    downstream: bool,
    /// Override a parameter for this run: `-P seed=7`, or as an option:
    /// `--seed 7` (`--snapshots-dir DIR` sets `snapshots_dir`).
    #[arg(short = 'P', value_name = "NAME=VALUE")]
    param: Vec<String>,
    /// Print events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Print only failures.
    #[arg(short, long, conflicts_with = "verbose")]
    quiet: bool,
    /// Print the reasons for each decision and the up-to-date stages too.
    #[arg(short, long)]
    verbose: bool,
    /// Do not show what commands print while they run (it stays in
    /// .fabric/logs/STAGE.log, and is shown when a command fails).
    #[arg(long)]
    no_stream: bool,
    /// If another run holds the workspace, wait for it instead of failing.
    #[arg(long)]
    wait: bool,
    /// Run built-in steps as `fabric` processes through the executor, as a
    /// cluster executor does, instead of in-process (the same outs, the
    /// same memo; in-process is faster on one machine).
    #[arg(long)]
    step_processes: bool,
    /// Where stages run: `local` processes, or jobs of the `slurm` cluster
    /// the Slurm commands on PATH reach (default: `[workspace] executor`,
    /// else local). A stage with `executor = "local"` stays local.
    #[arg(long, value_name = "local|slurm")]
    executor: Option<ExecutorKind>,
    /// Look in the remote cache (`[workspace.remote]`) before running a
    /// stage: what another machine already ran is restored, not run again.
    /// A remote that does not answer is skipped with a warning.
    #[arg(long)]
    pull: bool,
    /// After a successful run, upload what the selected stages recorded to
    /// the remote cache.
    #[arg(long)]
    push: bool,
    /// A declared param written as an option (`--snapshots-dir DIR` sets
    /// `snapshots_dir`); filled in from the command line, not typed.
    #[arg(long, hide = true, value_name = "NAME=VALUE")]
    param_flag: Vec<String>,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let started = now_ns();
    let dry_run = args.dry_run.unwrap_or(false);
    // A real run holds the workspace before it reads anything, so that a run
    // it waited for is seen.
    let root = globals.root()?;
    let guard = if dry_run {
        None
    } else {
        Some(super::lock_workspace(&root, args.wait)?)
    };
    let request =
        (!dry_run && args.force.is_empty() && !args.push).then(|| noop::Request::new(&root, &request_args(&args)));
    if let Some(request) = request
        && let Some(stages) = noop::recall(&root, request, &super::registry())
    {
        let reporter = reporter(args.verbose, args.quiet, args.json, !args.no_stream);
        report_up_to_date(reporter.as_ref(), stages);
        return Ok(ExitCode::SUCCESS);
    }
    let lock_files = [Layout::LOCK, Layout::JOURNAL].map(|path| noop::look_now(&root, path));

    let mut session = Session::open_with_flags(globals, &args.param, &args.param_flag)?;
    let (pull, push) = session
        .workspace
        .remote
        .as_ref()
        .map_or((args.pull, args.push), |r| (args.pull || r.pull, args.push || r.push));
    let pulling = if pull && !dry_run {
        pull_through_remote(&mut session)?
    } else {
        None
    };
    let selection = session.select(&args.targets, args.downstream)?;
    let force = if args.force.iter().any(String::is_empty) {
        Force::All
    } else if args.force.is_empty() {
        Force::Nothing
    } else {
        let mut stages = BTreeSet::new();
        for name in &args.force {
            let named = session.named(name);
            if named.is_empty() {
                return Err(UsageError::from(Diagnostic::new(format!("--force={name}: no such stage"))).into());
            }
            stages.extend(named.into_iter().map(|i| session.workspace.stages[i].name.clone()));
        }
        Force::Stages(stages)
    };
    let reporter = Watching::new(reporter(args.verbose, args.quiet, args.json, !args.no_stream));
    let witness = Witness::default();
    let planner = session.planner()?.witnessed(request.map(|_| &witness));

    if dry_run {
        let plan = planner.plan(&selection, &force)?;
        for planned in plan {
            let stage = &session.workspace.stages[planned.stage];
            let word = match planned.decision {
                Decision::UpToDate => "up to date",
                Decision::Restore => "restore",
                Decision::Run => "run",
                Decision::Frozen => "frozen",
            };
            let why: Vec<String> = planned.reasons.iter().map(ToString::to_string).collect();
            if why.is_empty() {
                println!("{word:<11} {}", stage.name);
            } else {
                println!("{word:<11} {}: {}", stage.name, why.join("; "));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }

    forget_undeclared_stages(&session, &planner)?;
    let local = match &guard {
        Some(run_lock) => LocalExecutor::holding(run_lock)?,
        None => LocalExecutor::new()?,
    };
    let executor = executor(&session, &selection, args.executor, local)?;
    let runner = Runner::new(planner, executor.as_ref(), &reporter).with_step_processes(args.step_processes);
    let jobs = args
        .jobs
        .filter(|j| *j > 0)
        .or(Some(session.workspace.jobs).filter(|j| *j > 0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));

    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = signals.handle();
    let summary = std::thread::scope(|scope| {
        let runner = &runner;
        scope.spawn(move || {
            // Keep listening until the handle closes: the iterator owns the
            // wake-up pipe that `close` writes to.
            for _ in signals.forever() {
                runner.interrupt();
            }
        });
        let summary = runner.run(&selection, &force, jobs, args.keep_going);
        handle.close();
        summary
    });
    if let Some(failure) = pulling.as_ref().and_then(|tiers| tiers.far_failure()) {
        eprintln!(
            "warning: the remote cache stopped answering during the run ({failure}); what it would have restored ran instead"
        );
    }
    // Pushed before the memo is kept: a run whose push failed is not one
    // the next run may skip.
    let succeeded = !summary.interrupted && summary.failed == 0 && summary.skipped == 0;
    if push && succeeded {
        let (remote, _) = remote::open(&session)?;
        remote::push_recorded(&session, remote, &selection)?;
    }
    if let Some(request) = request {
        let lock_files = match reporter.verdict() {
            // The lock as this run found it, or as it left it.
            Verdict::UpToDate(stages) => Some((stages, lock_files)),
            Verdict::Built if !memorable(&session, &selection) => None,
            Verdict::Built => Some((
                order_names(&session, &selection),
                [Layout::LOCK, Layout::JOURNAL].map(|path| noop::look_now(&root, path)),
            )),
            Verdict::Acted => None,
        };
        // Only a run that can keep a memo sorts out what it saw.
        let kept = match lock_files.and_then(|kept| Some((kept, noop::settled(witness.into_sightings())?))) {
            Some(((stages, lock_files), mut seen)) => {
                seen.extend(lock_files);
                noop::remember(&root, request, started, stages, grounds(&session, &selection), seen)
            }
            None => noop::forget(&root),
        };
        if let Err(error) = kept {
            eprintln!("warning: could not keep .fabric/noop ({error}); the next run plans as usual");
        }
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.failed > 0 || summary.skipped > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Puts the remote cache behind the session's store, so that stages are
/// restored from it; a remote that does not answer is left out with a
/// warning, and the run goes on without it.
fn pull_through_remote(session: &mut Session) -> anyhow::Result<Option<Arc<TieredStorage>>> {
    let (remote, _) = remote::open(session)?;
    if let Err(error) = remote.probe() {
        eprintln!("warning: {error}\n  running without the remote cache");
        return Ok(None);
    }
    let reach = Reach {
        pull: true,
        push: false,
    };
    let tiers = remote::tiers(session, remote, reach);
    session.store = Store::tiered(tiers.clone());
    Ok(Some(tiers))
}

/// What of the command line can change a run's verdict.
fn request_args(args: &Args) -> Vec<String> {
    let targets = args.targets.iter().map(|t| format!("target {t}"));
    let params = args.param.iter().map(|p| format!("-P {p}"));
    let flags = args.param_flag.iter().map(|p| format!("--{p}"));
    let downstream = args.downstream.then(|| "--downstream".to_string());
    targets.chain(params).chain(flags).chain(downstream).collect()
}

/// What the selected stages' fingerprints read besides paths: the
/// environment variables they declare and the facts of their steps; and the
/// manifest files they were loaded from.
fn grounds(session: &Session, selection: &BTreeSet<usize>) -> noop::Grounds {
    let stages = || selection.iter().map(|i| &session.workspace.stages[*i]);
    let env: BTreeSet<&String> = stages().flat_map(|s| &s.env).collect();
    let steps: BTreeSet<&String> = stages()
        .filter_map(|s| match &s.action {
            Action::Step { name, .. } => Some(name),
            Action::Cmd(_) => None,
        })
        .collect();
    noop::Grounds {
        observed: session.workspace.observed.clone(),
        env: env
            .into_iter()
            .map(|name| (name.clone(), noop::Grounds::env_value(name)))
            .collect(),
        facts: steps
            .into_iter()
            .filter_map(|name| {
                let facts = noop::Grounds::step_facts(&session.registry, name, &session.workspace.root)?;
                Some((name.clone(), facts))
            })
            .collect(),
    }
}

/// True when a build of `selection` can keep a memo: no stage in it is
/// frozen (the next run reports it when a worker gets to it, in no fixed
/// order) or always runs.
fn memorable(session: &Session, selection: &BTreeSet<usize>) -> bool {
    selection.iter().all(|&index| {
        let stage = &session.workspace.stages[index];
        !stage.frozen && !stage.always_run
    })
}

/// The stages of `selection` in the order a run that finds them all up to
/// date reports them: the topological order the scheduler works in.
fn order_names(session: &Session, selection: &BTreeSet<usize>) -> Vec<String> {
    session
        .graph
        .order(selection)
        .into_iter()
        .map(|index| session.workspace.stages[index].name.clone())
        .collect()
}

/// Reports `stages` as found up to date, as a run that planned would.
fn report_up_to_date(reporter: &dyn Reporter, stages: Vec<String>) {
    reporter.report(Event::RunStarted { stages: stages.len() });
    let mut summary = Summary::default();
    for stage in stages {
        summary.add(&stage, Outcome::UpToDate);
        reporter.report(Event::StageFinished {
            stage,
            outcome: Outcome::UpToDate,
            elapsed: Default::default(),
            reasons: Vec::new(),
            error: None,
        });
    }
    reporter.report(Event::RunFinished { summary });
}

/// Passes events on, noting what the run came to.
struct Watching {
    inner: Box<dyn Reporter>,
    seen: Mutex<Seen>,
}

/// What a run came to, as its events tell.
#[derive(Default)]
struct Seen {
    /// Stages reported up to date, in order.
    up_to_date: Vec<String>,
    /// A stage ran.
    built: bool,
    /// Anything else happened: a stage was restored, failed or was not
    /// run, a warning was given, the run was interrupted.
    acted: bool,
}

/// What the no-op memo can make of a run.
enum Verdict {
    /// Every stage was up to date: these, in the order reported.
    UpToDate(Vec<String>),
    /// Stages ran, and every other one was up to date.
    Built,
    /// A stage was restored, failed or was not run, or a warning was given.
    Acted,
}

impl Watching {
    fn new(inner: Box<dyn Reporter>) -> Watching {
        Watching {
            inner,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn verdict(&self) -> Verdict {
        let seen = std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()));
        if seen.acted {
            Verdict::Acted
        } else if seen.built {
            Verdict::Built
        } else {
            Verdict::UpToDate(seen.up_to_date)
        }
    }
}

impl Reporter for Watching {
    fn report(&self, event: Event) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            match &event {
                Event::StageFinished { stage, outcome, .. } => match outcome {
                    Outcome::UpToDate => seen.up_to_date.push(stage.clone()),
                    Outcome::Ran => seen.built = true,
                    _ => seen.acted = true,
                },
                Event::Warning { .. } => seen.acted = true,
                Event::RunFinished { summary } if summary.interrupted => seen.acted = true,
                Event::RunStarted { .. }
                | Event::StageStarted { .. }
                | Event::Output { .. }
                | Event::RunFinished { .. } => {}
            }
        }
        self.inner.report(event);
    }
}

/// Drops lock entries of stages no longer declared, so the lock describes
/// the workspace as it is (their cached outs stay in the store until `gc`).
fn forget_undeclared_stages(session: &Session, planner: &Planner) -> anyhow::Result<()> {
    let mut lock = planner.lock.lock().unwrap_or_else(|e| e.into_inner());
    let gone: Vec<String> = lock
        .stage
        .keys()
        .filter(|name| session.workspace.stage(name).is_none())
        .cloned()
        .collect();
    for name in gone {
        fabric_core::lock::Lock::journal(&session.workspace.layout().lock_files().journal, &name, None)?;
        lock.stage.remove(&name);
        eprintln!("forgot stage {name}: it is no longer declared");
    }
    Ok(())
}

/// The executor for the selected stages: `local` alone when every one of
/// them runs locally (`--executor`, else `[workspace] executor`, unless the
/// stage names its own), else a Slurm executor that runs the local ones on
/// `local`.
fn executor(
    session: &Session,
    selection: &BTreeSet<usize>,
    chosen: Option<ExecutorKind>,
    local: LocalExecutor,
) -> anyhow::Result<Box<dyn Executor>> {
    let workspace = &session.workspace;
    let default = chosen.unwrap_or(workspace.executor);
    let runs_on = |index: &usize| workspace.stages[*index].executor.unwrap_or(default);
    if selection.iter().all(|index| runs_on(index) == ExecutorKind::Local) {
        return Ok(Box::new(local));
    }
    let local_stages = workspace
        .stages
        .iter()
        .enumerate()
        .filter(|(index, _)| runs_on(index) == ExecutorKind::Local)
        .map(|(_, stage)| stage.name.clone())
        .collect();
    let (slurm, leftovers) = SlurmExecutor::start(
        &workspace.root,
        &workspace.name,
        workspace.slurm.clone(),
        local_stages,
        local,
    )
    .map_err(|error| anyhow::anyhow!("cannot use the Slurm executor: {error}"))?;
    if leftovers > 0 {
        eprintln!(
            "warning: cancelled {leftovers} Slurm job(s) an earlier run of this workspace left in the queue (their outs are not trusted)"
        );
    }
    Ok(Box::new(slurm))
}
