//! The ONNX steps: `onnx.train` and `onnx.eval`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value as Json;

use super::{Step, StepContext, parse_with};
use crate::onnx::eval::{self, Candidate, EvalOutputs, Gates};
use crate::onnx::runtime;
use crate::onnx::train::{self, TrainOptions, TrainOutputs};

/// The ONNX Runtime version the nodes will load (a fingerprint fact: a new
/// runtime may compute other bytes). Looked up once per process.
fn runtime_facts(root: &Path) -> BTreeMap<String, String> {
    static VERSION: OnceLock<String> = OnceLock::new();
    let version = VERSION.get_or_init(|| {
        runtime::find_library(Some(root)).map_or_else(|_| "missing".into(), |p| runtime::library_version(&p))
    });
    BTreeMap::from([("onnxruntime".to_string(), version.clone())])
}

/// Trains the policy model: dep 1 is the train split; outs are `model.onnx`,
/// `training-log.json` and the model card.
pub struct Train;

impl Step for Train {
    fn name(&self) -> &'static str {
        "onnx.train"
    }
    fn version(&self) -> u32 {
        3
    }
    fn summary(&self) -> &'static str {
        "train split (dep 1) → model.onnx, training-log.json, model card (outs 1–3); with: base_model, hidden, epochs, batch_size, learning_rate, seed, threads, mode_weights"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<TrainOptions>(with)?.check()
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
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
        train::train(Some(context.root), context.root, &context.deps[0], &options, &outputs)?;
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
        4
    }
    fn summary(&self) -> &'static str {
        "model.onnx, test split, [training log] (deps) → report.md, loss.svg, confusion.svg, metrics.json (outs); with: min_command_accuracy, min_mode_compliance, min_tone_audit, max_interventions_per_minute, beat_baselines"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse_with::<EvalWith>(with).map(|_| ())
    }
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        runtime_facts(root)
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
