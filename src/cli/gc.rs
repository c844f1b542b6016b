//! `fabric gc`.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::{Globals, Session};
use fabric_core::store::{LocalStorage, collect_garbage};

/// Arguments of `fabric gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Count what would be removed; remove nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Keep run-cache entries written in the last N days (those in Fabric.lock
    /// and in the experiments' locks are always kept).
    #[arg(long, value_name = "N", default_value_t = 30)]
    keep_days: u64,
}

impl Args {
    /// Keep only what Fabric.lock and the experiments' locks name.
    pub fn locked_only(dry_run: bool) -> Args {
        Args { dry_run, keep_days: 0 }
    }
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let _guard = super::lock_workspace(&session.workspace.root, true)?;
    // A running experiment may have stored what its lock does not name yet:
    // wait for every `exp run`, and for a run left in a copy by one killed.
    let layout = session.workspace.layout();
    let _no_experiments = super::exp::hold_experiments(&layout, true)?;
    let _experiments = super::exp::copies(&layout)
        .iter()
        .map(|copy| super::lock_workspace(copy, true))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lock = session.lock()?;
    let experiments = super::exp::locks(&layout);
    let pinned = std::iter::once(&lock)
        .chain(&experiments)
        .flat_map(|lock| lock.stage.values().map(|e| e.fingerprint))
        .collect();
    let keep_since = SystemTime::now() - Duration::from_secs(args.keep_days * 86_400);
    let store = LocalStorage::new(&session.workspace.store);
    let (runs, trees, objects) = collect_garbage(&store, &pinned, keep_since, args.dry_run)?;
    let memos = remove_orphan_memos(&session, args.dry_run)?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!("{verb} {runs} run records, {trees} trees, {objects} objects, {memos} step memos");
    Ok(ExitCode::SUCCESS)
}

/// Removes the step memos (`.fabric/memo/STAGE`, `.fabric/memo/STAGE.KIND`)
/// of stages no longer declared.
fn remove_orphan_memos(session: &Session, dry_run: bool) -> anyhow::Result<usize> {
    let Ok(entries) = std::fs::read_dir(session.workspace.layout().step_memos()) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `STAGE` or `STAGE.KIND`; a matrix stage's name may hold dots itself.
        let declared = |stage: &str| session.workspace.stage(stage).is_some();
        if !declared(&name) && !name.rsplit_once('.').is_some_and(|(stage, _)| declared(stage)) {
            if !dry_run {
                std::fs::remove_file(entry.path())?;
            }
            removed += 1;
        }
    }
    Ok(removed)
}
