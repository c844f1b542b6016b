//! `fabric lock merge`: a git merge driver for Fabric.lock.
//!
//! ```text
//! # .gitattributes
//! Fabric.lock merge=fabric-lock
//! # .git/config (or ~/.gitconfig)
//! [merge "fabric-lock"]
//!     name = Fabric.lock three-way merge
//!     driver = fabric lock merge %O %A %B
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use fabric_core::lock::{self, Lock};

/// Arguments of `fabric lock`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LockCommand,
}

#[derive(Debug, clap::Subcommand)]
enum LockCommand {
    /// Three-way merge of Fabric.lock, stage by stage; writes the result to OURS.
    Merge {
        /// The common ancestor (%O).
        base: PathBuf,
        /// Our version (%A); receives the result.
        ours: PathBuf,
        /// Their version (%B).
        theirs: PathBuf,
    },
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let LockCommand::Merge { base, ours, theirs } = args.command;
    let read = |path: &PathBuf| Lock::read(path).map_err(|d| anyhow::anyhow!("{}: {d}", path.display()));
    let (merged, conflicts) = lock::merge(&read(&base)?, &read(&ours)?, &read(&theirs)?);
    merged.write(&ours)?;
    if conflicts.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "Fabric.lock: both sides changed stage{} {}; their entries were dropped. Run `fabric run` after the merge to record them again (from the cache where possible).",
            if conflicts.len() == 1 { "" } else { "s" },
            conflicts.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}
