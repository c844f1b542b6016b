//! `fabric checkout`.

use std::process::ExitCode;

use super::{Globals, Session};
use std::collections::BTreeSet;

use fabric_core::hash::{Content, Hasher};
use fabric_core::paths::RelPath;

/// Arguments of `fabric checkout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stages or pipelines whose outs to restore (default: all with a lock entry).
    stages: Vec<String>,
    /// Overwrite outs whose current content is saved nowhere (a hand edit).
    #[arg(long)]
    force: bool,
}

impl Args {
    /// Check out these stages' outs, keeping hand edits.
    pub fn of(stages: Vec<String>) -> Args {
        Args { stages, force: false }
    }
}

/// True when `content` could be got back after being overwritten: nothing is
/// there, or the store holds every file of it (like DVC, an out whose content
/// is in the cache is overwritten without asking; a hand edit is not).
fn saved(store: &fabric_core::store::Store, content: &Content) -> bool {
    match content {
        Content::Missing => true,
        Content::File { hash, .. } => store.holds_files(&BTreeSet::from([*hash])),
        Content::Dir { tree, .. } => store.holds_files(&tree.file_hashes().collect()),
    }
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let _guard = super::lock_workspace(&session.workspace.root, true)?;
    let selection = session.resolve(&args.stages)?;
    let lock = session.lock()?;
    let hasher = Hasher::new(&session.workspace.root, &session.cache);
    // What to restore; refuse up front if that would lose unsaved edits.
    let mut restores = Vec::new();
    let mut unsaved = Vec::new();
    for index in selection {
        let stage = &session.workspace.stages[index];
        let Some(entry) = lock.stage.get(&stage.name) else {
            continue;
        };
        for (path, record) in &entry.outs {
            let path = RelPath::new(path)?;
            let current = hasher.hash(&path)?;
            if current.digest() == Some(record.hash) {
                continue;
            }
            if !args.force && !saved(&session.store, &current) {
                unsaved.push(path.to_string());
            }
            restores.push((stage, path, record));
        }
    }
    if !unsaved.is_empty() {
        eprintln!(
            "checkout would overwrite changes saved nowhere, in: {}\nsave them elsewhere, or run `fabric checkout --force` to discard them",
            unsaved.join(", ")
        );
        return Ok(ExitCode::from(1));
    }
    let mut failures = 0;
    for (stage, path, record) in restores {
        match session.store.restore(&session.workspace.root, &path, record) {
            Ok(()) => eprintln!("restored {path} ({})", stage.name),
            Err(error) => {
                failures += 1;
                eprintln!(
                    "cannot restore {path} ({}): {error}; run `fabric run {}`",
                    stage.name, stage.name
                );
            }
        }
    }
    session.cache.save()?;
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
