//! The shared remote cache: `fabric push`, `fabric pull`, `fabric remote
//! list`, and the tiered store `fabric run --pull` reads through.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;

use fabric_core::digest::Digest;
use fabric_core::lock::{Lock, OutRecords};
use fabric_core::manifest::RemoteSettings;
use fabric_core::store::{LocalStorage, Moved, Reach, TieredStorage};
use fabric_remote::Remote;
use indicatif::{ProgressBar, ProgressStyle};

use super::{Globals, Session, checkout};

/// Arguments of `fabric remote`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show the configured remote and whether it answers (exit 1 if not).
    List,
}

/// Arguments of `fabric push` and `fabric pull`.
#[derive(Debug, clap::Args)]
pub struct TransferArgs {
    /// Stages or pipelines whose lock entries to transfer, with those of the
    /// stages they need (default: all).
    targets: Vec<String>,
}

/// The remote `[workspace.remote]` configures.
pub fn open(session: &Session) -> anyhow::Result<(Remote, &RemoteSettings)> {
    let settings = session.workspace.remote.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "no remote is configured: add to Fabric.toml\n  [workspace.remote]\n  url = \"s3://BUCKET/PREFIX\"   # or \"webdav+https://HOST/PATH\""
        )
    })?;
    Ok((Remote::open(settings)?, settings))
}

/// The workspace's store in front of `remote`, as far as `reach` allows.
pub fn tiers(session: &Session, remote: Remote, reach: Reach) -> Arc<TieredStorage> {
    Arc::new(TieredStorage::new(
        Arc::new(LocalStorage::new(&session.workspace.store)),
        Arc::new(remote),
        reach,
    ))
}

/// `fabric remote list`.
pub fn list(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let Command::List = args.command;
    let session = Session::open(globals, &[])?;
    let (remote, settings) = open(&session)?;
    let yes = |on: bool| if on { "yes" } else { "no" };
    println!(
        "{}  (run --pull by default: {}, --push by default: {}, timeout {} s)",
        remote.location(),
        yes(settings.pull),
        yes(settings.push),
        settings.timeout.as_secs()
    );
    match remote.probe() {
        Ok(()) => {
            println!("  answers");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("  does not answer: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `fabric push`.
pub fn push(globals: &Globals, args: TransferArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let (remote, _) = open(&session)?;
    push_recorded(&session, remote, &session.select(&args.targets, false)?)?;
    Ok(ExitCode::SUCCESS)
}

/// `fabric pull`: fetches what the lock records, then checks it out.
pub fn pull(globals: &Globals, args: TransferArgs) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let lock = session.lock()?;
    let (remote, _) = open(&session)?;
    let location = remote.location().to_string();
    let selection = session.select(&args.targets, false)?;
    let runs = recorded(&session, &lock, &selection);
    let reach = Reach {
        pull: true,
        push: false,
    };
    let moved = transfer("pulling", |progress| {
        tiers(&session, remote, reach).pull(&runs, progress)
    })?;
    eprintln!("{} from {location}", summary(&moved, "downloaded", runs.len()));
    for refused in &moved.refused {
        eprintln!("warning: {refused}");
    }
    if moved.lacking > 0 {
        eprintln!(
            "warning: {} objects the lock records are in neither this store nor the remote; their outs cannot be checked out",
            moved.lacking
        );
    }
    let stages = selection
        .iter()
        .map(|&i| session.workspace.stages[i].name.clone())
        .collect();
    drop(session);
    checkout::execute(globals, checkout::Args::of(stages))
}

/// Uploads what the lock records for these stages (`fabric push`, and
/// `fabric run --push` after a successful run).
pub fn push_recorded(session: &Session, remote: Remote, stages: &BTreeSet<usize>) -> anyhow::Result<()> {
    let lock = session.lock()?;
    let location = remote.location().to_string();
    let runs = recorded(session, &lock, stages);
    let moved = transfer("pushing", |progress| {
        tiers(session, remote, Reach::default()).push(&runs, progress)
    })?;
    eprintln!("{} to {location}", summary(&moved, "uploaded", runs.len()));
    Ok(())
}

/// The lock entries of these stages: fingerprint and outs.
fn recorded<'a>(session: &Session, lock: &'a Lock, stages: &BTreeSet<usize>) -> Vec<(Digest, &'a OutRecords)> {
    stages
        .iter()
        .filter_map(|&index| lock.stage.get(&session.workspace.stages[index].name))
        .map(|entry| (entry.fingerprint, &entry.outs))
        .collect()
}

/// Runs a transfer with a byte counter on the terminal.
fn transfer(verb: &str, work: impl FnOnce(&(dyn Fn(u64) + Sync)) -> std::io::Result<Moved>) -> anyhow::Result<Moved> {
    let bar = ProgressBar::new_spinner().with_message(verb.to_string());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})").expect("the template is valid"),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let moved = work(&|bytes| bar.inc(bytes));
    bar.finish_and_clear();
    Ok(moved?)
}

fn summary(moved: &Moved, verb: &str, stages: usize) -> String {
    format!(
        "{verb} {} objects ({} bytes) of {stages} stages; {} already there",
        moved.objects, moved.bytes, moved.present
    )
}
