//! `onnx.eval`: scores the model against the doctrine on the test split, side
//! by side with the seed-label rules and a majority baseline, and writes
//! `metrics.json`, a Markdown report and SVG charts.
//!
//! Every metric is one a bad predictor gets wrong (each has a test with a
//! deliberately bad one):
//!
//! - command accuracy (top-1, top-3, target) and macro-F1, against what the
//!   user did next: a constant answer scores the majority share and a low
//!   macro-F1;
//! - command JSON validity: commands outside the vocabulary, a missing or
//!   wrong target, a missing or invalid argument, or malformed JSON count as
//!   invalid ([`CommandTarget::executable`]);
//! - argument accuracy: where the user's command carried arguments (buffer
//!   size, amount, tempo) and the type was named right, whether the
//!   arguments are the user's;
//! - mode compliance, overall and per mode: a command the doctrine forbids in
//!   the mode (anything in passive mode unless health is critical);
//! - intensity: accuracy against the doctrine's intensity, and compliance (a
//!   call without critical health, or a nudge in passive mode, fails it);
//! - the tone audit ([`prime_brain::tone`]): harsh, blaming, urgent,
//!   shouting, numeric, jargon-laden, long or cue-less texts fail it;
//! - ALS/Bloom alignment: where the user acted (issued a command or accepted
//!   a Bloom suggestion), whether the guidance went out on that action's
//!   channel; the wrong channel fails it;
//! - Flow impact in a closed loop ([`super::flow`]): accepted and dismissed
//!   suggestions, flow breaks, time kept in flow and interventions per
//!   minute, per mode; interrupting a user in flow fails it.
//!
//! The majority baseline always answers the most frequent command of the
//! test split (an upper bound for any constant answer). External predictions
//! (`--predictions`, JSONL of `{response, command, channel?, intensity?}` per
//! test example) face the same audit in the model's column.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use super::flow::FlowImpact;
use super::mlp::{Head, argument_value, heads};
use super::proto::ModelProto;
use super::runtime;
use super::tensors::f32_value;
use prime_brain::dataset::{
    CommandTarget, Example, FeatureNames, flag_feature, guidance_intensity, new_command_feature,
};
use prime_brain::labels::{allowed, intensity_allowed};
use prime_brain::schema::{AlsChannel, FlagCategory, Intensity, Mode, Severity};
use prime_brain::simulate::{self, Need, SPONTANEOUS, Style, answer_targets};
use prime_brain::tone::{ToneIssue, phrase, tone_issues};
use prime_brain::vocabulary::{self, AMOUNT, COMMANDS, NONE, SIZE};

/// Regression gates: the `with` table of `onnx.eval` and the flags of
/// `fabric evaluate`, declared once. Defaults are the doctrine's floor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Minimum top-1 command accuracy.
    #[serde(default)]
    #[arg(long, default_value_t = 0.0)]
    pub min_command_accuracy: f64,
    /// Minimum command macro-F1 (always answering one class scores low).
    #[serde(default = "defaults::macro_f1")]
    #[arg(long, default_value_t = defaults::macro_f1())]
    pub min_macro_f1: f64,
    /// Minimum share of commands that are valid JSON in the vocabulary.
    #[serde(default = "defaults::one")]
    #[arg(long, default_value_t = defaults::one())]
    pub min_command_json_validity: f64,
    /// Minimum share of predictions obeying the mode boundaries.
    #[serde(default = "defaults::one")]
    #[arg(long, default_value_t = defaults::one())]
    pub min_mode_compliance: f64,
    /// Minimum share of predictions speaking no louder than the mode allows.
    #[serde(default = "defaults::one")]
    #[arg(long, default_value_t = defaults::one())]
    pub min_intensity_compliance: f64,
    /// Minimum share of guidance texts passing the tone audit.
    #[serde(default = "defaults::one")]
    #[arg(long, default_value_t = defaults::one())]
    pub min_tone_audit: f64,
    /// Minimum share of guidance on the channel of what the user did.
    #[serde(default = "defaults::als_alignment")]
    #[arg(long, default_value_t = defaults::als_alignment())]
    pub min_als_alignment: f64,
    /// Maximum interventions per minute.
    #[serde(default = "defaults::interventions")]
    #[arg(long, default_value_t = defaults::interventions())]
    pub max_interventions_per_minute: f64,
    /// Minimum share of the user's time in flow kept (closed loop).
    #[serde(default = "defaults::time_in_flow")]
    #[arg(long, default_value_t = defaults::time_in_flow())]
    pub min_time_in_flow: f64,
    /// Minimum accepted share of interventions (closed loop; silence
    /// accepts nothing).
    #[serde(default = "defaults::acceptance")]
    #[arg(long, default_value_t = defaults::acceptance())]
    pub min_acceptance: f64,
    /// The model must beat the seed rules and the majority baseline on
    /// command accuracy, macro-F1 and target accuracy.
    #[serde(default)]
    #[arg(long)]
    pub beat_baselines: bool,
    /// Minimum share of the macro-F1 gap between the majority baseline and
    /// the oracle that the model closes (0.5: at least halfway).
    #[serde(default)]
    #[arg(long, default_value_t = 0.0)]
    pub min_oracle_gap_closed: f64,
}

