//! `onnx.eval`: scores the model against the doctrine on the test split, side
//! by side with the seed-label rules and a majority baseline, and writes
//! `metrics.json`, a Markdown report and SVG charts.
//!
//! Metrics: command accuracy (top-1, top-3, target, macro-F1) against what
//! the user did; command JSON validity; mode compliance overall and per
//! mode; the tone audit of every rendered guidance text; ALS/Bloom alignment
//! (guidance on the channel the ALS state calls for); and the Flow impact
//! simulation (interventions per minute, and while the user is in flow).
//! The majority baseline always answers the most frequent command of the
//! test split (an upper bound for any constant answer). External predictions
//! (`--predictions`, JSONL of `{response, command}` per test example) face the
//! same audit in the model's column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::mlp::heads;
use super::proto::ModelProto;
use super::runtime;
use super::tensors::f32_value;
use crate::prime::dataset::{CommandTarget, Example};
use crate::prime::labels::allowed;
use crate::prime::schema::{AlsChannel, Intensity, Mode};
use crate::prime::tone::{phrase, tone_ok};
use crate::prime::vocabulary::{self, NONE};

/// Seconds between snapshots in the Studio export.
const SNAPSHOT_SECONDS: f64 = 4.0;
/// ALS energy at or above which a playing user is "in flow".
const FLOW_ENERGY: f64 = 0.6;

/// Regression gates (the `with` table of `onnx.eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Minimum top-1 command accuracy of the model.
    #[serde(default)]
    pub min_command_accuracy: f64,
    /// Minimum share of predictions obeying the mode boundaries.
    #[serde(default = "one")]
    pub min_mode_compliance: f64,
    /// Minimum share of guidance texts passing the tone audit.
    #[serde(default = "one")]
    pub min_tone_audit: f64,
    /// Maximum interventions per minute.
    #[serde(default = "interventions")]
    pub max_interventions_per_minute: f64,
    /// The model must beat the seed rules and the majority baseline on top-1 accuracy.
    #[serde(default)]
    pub beat_baselines: bool,
}

fn one() -> f64 {
    1.0
}
fn interventions() -> f64 {
    3.0
}

impl Default for Gates {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("defaults parse")
    }
}

/// One answer for one test example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The guidance text.
    pub response: String,
    /// The command JSON (`type` `none` for silence).
    pub command: CommandTarget,
    /// Up to three command types, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top3: Vec<String>,
    /// The guidance channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<AlsChannel>,
}

/// Scores of one predictor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Top-1 command type accuracy.
    pub command_accuracy: f64,
    /// Top-3 command type accuracy.
    pub command_top3: f64,
    /// Target accuracy, over examples whose command has a target.
    pub target_accuracy: f64,
    /// Macro-F1 over command classes.
    pub macro_f1: f64,
    /// Share of emitted commands that are valid JSON in the vocabulary.
    pub command_json_validity: f64,
    /// Share of predictions obeying the mode boundaries.
    pub mode_compliance: f64,
    /// The same, per mode.
    pub mode_compliance_by_mode: BTreeMap<String, f64>,
    /// Share of guidance texts passing the tone audit.
    pub tone_audit: f64,
    /// Share of guidance on the channel the ALS state calls for.
    pub als_alignment: f64,
    /// Commands issued per minute of replayed session.
    pub interventions_per_minute: f64,
    /// Commands issued while the user was in flow (playing, energy high).
    pub interventions_in_flow: usize,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Test examples scored.
    pub examples: usize,
    /// The model (or the external predictions).
    pub model: Scores,
    /// The current Prime Brain rules.
    pub seed_rules: Scores,
    /// The most frequent command, always.
    pub majority: Scores,
    /// The majority class.
    pub majority_class: String,
    /// Gate results: name → passed.
    pub gates: BTreeMap<String, bool>,
    /// Confusion counts of the model: truth → predicted → count (drawn in
    /// the report's chart, kept out of the metrics file).
    #[serde(skip)]
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
}

