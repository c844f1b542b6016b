//! Running a stage's built-in step: in-process (the local default), or as a
//! `fabric` process given the stage ([`StepJob`]), so that any executor —
//! a cluster's included — can run any stage. Both go through [`run`]: the
//! same inputs, the same scratch directory and renames, the same memo.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::freshness;
use crate::digest::Digest;
use crate::hash::Hasher;
use crate::layout::Layout;
use crate::lock::LockEntry;
use crate::manifest::{Action, Stage};
use crate::stat_cache::StatCache;
use crate::steps::{Registry, StepContext};

/// The hidden subcommand that runs a [`StepJob`]: `fabric __step FILE`.
pub const SUBCOMMAND: &str = "__step";

/// Runs `stage`'s step in the workspace at `root`: its outs are written in
/// a scratch directory and moved into place once the step succeeded.
/// `dep_files` holds the content hash of every dep file, as hashed for the
/// fingerprint; `note` passes on what the step wants the user to know;
/// `interrupted` tells the step when the run was interrupted.
#[allow(clippy::too_many_arguments)]
pub fn run(
    registry: &Registry,
    root: &Path,
    stage: &Stage,
    upstream: BTreeMap<String, Arc<LockEntry>>,
    hasher: &Hasher,
    dep_files: HashMap<PathBuf, Digest>,
    note: &(dyn Fn(&str) + Sync),
    interrupted: &(dyn Fn() -> bool + Sync),
) -> anyhow::Result<()> {
    let Action::Step { name, with } = &stage.action else {
        anyhow::bail!("stage `{}` runs a command, not a step", stage.name);
    };
    let step = registry
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("unknown step `{name}`"))?;
    let layout = Layout::new(root);
    let scratch_root = layout.scratch();
    std::fs::create_dir_all(&scratch_root)?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{}-", stage.name))
        .tempdir_in(&scratch_root)?;
    let outs: Vec<PathBuf> = (0..stage.outs.len())
        .map(|i| scratch.path().join(format!("out{i}")))
        .collect();
    let context = StepContext {
        root,
        with,
        deps: stage.deps.iter().map(|d| root.join(d.value.key())).collect(),
        outs: outs.clone(),
        declared: stage.out_paths().map(|p| p.to_string()).collect(),
        upstream,
        memo_path: layout.step_memo(&stage.name),
        hasher,
        dep_files,
        note,
        interrupted,
    };
    step.run(&context).with_context(|| format!("step `{name}` failed"))?;
    for (temp, out) in outs.iter().zip(stage.out_paths()) {
        if std::fs::symlink_metadata(temp).is_ok() {
            std::fs::rename(temp, out.under(root))?;
        }
    }
    Ok(())
}

/// A stage's step, to be run by a `fabric` process: the stage as the
/// manifest resolved it, the lock entries above it, and the fingerprint it
/// was decided on. Written as JSON under `.fabric/tmp/`.
#[derive(Serialize, Deserialize)]
pub struct StepJob {
    /// The workspace root.
    pub root: PathBuf,
    /// The stage, resolved.
    pub stage: Stage,
    /// The lock entries of the stages upstream of it.
    pub upstream: BTreeMap<String, Arc<LockEntry>>,
    /// The fingerprint of its inputs when it was decided.
    pub fingerprint: Digest,
}

impl StepJob {
    /// Writes the job and returns the shell command that runs it.
    pub fn command(&self) -> anyhow::Result<String> {
        let scratch = Layout::new(&self.root).scratch();
        std::fs::create_dir_all(&scratch)?;
        let file = scratch.join(format!("{}.step.json", self.stage.name));
        std::fs::write(&file, serde_json::to_vec(self)?)?;
        let fabric = std::env::current_exe().context("cannot find the fabric executable")?;
        Ok(format!(
            "exec {} {SUBCOMMAND} {}",
            shell_quoted(&fabric.to_string_lossy()),
            shell_quoted(&file.to_string_lossy())
        ))
    }

