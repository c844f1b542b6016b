//! `fabric checkout`.

use std::process::ExitCode;

use super::{Globals, Session};
use crate::hash::Hasher;
use crate::paths::RelPath;

/// Arguments of `fabric checkout`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Stages or pipelines whose outs to restore (default: all with a lock entry).
    stages: Vec<String>,
}

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let session = Session::open(globals, &[])?;
    let _guard = session.lock_workspace(true)?;
    let selection = session.resolve(&args.stages)?;
    let lock = session.lock()?;
    let hasher = Hasher::new(&session.workspace.root, &session.cache);
    let mut failures = 0;
    for index in selection {
        let stage = &session.workspace.stages[index];
        let Some(entry) = lock.stage.get(&stage.name) else {
            continue;
        };
        for (path, record) in &entry.outs {
            let path = RelPath::new(path)?;
            if hasher.hash(&path)?.digest() == Some(record.hash) {
                continue;
            }
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
    }
    session.cache.save()?;
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