fn command_valid(command: &CommandTarget) -> bool {
    if command.kind == NONE {
        return command.target.is_none();
    }
    match vocabulary::command(&command.kind) {
        None => false,
        Some(spec) => match &command.target {
            Some(target) => vocabulary::is_archetype(target),
            None => !spec.needs_target,
        },
    }
}

/// Scores predictions against the examples.
pub fn score(examples: &[Example], predictions: &[Prediction]) -> Scores {
    let n = examples.len().max(1) as f64;
    let ratio = |count: usize, total: usize| if total == 0 { 1.0 } else { count as f64 / total as f64 };
    let mut scores = Scores::default();
    let correct = examples
        .iter()
        .zip(predictions)
        .filter(|(e, p)| p.command.kind == e.command.kind)
        .count();
    scores.command_accuracy = correct as f64 / n;
    let top3 = examples
        .iter()
        .zip(predictions)
        .filter(|(e, p)| {
            if p.top3.is_empty() {
                p.command.kind == e.command.kind
            } else {
                p.top3.contains(&e.command.kind)
            }
        })
        .count();
    scores.command_top3 = top3 as f64 / n;
    let targeted: Vec<_> = examples
        .iter()
        .zip(predictions)
        .filter(|(e, _)| e.command.target.is_some())
        .collect();
    scores.target_accuracy = ratio(
        targeted
            .iter()
            .filter(|(e, p)| p.command.target == e.command.target)
            .count(),
        targeted.len(),
    );
    let classes: BTreeSet<&str> = examples
        .iter()
        .map(|e| e.command.kind.as_str())
        .chain(predictions.iter().map(|p| p.command.kind.as_str()))
        .collect();
    let f1: Vec<f64> = classes
        .iter()
        .map(|class| {
            let tp = examples
                .iter()
                .zip(predictions)
                .filter(|(e, p)| e.command.kind == *class && p.command.kind == *class)
                .count() as f64;
            let predicted = predictions.iter().filter(|p| p.command.kind == *class).count() as f64;
            let actual = examples.iter().filter(|e| e.command.kind == *class).count() as f64;
            if tp == 0.0 {
                0.0
            } else {
                2.0 * tp / (predicted + actual)
            }
        })
        .collect();
    scores.macro_f1 = f1.iter().sum::<f64>() / f1.len().max(1) as f64;
    scores.command_json_validity = ratio(
        predictions
            .iter()
            .filter(|p| {
                serde_json::to_string(&p.command)
                    .ok()
                    .and_then(|json| serde_json::from_str::<CommandTarget>(&json).ok())
                    .is_some_and(|c| command_valid(&c))
            })
            .count(),
        predictions.len(),
    );
    let obeys = |e: &Example, p: &Prediction| p.command.kind == NONE || allowed(e.mode, &p.command.kind, e.critical);
    scores.mode_compliance = ratio(
        examples.iter().zip(predictions).filter(|(e, p)| obeys(e, p)).count(),
        examples.len(),
    );
    for mode in Mode::ALL {
        let in_mode: Vec<_> = examples
            .iter()
            .zip(predictions)
            .filter(|(e, _)| e.mode == mode)
            .collect();
        scores.mode_compliance_by_mode.insert(
            mode.name().into(),
            ratio(in_mode.iter().filter(|(e, p)| obeys(e, p)).count(), in_mode.len()),
        );
    }
    scores.tone_audit = ratio(
        predictions.iter().filter(|p| tone_ok(&p.response)).count(),
        predictions.len(),
    );
    scores.als_alignment = ratio(
        examples
            .iter()
            .zip(predictions)
            .filter(|(e, p)| p.channel == Some(e.guidance.channel))
            .count(),
        examples.len(),
    );
    let interventions = predictions.iter().filter(|p| p.command.kind != NONE).count();
    let minutes = examples.len() as f64 * SNAPSHOT_SECONDS / 60.0;
    scores.interventions_per_minute = if minutes > 0.0 {
        interventions as f64 / minutes
    } else {
        0.0
    };
    scores.interventions_in_flow = examples
        .iter()
        .zip(predictions)
        .filter(|(e, p)| p.command.kind != NONE && e.moment.playing && e.moment.energy >= FLOW_ENERGY)
        .count();
    scores
}

