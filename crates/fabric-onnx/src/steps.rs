//! The ONNX steps: `onnx.train`, `onnx.reinforce`, `onnx.eval` and `onnx.studio`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value as Json;

use crate::eval::{self, Candidate, EvalOutputs, Gates};
use crate::reinforce::{ReinforceOptions, Validation, reinforce};
use crate::runtime;
use crate::train::{self, TrainOptions, TrainOutputs};
use fabric_core::steps::{Step, StepContext, parse_with};

/// The ONNX Runtime version the nodes will load (a fingerprint fact: a new
/// runtime may compute other bytes). Looked up once per process.
fn runtime_facts(root: &Path) -> BTreeMap<String, String> {
    static VERSION: OnceLock<String> = OnceLock::new();
    let version = VERSION.get_or_init(|| {
        runtime::find_library(Some(root)).map_or_else(|_| "missing".into(), |p| runtime::library_version(&p))
    });
    BTreeMap::from([("onnxruntime".to_string(), version.clone())])
}

/// Loads ONNX Runtime from the workspace at `root` (it stays loaded for
/// the process) and keeps its version as the runtime fact.
fn prepare_runtime(root: &Path) {
    let _ = runtime::environment(Some(root));
    runtime_facts(root);
}

/// Trains the policy model: dep 1 is the train split; outs are `model.onnx`,
/// `training-log.json` and the model card.
pub struct Train;

impl Step for Train {
    fn name(&self) -> &'static str {
        "onnx.train"
    }
    fn version(&self) -> u32 {
        7
    }
    fn summary(&self) -> &'static str {
        "train split (dep 1) → model.onnx, training-log.json, model card (outs 1–3); with: base_model, hidden, epochs, batch_size, learning_rate, seed, threads, mode_weights"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<TrainOptions>(with)?.check().map_err(|e| e.to_string())
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
    }
    fn prepare(&self, root: &Path) {
        prepare_runtime(root);
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            context.outs.len() == 3,
            "declare 3 outs: model.onnx, training-log.json, model card"
        );
        anyhow::ensure!(!context.deps.is_empty(), "the first dep must be the train split");
        let options: TrainOptions = parse_with(context.with).map_err(anyhow::Error::msg)?;
        let outputs = TrainOutputs {
            model: context.outs[0].clone(),
            log: context.outs[1].clone(),
            card: context.outs[2].clone(),
        };
        train::train(
            Some(context.root),
            context.root,
            &context.deps[0],
            &options,
            &outputs,
            context.interrupted,
        )?;
        Ok(())
    }
}

/// Fine-tunes the supervised model in the closed loop: deps are its
/// `model.onnx`, the train split and the test split; outs are the model to
/// keep and the report.
pub struct Reinforce;

impl Step for Reinforce {
    fn name(&self) -> &'static str {
        "onnx.reinforce"
    }
    fn version(&self) -> u32 {
        5
    }
    fn summary(&self) -> &'static str {
        "supervised model.onnx, train split, test split, [validation users' examples] (deps 1–3 or 1–4) → the model kept (reinforced if it wins on the validation users, or else on the train split's sessions left out of the fine-tune; otherwise the supervised one) and a report with both models on those and on the test split (outs 1–2); with: epochs, learning_rate, batch_size, seed, threads, validation_fraction"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<ReinforceOptions>(with)?.check().map_err(|e| e.to_string())
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
    }
    fn prepare(&self, root: &Path) {
        prepare_runtime(root);
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(context.outs.len() == 2, "declare 2 outs: model.onnx and the report");
        anyhow::ensure!(
            matches!(context.deps.len(), 3 | 4),
            "declare 3 deps, the supervised model.onnx, the train split and the test split, and optionally a 4th: the validation users' examples"
        );
        let options: ReinforceOptions = parse_with(context.with).map_err(anyhow::Error::msg)?;
        let model = std::fs::read(&context.deps[0])?;
        let train = train::read_examples(&context.deps[1])?;
        let test = train::read_examples(&context.deps[2])?;
        let users = context.deps.get(3).map(|path| train::read_examples(path)).transpose()?;
        let validation = users.as_deref().map_or(Validation::Sessions, Validation::Users);
        let (kept, report) = reinforce(
            Some(context.root),
            &model,
            &train,
            validation,
            &test,
            &options,
            context.interrupted,
        )?;
        std::fs::write(&context.outs[0], kept)?;
        std::fs::write(&context.outs[1], serde_json::to_string_pretty(&report)? + "\n")?;
        Ok(())
    }
}

