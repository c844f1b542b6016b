//! `fabric gc`.
//!
//! A store named in Fabric.toml (`store = …`), or a `.fabric/store` that
//! is a link, may serve other workspaces too, and what only their locks
//! name would look like garbage from here: gc prunes such a store only
//! when told whose locks count — every other workspace that uses it
//! (`--also DIR`), or none (`--sole-user`). What gc cannot see is another
//! workspace naming this one's own `.fabric/store` as its store: share a
//! store by naming a directory of its own in every workspace.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::{Globals, Session, UsageError};
use fabric_core::diagnostic::Diagnostic;
use fabric_core::layout::Layout;
use fabric_core::lock::Lock;
use fabric_core::manifest;
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
    #[command(flatten)]
    shared: SharedStore,
}

/// Who else uses a store named in Fabric.toml (`fabric gc`, `fabric exp gc`).
#[derive(Debug, clap::Args)]
pub struct SharedStore {
    /// Another workspace that uses this store (its directory, or one inside
    /// it, relative to where fabric starts): what its lock and its
    /// experiments name is kept too. Name every one (repeat the flag).
    #[arg(long, value_name = "DIR")]
    also: Vec<PathBuf>,
    /// The store named in Fabric.toml serves this workspace alone.
    #[arg(long, conflicts_with = "also")]
    sole_user: bool,
}

impl Args {
    /// Keep only what Fabric.lock and the experiments' locks name (and
    /// those of the workspaces `shared` names).
    pub fn locked_only(dry_run: bool, shared: SharedStore) -> Args {
        Args {
            dry_run,
            keep_days: 0,
            shared,
        }
    }
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let store = &session.workspace.store;
    let root = canonical(&session.workspace.root);
    let named = *store != session.workspace.layout().store(None) || store.is_symlink();
    if named && args.shared.also.is_empty() && !args.shared.sole_user {
        return Err(usage(
            format!(
                "{} is named in Fabric.toml (`store = …`) or is a link: other workspaces may use it, and gc would drop what only their locks name",
                store.display()
            ),
            "name each workspace that uses it with `--also DIR`, or pass `--sole-user` if none does",
        ));
    }
    // Every workspace whose locks count, each once, in one order (two gc
    // runs naming each other then wait for each other instead of deadlocking).
    let mut workspaces = BTreeSet::from([root.clone()]);
    for dir in &args.shared.also {
        let start = globals.start_dir()?.join(dir);
        let other_root = manifest::find_root(&start).ok_or_else(|| {
            usage(
                format!("--also {}: no Fabric.toml there or above", dir.display()),
                "name the directory of another workspace",
            )
        })?;
        let other = manifest::load(&other_root, &[], &session.registry).map_err(|e| {
            usage(
                format!("--also {}: {e}", dir.display()),
                "fix that workspace's manifest",
            )
        })?;
        if !same_path(&other.store, store) {
            return Err(usage(
                format!(
                    "--also {}: that workspace uses the store {}, not {}",
                    dir.display(),
                    other.store.display(),
                    store.display()
                ),
                "`--also` names the workspaces that share this one's store",
            ));
        }
        let other_root = canonical(&other.root);
        // Experiments' copies are held with their workspace.
        if !workspaces
            .iter()
            .any(|w| other_root.starts_with(Layout::new(w).experiments()))
        {
            workspaces.insert(other_root);
        }
    }
    let mut held = Vec::new();
    let mut locks = Vec::new();
    for root in &workspaces {
        let (guards, workspace_locks) = hold_and_read(root)?;
        held.extend(guards);
        locks.extend(workspace_locks);
    }
    let pinned = locks
        .iter()
        .flat_map(|lock| lock.stage.values().map(|e| e.fingerprint))
        .collect();
    let keep_since = SystemTime::now() - Duration::from_secs(args.keep_days * 86_400);
    let storage = LocalStorage::new(store);
    let (runs, trees, objects) = collect_garbage(&storage, &pinned, keep_since, args.dry_run)?;
    let memos = remove_orphan_memos(&session, args.dry_run)?;
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!("{verb} {runs} run records, {trees} trees, {objects} objects, {memos} step memos");
    Ok(ExitCode::SUCCESS)
}

/// A usage error (exit code 2) with a hint.
fn usage(message: String, hint: &str) -> anyhow::Error {
    UsageError(Diagnostic::new(message).hint(hint).into()).into()
}

/// `path` with links and `..` resolved, or as it is if it does not exist.
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `a` and `b` name the same directory.
fn same_path(a: &Path, b: &Path) -> bool {
    canonical(a) == canonical(b)
}

/// Holds the workspace at `root` still (its runs, its experiments and any
/// run left in an experiment's copy: each may have stored what its lock
/// does not name yet) and reads its lock and its experiments' locks.
fn hold_and_read(root: &Path) -> anyhow::Result<(Vec<File>, Vec<Lock>)> {
    let layout = Layout::new(root);
    let mut held = vec![super::lock_workspace(root, true)?];
    held.push(super::exp::hold_experiments(&layout, true)?);
    for copy in super::exp::copies(&layout) {
        held.push(super::lock_workspace(&copy, true)?);
    }
    let lock = Lock::load(&layout.lock_files()).map_err(UsageError::from)?;
    let mut locks = vec![lock];
    locks.extend(super::exp::locks(&layout));
    Ok((held, locks))
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