/// The model's predictions on `examples`.
pub fn model_predictions(
    workspace: Option<&Path>,
    model: &[u8],
    examples: &[Example],
) -> anyhow::Result<Vec<Prediction>> {
    let decoded = ModelProto::decode(model).map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    let width = decoded
        .graph
        .as_ref()
        .and_then(|g| g.input.first())
        .and_then(|i| {
            i.r#type
                .as_ref()?
                .tensor_type
                .as_ref()?
                .shape
                .as_ref()?
                .dim
                .get(1)?
                .dim_value
        })
        .unwrap_or(0) as usize;
    anyhow::ensure!(
        examples.iter().all(|e| e.features.len() == width),
        "the model expects {width} features per example; the test set has other widths (rebuild one of them)"
    );
    let mut session = runtime::session(workspace, model, 1)?;
    let heads = heads();
    let mut predictions = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(1024) {
        let mut features = Vec::with_capacity(chunk.len() * width);
        for example in chunk {
            features.extend_from_slice(&example.features);
        }
        let outputs = session.run(ort::inputs!["features" => f32_value(&[chunk.len(), width], features)?])?;
        let probs: Vec<Vec<f32>> = heads
            .iter()
            .map(|h| {
                Ok(outputs[format!("{}_probs", h.name).as_str()]
                    .try_extract_tensor::<f32>()?
                    .1
                    .to_vec())
            })
            .collect::<anyhow::Result<_>>()?;
        for row in 0..chunk.len() {
            let ranked = |head: usize| -> Vec<usize> {
                let classes = heads[head].classes.len();
                let row_probs = &probs[head][row * classes..(row + 1) * classes];
                let mut order: Vec<usize> = (0..classes).collect();
                order.sort_by(|a, b| row_probs[*b].total_cmp(&row_probs[*a]).then(a.cmp(b)));
                order
            };
            let commands = ranked(0);
            let kind = heads[0].classes[commands[0]].clone();
            let needs_target = vocabulary::command(&kind).is_some_and(|c| c.needs_target);
            // A command that needs a target takes the best archetype; others take none.
            let target = if needs_target {
                ranked(1)
                    .into_iter()
                    .find(|&i| i != 0)
                    .map(|i| heads[1].classes[i].clone())
            } else {
                None
            };
            let channel = AlsChannel::ALL[ranked(3)[0]];
            let intensity = Intensity::ALL[ranked(4)[0]];
            predictions.push(Prediction {
                response: phrase(channel, intensity).to_string(),
                command: CommandTarget { kind, target },
                top3: commands.iter().take(3).map(|&i| heads[0].classes[i].clone()).collect(),
                channel: Some(channel),
            });
        }
    }
    Ok(predictions)
}

/// What the current rules said (stored in each example).
pub fn seed_predictions(examples: &[Example]) -> Vec<Prediction> {
    examples
        .iter()
        .map(|e| Prediction {
            response: e.seed_label.response.clone(),
            command: e.seed_label.command.clone(),
            top3: Vec::new(),
            channel: Some(e.guidance.channel),
        })
        .collect()
}

/// The most frequent command, always, said in the most frequent channel.
pub fn majority_predictions(examples: &[Example]) -> (String, Vec<Prediction>) {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut channels: BTreeMap<AlsChannel, usize> = BTreeMap::new();
    for e in examples {
        *counts.entry(&e.command.kind).or_insert(0) += 1;
        *channels.entry(e.guidance.channel).or_insert(0) += 1;
    }
    let class = counts
        .iter()
        .max_by_key(|(k, c)| (**c, std::cmp::Reverse(*k)))
        .map_or(NONE, |(k, _)| k)
        .to_string();
    let channel = channels
        .iter()
        .max_by_key(|(_, c)| **c)
        .map_or(AlsChannel::Pulse, |(k, _)| *k);
    let prediction = Prediction {
        response: phrase(channel, Intensity::Whisper).into(),
        command: CommandTarget {
            kind: class.clone(),
            target: None,
        },
        top3: Vec::new(),
        channel: Some(channel),
    };
    (class, vec![prediction; examples.len()])
}