/// `with` of `onnx.eval`: the regression gates.
type EvalWith = Gates;

/// The path of `target` relative to the directory `from` (both workspace-relative).
fn relative_link(from: &Path, target: &Path) -> String {
    let from: Vec<_> = from.components().collect();
    let target: Vec<_> = target.components().collect();
    let common = from.iter().zip(&target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<String> = vec!["..".into(); from.len() - common];
    parts.extend(
        target[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    parts.join("/")
}

/// Evaluates the model: deps are `model.onnx`, the test split and optionally
/// the training log; outs are the report, the loss chart, the confusion
/// chart (SVG) and `metrics.json` (declare it under `metrics` so `fabric
/// metrics` shows it).
pub struct Eval;

impl Step for Eval {
    fn name(&self) -> &'static str {
        "onnx.eval"
    }
    fn version(&self) -> u32 {
        6
    }
    fn summary(&self) -> &'static str {
        "model.onnx, test split, [training log] (deps) → report.md, loss.svg, confusion.svg, metrics.json (outs); with: min_command_accuracy, min_macro_f1, min_mode_compliance, min_tone_audit, min_als_alignment, max_interventions_per_minute, min_time_in_flow, min_acceptance, beat_baselines, min_oracle_gap_closed"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<EvalWith>(with).map(|_| ())
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
    }
    fn prepare(&self, root: &Path) {
        prepare_runtime(root);
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(
            context.outs.len() == 4,
            "declare 4 outs: the report, the loss chart, the confusion chart, metrics.json"
        );
        anyhow::ensure!(
            context.deps.len() >= 2,
            "deps: model.onnx, the test split, and optionally training-log.json"
        );
        let gates: EvalWith = parse_with(context.with).map_err(anyhow::Error::msg)?;
        let report_dir = Path::new(&context.declared[0]).parent().unwrap_or(Path::new(""));
        let outputs = EvalOutputs {
            report: context.outs[0].clone(),
            loss_chart: context.outs[1].clone(),
            confusion_chart: context.outs[2].clone(),
            metrics: context.outs[3].clone(),
            chart_links: (
                relative_link(report_dir, Path::new(&context.declared[1])),
                relative_link(report_dir, Path::new(&context.declared[2])),
            ),
        };
        let (_, failed) = eval::evaluate(
            Some(context.root),
            &Candidate::Model(context.deps[0].clone()),
            &context.deps[1],
            context.deps.get(2).map(|p| p.as_path()),
            &gates,
            &outputs,
        )?;
        anyhow::ensure!(failed.is_empty(), "regression gates failed: {}", failed.join(", "));
        Ok(())
    }
}

/// `with` of `onnx.studio`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StudioWith {
    /// Snapshots per window (the dataset's `window_size`).
    window_size: usize,
    /// How many test vectors.
    #[serde(default = "StudioWith::default_examples")]
    examples: usize,
}

impl StudioWith {
    fn default_examples() -> usize {
        24
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.window_size) {
            return Err("window_size must be within 1–100".into());
        }
        if !(1..=10_000).contains(&self.examples) {
            return Err("examples must be within 1–10000".into());
        }
        Ok(())
    }
}

/// The model as the Studio runs it: deps are `model.onnx` and the sanitized
/// sessions; outs are the TypeScript module and its test vectors.
pub struct Studio;

impl Step for Studio {
    fn name(&self) -> &'static str {
        "onnx.studio"
    }
    fn version(&self) -> u32 {
        6
    }
    fn summary(&self) -> &'static str {
        "model.onnx (dep 1), sanitized sessions (dep 2) → TypeScript module, test vectors (outs 1–2); with: window_size, examples"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<StudioWith>(with)?.check()
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
    }
    fn prepare(&self, root: &Path) {
        prepare_runtime(root);
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(context.deps.len() >= 2, "deps: model.onnx, then the sanitized sessions");
        anyhow::ensure!(
            context.outs.len() == 2,
            "declare 2 outs: the .ts module and the test vectors"
        );
        let with: StudioWith = parse_with(context.with).map_err(anyhow::Error::msg)?;
        let model = std::fs::read(&context.deps[0])?;
        let vectors = crate::studio::test_vectors(
            Some(context.root),
            &model,
            &context.deps[1],
            with.window_size,
            with.examples,
        )?;
        for out in &context.outs {
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&context.outs[0], crate::studio::typescript_module())?;
        std::fs::write(&context.outs[1], serde_json::to_string(&vectors)? + "\n")?;
        Ok(())
    }
}