/// The floors: a constant answer fails macro-F1 and acceptance, a predictor
/// that speaks on the wrong channel fails alignment, one that costs the user
/// more than a third of their flow fails time in flow.
mod defaults {
    pub fn one() -> f64 {
        1.0
    }
    pub fn macro_f1() -> f64 {
        0.15
    }
    pub fn als_alignment() -> f64 {
        0.75
    }
    pub fn interventions() -> f64 {
        3.0
    }
    pub fn time_in_flow() -> f64 {
        0.7
    }
    pub fn acceptance() -> f64 {
        0.2
    }
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
    /// How strongly it is said (a nudge when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intensity: Option<Intensity>,
    /// False when the command was not a well-formed command JSON object
    /// (scored invalid, and as an intervention).
    #[serde(skip, default = "well_formed")]
    pub well_formed: bool,
}

fn well_formed() -> bool {
    true
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
    /// Argument accuracy: over examples whose command carries arguments and
    /// whose command type was predicted right, the share with the same
    /// arguments (0 when no such type was predicted right).
    pub argument_accuracy: f64,
    /// Macro-F1 over command classes.
    pub macro_f1: f64,
    /// Share of emitted commands that are valid JSON in the vocabulary,
    /// executable as they are (target and arguments complete and valid).
    pub command_json_validity: f64,
    /// Share of predictions obeying the mode boundaries.
    pub mode_compliance: f64,
    /// The same, per mode.
    pub mode_compliance_by_mode: BTreeMap<String, f64>,
    /// Share of predictions at the intensity the doctrine asks for.
    pub intensity_accuracy: f64,
    /// Share of predictions no louder than the mode allows (a call only
    /// for critical health; in passive mode otherwise only a whisper).
    pub intensity_compliance: f64,
    /// Share of guidance texts passing the tone audit.
    pub tone_audit: f64,
    /// Guidance texts failing the tone audit, by what is wrong.
    pub tone_issues: BTreeMap<String, usize>,
    /// Share of examples where the user acted whose guidance went out on the
    /// channel of what they did.
    pub als_alignment: f64,
    /// The closed-loop replay: reactions, time kept in flow, interventions.
    pub flow: FlowImpact,
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
    /// A predictor that knows each simulated user's hidden style
    /// ([`oracle_predictions`]): the ceiling.
    pub oracle: Scores,
    /// The share of the macro-F1 gap from the majority baseline to the
    /// oracle the model closes ([`gap_closed`]).
    pub oracle_gap_closed: f64,
    /// The majority class.
    pub majority_class: String,
    /// Gate results: name → passed.
    pub gates: BTreeMap<String, bool>,
    /// Confusion counts of the model: truth → predicted → count (drawn in
    /// the report's chart, kept out of the metrics file).
    #[serde(skip)]
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Moments sampled for the report's qualitative half (kept out of the
    /// metrics file).
    #[serde(skip)]
    pub samples: Vec<Sample>,
}

/// One moment as the user would see it: the context in words, what the
/// candidate and the seed rules said and did, and what the user did.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The mode.
    pub mode: Mode,
    /// The situation, in words.
    pub context: String,
    /// The candidate's words and command.
    pub candidate: (String, CommandTarget),
    /// The seed rules' words and command.
    pub seed_rules: (String, CommandTarget),
    /// What the user did next.
    pub user: CommandTarget,
}