/// Reads external predictions, one JSON object per test example.
pub fn read_predictions(path: &Path, expected: usize) -> anyhow::Result<Vec<Prediction>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let predictions: Vec<Prediction> = crate::jsonl::parse(
        &text,
        path,
        "expected {\"response\": \"...\", \"command\": {\"type\": \"...\"}}",
        None,
    )?;
    anyhow::ensure!(
        predictions.len() == expected,
        "{} has {} predictions for {expected} test examples",
        path.display(),
        predictions.len()
    );
    Ok(predictions)
}

/// What the model column is scored from.
pub enum Candidate {
    /// A model.onnx.
    Model(PathBuf),
    /// External predictions (JSONL).
    Predictions(PathBuf),
}

/// Where evaluation writes.
pub struct EvalOutputs {
    /// `metrics.json`.
    pub metrics: PathBuf,
    /// The Markdown report.
    pub report: PathBuf,
    /// The loss-curve chart (SVG).
    pub loss_chart: PathBuf,
    /// The confusion-matrix chart (SVG).
    pub confusion_chart: PathBuf,
    /// How the report links to the two charts.
    pub chart_links: (String, String),
}

/// Evaluates and writes everything; returns the metrics and the names of failed gates.
pub fn evaluate(
    workspace: Option<&Path>,
    candidate: &Candidate,
    test: &Path,
    training_log: Option<&Path>,
    gates: &Gates,
    outputs: &EvalOutputs,
) -> anyhow::Result<(Metrics, Vec<String>)> {
    let examples = super::train::read_examples(test)?;
    anyhow::ensure!(!examples.is_empty(), "{} holds no test examples", test.display());
    let (candidate_name, predictions) = match candidate {
        Candidate::Model(path) => {
            let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            ("model", model_predictions(workspace, &bytes, &examples)?)
        }
        Candidate::Predictions(path) => ("external predictions", read_predictions(path, examples.len())?),
    };
    let model = score(&examples, &predictions);
    let seed_rules = score(&examples, &seed_predictions(&examples));
    let (majority_class, majority) = majority_predictions(&examples);
    let majority = score(&examples, &majority);
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (e, p) in examples.iter().zip(&predictions) {
        *confusion
            .entry(e.command.kind.clone())
            .or_default()
            .entry(p.command.kind.clone())
            .or_insert(0) += 1;
    }
    let mut results = BTreeMap::new();
    results.insert(
        "min_command_accuracy".to_string(),
        model.command_accuracy >= gates.min_command_accuracy,
    );
    results.insert(
        "min_mode_compliance".to_string(),
        model.mode_compliance >= gates.min_mode_compliance,
    );
    results.insert("min_tone_audit".to_string(), model.tone_audit >= gates.min_tone_audit);
    results.insert(
        "max_interventions_per_minute".to_string(),
        model.interventions_per_minute <= gates.max_interventions_per_minute,
    );
    if gates.beat_baselines {
        results.insert(
            "beat_baselines".to_string(),
            model.command_accuracy > seed_rules.command_accuracy && model.command_accuracy > majority.command_accuracy,
        );
    }
    let failed: Vec<String> = results.iter().filter(|(_, ok)| !**ok).map(|(k, _)| k.clone()).collect();
    let metrics = Metrics {
        examples: examples.len(),
        model,
        seed_rules,
        majority,
        majority_class,
        gates: results,
        confusion,
    };
    std::fs::write(&outputs.metrics, serde_json::to_string_pretty(&metrics)? + "\n")?;
    let losses: Vec<f64> = match training_log {
        Some(path) => {
            let log: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            log["epochs"]
                .as_array()
                .map(|a| a.iter().filter_map(|e| e["loss"].as_f64()).collect())
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    std::fs::write(
        &outputs.loss_chart,
        super::charts::line_chart("Training loss per epoch", &losses),
    )?;
    std::fs::write(
        &outputs.confusion_chart,
        super::charts::confusion_matrix(&metrics.confusion),
    )?;
    std::fs::write(
        &outputs.report,
        super::report::markdown(&metrics, candidate_name, &failed, &outputs.chart_links),
    )?;
    Ok((metrics, failed))
}