    /// Runs the job in `file` (the `fabric __step FILE` side). Its deps are
    /// hashed again: if they changed since the stage was decided, the step
    /// does not run.
    pub fn execute(file: &Path, registry: &Registry) -> anyhow::Result<()> {
        let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        let job: StepJob =
            serde_json::from_slice(&text).with_context(|| format!("{} is not a step job", file.display()))?;
        let root = &job.root;
        let Action::Step { name, .. } = &job.stage.action else {
            anyhow::bail!("stage `{}` runs a command, not a step", job.stage.name);
        };
        eprintln!(
            "fabric {SUBCOMMAND}: stage `{}`, step `{name}`, process {}",
            job.stage.name,
            std::process::id()
        );
        let cache = StatCache::load(&Layout::new(root).stat_cache());
        let hasher = Hasher::new(root, &cache);
        let (inputs, contents) = freshness::hash_inputs(root, registry, &hasher, &job.stage)?;
        let found = inputs.fingerprint();
        if found != job.fingerprint {
            anyhow::bail!(
                "the inputs of stage `{}` changed after it was planned (fingerprint {} then, {} now); run again",
                job.stage.name,
                job.fingerprint.short(),
                found.short()
            );
        }
        let dep_files = freshness::dep_files(root, &job.stage, &contents);
        let note = |message: &str| eprintln!("warning: {message}");
        // Cancelling the job ends this process: the step needs not ask.
        let never = || false;
        run(
            registry,
            root,
            &job.stage,
            job.upstream,
            &hasher,
            dep_files,
            &note,
            &never,
        )?;
        let _ = std::fs::remove_file(file);
        Ok(())
    }
}

/// `text` as one word for `sh`.
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes its `text` argument to its one out.
    struct WriteText;

    impl crate::steps::Step for WriteText {
        fn name(&self) -> &'static str {
            "test.write"
        }
        fn version(&self) -> u32 {
            1
        }
        fn summary(&self) -> &'static str {
            "writes `text` to out 1"
        }
        fn check(&self, with: &serde_json::Value) -> Result<(), String> {
            with["text"].as_str().map(|_| ()).ok_or_else(|| "give `text`".into())
        }
        fn run(&self, context: &crate::steps::StepContext) -> anyhow::Result<()> {
            std::fs::write(&context.outs[0], context.with["text"].as_str().unwrap_or_default())?;
            Ok(())
        }
    }

    /// A workspace with one stage of the [`WriteText`] step, loaded.
    fn workspace() -> (tempfile::TempDir, crate::manifest::Workspace, Registry) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Fabric.toml"),
            "[params]\ntext = \"planned\"\n\n[stage.sim]\nstep = \"test.write\"\nouts = [\"raw\"]\n\
             [stage.sim.with]\ntext = \"${params.text}\"\n",
        )
        .unwrap();
        let mut registry = Registry::default();
        registry.register(Box::new(WriteText));
        let workspace = crate::manifest::load(dir.path(), &[], &registry).unwrap();
        (dir, workspace, registry)
    }

    fn job(workspace: &crate::manifest::Workspace, fingerprint: Digest) -> (StepJob, PathBuf) {
        let job = StepJob {
            root: workspace.root.clone(),
            stage: workspace.stages[0].clone(),
            upstream: BTreeMap::new(),
            fingerprint,
        };
        let command = job.command().unwrap();
        let file = Layout::new(&workspace.root).scratch().join("sim.step.json");
        assert!(command.ends_with(&shell_quoted(&file.to_string_lossy())), "{command}");
        (job, file)
    }

    #[test]
    fn a_step_job_runs_the_stage_it_was_planned_for_and_no_other() {
        let (dir, workspace, registry) = workspace();
        let cache = StatCache::load(&Layout::new(dir.path()).stat_cache());
        let hasher = Hasher::new(dir.path(), &cache);
        let planned = freshness::inputs(dir.path(), &registry, &hasher, &workspace.stages[0])
            .unwrap()
            .fingerprint();

        // Planned for other inputs: refused, nothing written.
        let (_, file) = job(&workspace, Digest::of(b"other inputs"));
        let refused = format!("{:#}", StepJob::execute(&file, &registry).unwrap_err());
        assert!(refused.contains("changed after it was planned"), "{refused}");
        assert!(!dir.path().join("raw").exists());

        let (_, file) = job(&workspace, planned);
        StepJob::execute(&file, &registry).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("raw")).unwrap(), "planned");
        assert!(!file.exists(), "the job file is removed once done");
    }

    #[test]
    fn shell_quoting_keeps_any_path_one_word() {
        for text in ["plain", "with space", "it's", "'; rm -rf / #", "$HOME `x`"] {
            let output = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quoted(text)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&output.stdout), text);
        }
    }
}