/// Per mode, the first moment where the user acted and the first where the
/// candidate intervened (in test-split order, so the same every run).
fn sample_moments(examples: &[Example], candidate: &[Prediction], seed: &[Prediction]) -> Vec<Sample> {
    let mut samples = Vec::new();
    for mode in Mode::ALL {
        let in_mode = || examples.iter().enumerate().filter(move |(_, e)| e.mode == mode);
        let acted = in_mode().find(|(_, e)| e.command.kind != NONE).map(|(i, _)| i);
        let intervened = in_mode()
            .find(|(i, _)| candidate[*i].command.kind != NONE && Some(*i) != acted)
            .map(|(i, _)| i);
        for i in [acted, intervened].into_iter().flatten() {
            let e = &examples[i];
            samples.push(Sample {
                mode,
                context: super::report::context(e),
                candidate: (candidate[i].response.clone(), candidate[i].command.clone()),
                seed_rules: (seed[i].response.clone(), seed[i].command.clone()),
                user: e.command.clone(),
            });
        }
    }
    samples
}

/// Whether two argument maps say the same (numbers compared as numbers).
fn same_args(a: Option<&BTreeMap<String, serde_json::Value>>, b: Option<&BTreeMap<String, serde_json::Value>>) -> bool {
    let (empty_a, empty_b) = (BTreeMap::new(), BTreeMap::new());
    let (a, b) = (a.unwrap_or(&empty_a), b.unwrap_or(&empty_b));
    a.len() == b.len()
        && a.iter()
            .all(|(name, x)| b.get(name).is_some_and(|y| vocabulary::same_value(x, y)))
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
    let argued: Vec<_> = examples
        .iter()
        .zip(predictions)
        .filter(|(e, p)| e.command.args.is_some() && p.command.kind == e.command.kind)
        .collect();
    // Nothing named right is no argument right (not a vacuous 100%).
    let right = argued
        .iter()
        .filter(|(e, p)| same_args(e.command.args.as_ref(), p.command.args.as_ref()))
        .count();
    scores.argument_accuracy = right as f64 / argued.len().max(1) as f64;
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
            .filter(|p| p.well_formed && p.command.executable())
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
    let intensity = |p: &Prediction| p.intensity.unwrap_or(Intensity::Nudge);
    scores.intensity_accuracy = ratio(
        examples
            .iter()
            .zip(predictions)
            .filter(|(e, p)| intensity(p) == e.guidance.intensity)
            .count(),
        examples.len(),
    );
    scores.intensity_compliance = ratio(
        examples
            .iter()
            .zip(predictions)
            .filter(|(e, p)| intensity_allowed(e.mode, intensity(p), e.critical))
            .count(),
        examples.len(),
    );
    let issues: Vec<Vec<ToneIssue>> = predictions.iter().map(|p| tone_issues(&p.response)).collect();
    scores.tone_audit = ratio(issues.iter().filter(|i| i.is_empty()).count(), predictions.len());
    for issue in issues.iter().flatten() {
        *scores.tone_issues.entry(issue.name().to_string()).or_insert(0) += 1;
    }
    let acted: Vec<_> = examples
        .iter()
        .zip(predictions)
        .filter_map(|(e, p)| Some((vocabulary::command(&e.command.kind)?.channel, p)))
        .collect();
    scores.als_alignment = ratio(
        acted.iter().filter(|(channel, p)| p.channel == Some(*channel)).count(),
        acted.len(),
    );
    scores.flow = super::flow::replay(examples, predictions);
    scores
}

/// The model's predictions on `examples`.
pub fn model_predictions(
    workspace: Option<&Path>,
    model: &[u8],
    examples: &[Example],
) -> anyhow::Result<Vec<Prediction>> {
    predictions_choosing(workspace, model, examples, |_| None)
}

/// The model's predictions on `examples`, with `choose` picking each
/// command's class from the command head's probabilities (none: the best,
/// as [`decode`] does; a policy being reinforced draws one instead).
pub fn predictions_choosing(
    workspace: Option<&Path>,
    model: &[u8],
    examples: &[Example],
    mut choose: impl FnMut(&[f32]) -> Option<usize>,
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
        let rows = head_probabilities(&mut session, &heads, features, chunk.len(), width)?;
        for (row, example) in rows.iter().zip(chunk) {
            let slices: Vec<&[f32]> = row.iter().map(Vec::as_slice).collect();
            let mut prediction = decode(&heads, &slices, &example.features);
            if let Some(class) = choose(slices[0]) {
                prediction.command = decode_command(&heads, &slices, &example.features, class);
            }
            predictions.push(prediction);
        }
    }
    Ok(predictions)
}

