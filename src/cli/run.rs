//! `fabric run`.

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::{Globals, Session, UsageError, reporter};
use crate::diagnostic::Diagnostic;
use crate::run::executor::Interrupts;
use crate::run::{Decision, Force};

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
    /// A declared param written as an option (`--snapshots-dir DIR` sets
    /// `snapshots_dir`); filled in from the command line, not typed.
    #[arg(long, hide = true, value_name = "NAME=VALUE")]
    param_flag: Vec<String>,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open_with_flags(globals, &args.param, &args.param_flag)?;
    let dry_run = args.dry_run.unwrap_or(false);
    let selection = session.select(&args.targets, args.downstream)?;
    let force = if args.force.iter().any(String::is_empty) {
        Force::All
    } else if args.force.is_empty() {
        Force::Nothing
    } else {
        for name in &args.force {
            if session.index(name).is_none() {
                return Err(UsageError::from(Diagnostic::new(format!("--force={name}: no such stage"))).into());
            }
        }
        Force::Stages(args.force.iter().cloned().collect())
    };
    let interrupts = Interrupts::default();
    let reporter = reporter(args.verbose, args.quiet, args.json, !args.no_stream);
    // A real run holds the workspace before it reads the lock, so that a run
    // it waited for is seen.
    let _guard = if dry_run {
        None
    } else {
        Some(session.lock_workspace(args.wait)?)
    };
    let runner = session.runner(reporter.as_ref(), &interrupts)?;

    if dry_run {
        let plan = runner.plan(&selection, &force)?;
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

    forget_undeclared_stages(&session, &runner)?;
    let jobs = args
        .jobs
        .filter(|j| *j > 0)
        .or(Some(session.workspace.jobs).filter(|j| *j > 0))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));

    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    let handle = signals.handle();
    let summary = std::thread::scope(|scope| {
        let interrupts = &interrupts;
        scope.spawn(move || {
            // Keep listening until the handle closes: the iterator owns the
            // wake-up pipe that `close` writes to.
            for _ in signals.forever() {
                interrupts.interrupt();
            }
        });
        let summary = runner.run(&selection, &force, jobs, args.keep_going);
        handle.close();
        summary
    });
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.failed > 0 || summary.skipped > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Drops lock entries of stages no longer declared, so the lock describes
/// the workspace as it is (their cached outs stay in the store until `gc`).
fn forget_undeclared_stages(session: &Session, runner: &crate::run::Runner) -> anyhow::Result<()> {
    let mut lock = runner.lock.lock().unwrap_or_else(|e| e.into_inner());
    let gone: Vec<String> = lock
        .stage
        .keys()
        .filter(|name| session.workspace.stage(name).is_none())
        .cloned()
        .collect();
    for name in gone {
        crate::lock::Lock::journal(&session.workspace.lock_files().journal, &name, None)?;
        lock.stage.remove(&name);
        eprintln!("forgot stage {name}: it is no longer declared");
    }
    Ok(())
}
