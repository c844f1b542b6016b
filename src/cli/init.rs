//! `fabric init`.

use std::path::Path;
use std::process::ExitCode;

use super::{Globals, UsageError};
use fabric_core::diagnostic::Diagnostic;

/// Arguments of `fabric init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the workspace (default: the current directory).
    dir: Option<std::path::PathBuf>,
}

const FABRIC_TOML: &str = r#"[workspace]
name = "example"
include = ["pipelines/*.toml"]   # pipeline files, globbed and sorted
store = ".fabric/store"          # content-addressed cache of every out
jobs = 0                         # stages at once; 0 = number of cores

[params]
min_length = 3                   # used as ${params.min_length}
"#;

const PIPELINE_TOML: &str = r#"[pipeline]
name = "words"
description = "split a text into words, then count them"

[stage.split]
description = "one word per line, lower case, sorted"
cmd = "tr -cs '[:alpha:]' '\n' < data/input.txt | tr '[:upper:]' '[:lower:]' | awk 'length >= ${params.min_length}' | sort > build/words.txt"
deps = ["data/input.txt"]
outs = ["build/words.txt"]

[stage.count]
description = "word frequencies and a metrics file"
cmd = "uniq -c ${stage.split.outs[0]} | sort -rn > build/counts.txt && printf '{\"distinct\": %d}\n' $(wc -l < build/counts.txt) > build/metrics.json"
deps = ["${stage.split.outs[0]}"]
outs = ["build/counts.txt"]
metrics = ["build/metrics.json"]
"#;

const INPUT: &str = "Prime Fabric runs pipelines declared in TOML.\n\
Change this file and run `fabric run` again: only the stages that depend on it run.\n";

pub fn execute(globals: &Globals, args: Args) -> anyhow::Result<ExitCode> {
    let start = globals.start_dir()?;
    let dir = args.dir.map_or(start.clone(), |d| start.join(d));
    if dir.join(fabric_core::manifest::MANIFEST).exists() {
        return Err(UsageError::from(
            Diagnostic::new(format!("{} already holds a Fabric.toml", dir.display()))
                .hint("edit it, or run `fabric init` in another directory"),
        )
        .into());
    }
    write(&dir, "Fabric.toml", FABRIC_TOML)?;
    write(&dir, "pipelines/words.toml", PIPELINE_TOML)?;
    write(&dir, "data/input.txt", INPUT)?;
    if !dir.join(".gitignore").exists() {
        write(&dir, ".gitignore", ".fabric/\nbuild/\n")?;
    }
    println!(
        "Created a workspace in {}. Next: `fabric run`, edit data/input.txt, `fabric status`, `fabric run` again.",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write(dir: &Path, relative: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, text)?;
    Ok(())
}