/// Runs the model on `rows` feature vectors of `width` values (row-major)
/// and returns, for each row, its probabilities per head in `heads` order.
pub fn head_probabilities(
    session: &mut ort::session::Session,
    heads: &[Head],
    features: Vec<f32>,
    rows: usize,
    width: usize,
) -> anyhow::Result<Vec<Vec<Vec<f32>>>> {
    let outputs = session.run(ort::inputs![super::mlp::INPUT => f32_value(&[rows, width], features)?])?;
    let probs: Vec<Vec<f32>> = heads
        .iter()
        .map(|h| {
            Ok(outputs[format!("{}_probs", h.name).as_str()]
                .try_extract_tensor::<f32>()?
                .1
                .to_vec())
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((0..rows)
        .map(|row| {
            heads
                .iter()
                .zip(&probs)
                .map(|(head, all)| all[row * head.classes.len()..(row + 1) * head.classes.len()].to_vec())
                .collect()
        })
        .collect())
}

/// The answer one row of the model's outputs gives (`probs` per head, in
/// [`heads`] order) for the window with `features`: the best command; for a
/// command that needs a target, the best archetype; for each argument it
/// requires, the best value of that argument's head (for the tempo, the
/// window's tempo changed by the best step, checked against the range: a
/// tempo out of range leaves no executable command, so the answer is
/// `none`); the best channel and intensity, and their phrase. Ties go to the
/// lower class index. The Studio's TypeScript decoder ([`super::studio`])
/// mirrors this, checked by its test vectors.
pub fn decode(heads: &[Head], probs: &[&[f32]], features: &[f32]) -> Prediction {
    let commands = ranked(probs[0]);
    let channel = AlsChannel::ALL[ranked(probs[3])[0]];
    let intensity = Intensity::ALL[ranked(probs[4])[0]];
    Prediction {
        response: phrase(channel, intensity).to_string(),
        command: decode_command(heads, probs, features, commands[0]),
        top3: commands.iter().take(3).map(|&i| heads[0].classes[i].clone()).collect(),
        channel: Some(channel),
        intensity: Some(intensity),
        well_formed: true,
    }
}

/// Class indices of one head's probabilities, best first (ties: lower index).
fn ranked(row: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
    order
}

/// The command of class `class` of the command head, with its best target
/// and arguments from the other heads (see [`decode`]).
pub fn decode_command(heads: &[Head], probs: &[&[f32]], features: &[f32], class: usize) -> CommandTarget {
    let kind = &heads[0].classes[class];
    let spec = vocabulary::command(kind);
    let target = if spec.is_some_and(|c| c.needs_target) {
        ranked(probs[1])
            .into_iter()
            .find(|&i| i != 0)
            .map(|i| heads[1].classes[i].as_str())
    } else {
        None
    };
    let mut command = CommandTarget::new(kind, target);
    for arg in spec.map_or(&[][..], |c| c.args) {
        let head = heads
            .iter()
            .position(|h| h.name == arg.name)
            .expect("a head per argument");
        let best = ranked(probs[head])[0];
        let Some(value) = argument_value(arg, &heads[head].classes[best], features) else {
            return CommandTarget::none();
        };
        command.args.get_or_insert_default().insert(arg.name.to_string(), value);
    }
    command
}

/// What the current rules said (stored in each example).
pub fn seed_predictions(examples: &[Example]) -> Vec<Prediction> {
    examples
        .iter()
        .map(|e| Prediction {
            response: e.seed_label.response.clone(),
            command: e.seed_label.command.clone(),
            top3: Vec::new(),
            channel: Some(e.seed_label.channel),
            intensity: Some(e.seed_label.intensity),
            well_formed: true,
        })
        .collect()
}

/// What a predictor that knows each simulated user's hidden style would
/// answer: the simulated user's own policy ([`Need`]) applied to the moment
/// the window ends on, with the style as the session's actions reveal it
/// (for each need, the answer the user gave somewhere in the session; a
/// need the session never answered has no known answer). It answers the
/// first present need the user answers more often than not, nothing the
/// step after the user answered one, and nothing the doctrine forbids; it
/// targets the answer's likeliest track, and its channel
/// and intensity are the doctrine's for that command. Spontaneous commands
/// (the transport), rare answers and a random track cannot be foreseen even
/// knowing the style, so the oracle is the ceiling a predictor can
/// approach, not 100%.
pub fn oracle_predictions(examples: &[Example]) -> Vec<Prediction> {
    let names = FeatureNames::default();
    // The command types each session's user issued, and whether their mix
    // moves came out stronger than a plain user's (their boldness).
    let mut answers: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut amounts: BTreeMap<&str, bool> = BTreeMap::new();
    for e in examples {
        answers.entry(&e.session).or_default().insert(&e.command.kind);
        let bold = amounts.entry(&e.session).or_default();
        if let Some(amount) = e.command.args.as_ref().and_then(|a| a.get(AMOUNT.name)) {
            *bold |= amount != Style::default().amount(answer_severity(&e.command.kind, e, &names));
        }
    }
    examples
        .iter()
        .map(|e| {
            let on = |name: &str| names.get(&e.features, name) > 0.0;
            let flags: Vec<FlagCategory> = FlagCategory::ALL
                .into_iter()
                .filter(|c| Severity::ALL.iter().any(|s| on(&flag_feature(*c, *s))))
                .collect();
            let session = &answers[e.session.as_str()];
            let just_answered = COMMANDS
                .iter()
                .any(|c| !SPONTANEOUS.contains(&c.kind) && on(&new_command_feature(c.kind)));
            let loops = session.contains(Need::Loop.answers()[0]);
            let playing = on("transport.playing");
            let need = Need::ALL
                .into_iter()
                .find(|need| need.present(&flags, playing, loops) && need.answer_rate() > 0.5)
                .filter(|_| !just_answered);
            let kind = need
                .and_then(|need| need.answers().iter().find(|kind| session.contains(**kind)))
                .filter(|kind| allowed(e.mode, kind, e.critical));
            let command = match kind {
                Some(kind) => CommandTarget {
                    args: oracle_args(kind, e, &names, &amounts[e.session.as_str()]),
                    ..CommandTarget::new(kind, answer_targets(kind).first().map(|(track, _)| *track))
                },
                None => CommandTarget::none(),
            };
            let channel = vocabulary::command(&command.kind).map_or(e.seed_label.channel, |c| c.channel);
            let intensity = guidance_intensity(e.mode, e.critical, e.moment.in_flow(), &command);
            Prediction {
                response: phrase(channel, intensity).to_string(),
                command,
                top3: Vec::new(),
                channel: Some(channel),
                intensity: Some(intensity),
                well_formed: true,
            }
        })
        .collect()
}

/// The severity of the mix flag a mix move at `e` answers (none for a move
/// that answers no flag: only an EQ cut answers the muddy mix).
fn answer_severity(kind: &str, e: &Example, names: &FeatureNames) -> Option<Severity> {
    (Need::MudFix.answers().contains(&kind) && simulate::needs_amount(kind)).then_some(())?;
    Severity::ALL
        .into_iter()
        .rev()
        .find(|s| names.get(&e.features, &flag_feature(FlagCategory::Mix, *s)) > 0.0)
}

/// The arguments the oracle gives a command of type `kind` at `e`: the
/// buffer doubled, a mix move as strong as the session's user makes it
/// (`bold`: as their session reveals).
fn oracle_args(
    kind: &str,
    e: &Example,
    names: &FeatureNames,
    bold: &bool,
) -> Option<BTreeMap<String, serde_json::Value>> {
    let (name, value) = if kind == "engine.setBufferSize" {
        let buffer = 2f64
            .powf(f64::from(names.get(&e.features, "health.bufferSize")) * 8.0 + 5.0)
            .round();
        (SIZE.name, serde_json::json!(buffer as u64 * 2))
    } else if simulate::needs_amount(kind) {
        let style = Style {
            bold: *bold,
            ..Style::default()
        };
        (
            AMOUNT.name,
            serde_json::json!(style.amount(answer_severity(kind, e, names))),
        )
    } else {
        return None;
    };
    Some(BTreeMap::from([(name.to_string(), value)]))
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
        command: CommandTarget::new(&class, None),
        top3: Vec::new(),
        channel: Some(channel),
        intensity: Some(Intensity::Whisper),
        well_formed: true,
    };
    (class, vec![prediction; examples.len()])
}

/// An external prediction as written, before its command is checked.
#[derive(Deserialize)]
struct RawPrediction {
    #[serde(default)]
    response: String,
    #[serde(default)]
    command: serde_json::Value,
    #[serde(default)]
    top3: Vec<String>,
    #[serde(default)]
    channel: Option<serde_json::Value>,
    #[serde(default)]
    intensity: Option<serde_json::Value>,
}

impl From<RawPrediction> for Prediction {
    /// A command may come as an object or as a string of JSON (as language
    /// models write it); anything else, arguments the command does not take,
    /// or an unknown channel or intensity, is kept and scored as wrong rather
    /// than refused.
    fn from(raw: RawPrediction) -> Prediction {
        let command = match raw.command {
            serde_json::Value::String(text) => serde_json::from_str(&text).ok(),
            value => Some(value),
        }
        .filter(|value: &serde_json::Value| {
            // Arguments, when given, must be ones the command takes.
            let kind = value.get("type").and_then(|t| t.as_str()).unwrap_or_default();
            match value.get("args") {
                None => true,
                Some(serde_json::Value::Object(args)) => vocabulary::valid_args(kind, args),
                Some(_) => false,
            }
        })
        .and_then(|value| serde_json::from_value::<CommandTarget>(value).ok());
        Prediction {
            response: raw.response,
            well_formed: command.is_some(),
            command: command.unwrap_or(CommandTarget::new("malformed", None)),
            top3: raw.top3,
            channel: raw.channel.and_then(|v| serde_json::from_value(v).ok()),
            intensity: raw.intensity.and_then(|v| serde_json::from_value(v).ok()),
        }
    }
}

/// Reads external predictions, one JSON object per test example.
pub fn read_predictions(path: &Path, expected: usize) -> anyhow::Result<Vec<Prediction>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let predictions: Vec<RawPrediction> = fabric_core::jsonl::parse(
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
    Ok(predictions.into_iter().map(Prediction::from).collect())
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

/// Whether `model` scores above `baseline` on command accuracy, macro-F1
/// and target accuracy.
fn beats(model: &Scores, baseline: &Scores) -> bool {
    model.command_accuracy > baseline.command_accuracy
        && model.macro_f1 > baseline.macro_f1
        && model.target_accuracy > baseline.target_accuracy
}

/// The share of the macro-F1 gap from `floor` to `ceiling` that `model`
/// closes (1 when there is no gap to close; below 0 under the floor).
pub fn gap_closed(model: &Scores, floor: &Scores, ceiling: &Scores) -> f64 {
    let gap = ceiling.macro_f1 - floor.macro_f1;
    if gap <= 0.0 {
        1.0
    } else {
        (model.macro_f1 - floor.macro_f1) / gap
    }
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
    let seed = seed_predictions(&examples);
    let seed_rules = score(&examples, &seed);
    let (majority_class, majority) = majority_predictions(&examples);
    let majority = score(&examples, &majority);
    let oracle = score(&examples, &oracle_predictions(&examples));
    let oracle_gap_closed = gap_closed(&model, &majority, &oracle);
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for (e, p) in examples.iter().zip(&predictions) {
        *confusion
            .entry(e.command.kind.clone())
            .or_default()
            .entry(p.command.kind.clone())
            .or_insert(0) += 1;
    }
    let results = BTreeMap::from([
        (
            "min_command_accuracy",
            model.command_accuracy >= gates.min_command_accuracy,
        ),
        ("min_macro_f1", model.macro_f1 >= gates.min_macro_f1),
        (
            "min_command_json_validity",
            model.command_json_validity >= gates.min_command_json_validity,
        ),
        (
            "min_mode_compliance",
            model.mode_compliance >= gates.min_mode_compliance,
        ),
        (
            "min_intensity_compliance",
            model.intensity_compliance >= gates.min_intensity_compliance,
        ),
        ("min_tone_audit", model.tone_audit >= gates.min_tone_audit),
        ("min_als_alignment", model.als_alignment >= gates.min_als_alignment),
        (
            "max_interventions_per_minute",
            model.flow.interventions_per_minute <= gates.max_interventions_per_minute,
        ),
        ("min_time_in_flow", model.flow.time_in_flow >= gates.min_time_in_flow),
        ("min_acceptance", model.flow.acceptance >= gates.min_acceptance),
        (
            "beat_baselines",
            !gates.beat_baselines || [&seed_rules, &majority].iter().all(|baseline| beats(&model, baseline)),
        ),
        (
            "min_oracle_gap_closed",
            oracle_gap_closed >= gates.min_oracle_gap_closed,
        ),
    ]);
    let results: BTreeMap<String, bool> = results.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let failed: Vec<String> = results.iter().filter(|(_, ok)| !**ok).map(|(k, _)| k.clone()).collect();
    let metrics = Metrics {
        examples: examples.len(),
        model,
        seed_rules,
        majority,
        oracle,
        oracle_gap_closed,
        majority_class,
        gates: results,
        confusion,
        samples: sample_moments(&examples, &predictions, &seed),
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
