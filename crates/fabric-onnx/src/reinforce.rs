//! `onnx.reinforce`: the supervised model fine-tuned in the closed loop.
//!
//! The model suggests, the simulated user reacts ([`super::flow::walk`]: the
//! replay the evaluation scores Flow impact with), and the reaction is the
//! reward: [`REWARD_ACCEPTED`] for a suggestion the user wanted,
//! [`REWARD_DISMISSED`] for one waved away, [`REWARD_FLOW_BREAK`] for one
//! that broke their flow, nothing for silence. Each epoch samples one
//! command per train example from the model's (doctrine-masked) command
//! head, replays the sessions with them, and takes one REINFORCE pass: the
//! same explicit-gradient train-step graph as supervised training, with the
//! sampled command as the label and its advantage (reward minus the epoch's
//! mean) as a signed weight. Only the command head's weights move (the
//! others are frozen in the graph), so the hidden layers and the other
//! heads — intensity, target, arguments — keep what supervised training
//! taught them.
//!
//! The decision is made on sessions the fine-tune never saw: those of
//! validation users (simulated users other than the train and the test
//! split's, [`Validation::Users`]; the default pipeline's), or else a share
//! of the train split's sessions left out of the fine-tune
//! ([`Validation::Sessions`], [`ReinforceOptions::validation_fraction`]).
//! Both models answer them greedily, in the same closed loop; the
//! reinforced one is kept only if its mean reward per step is higher there.
//! Otherwise the stage's model is the supervised one, byte for byte. Both
//! models then answer the test split's sessions too (in the default
//! pipeline those of held-out users), which decided nothing: the report
//! gives both comparisons, the gain on the test sessions being the one to
//! quote (the evaluation reports on that split as well).

use std::borrow::Cow;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::eval::{Prediction, predictions_choosing};
use super::flow::{Reaction, Step, walk};
use super::mlp::{
    Architecture, Head, Param, StepSettings, heads, inference_graph, merge_heads, split_heads, train_step_graph,
};
use super::proto::{ModelProto, data_type};
use super::stepper::{StepRow, Stepper};
use super::train::released_params;
use fabric_core::steps::BadOption;
use prime_brain::dataset::{Example, session_draw};
use prost::Message;

/// Reward of a suggestion the user wanted.
pub const REWARD_ACCEPTED: f64 = 1.0;
/// Reward of a suggestion the user waved away: an interruption.
pub const REWARD_DISMISSED: f64 = -0.25;
/// Reward of a suggestion that broke the user's flow (which then takes
/// half a minute to come back).
pub const REWARD_FLOW_BREAK: f64 = -3.0;

/// The reward of one step of the closed loop.
pub fn reward(step: &Step) -> f64 {
    match step.reaction {
        None => 0.0,
        Some(Reaction::Accepted) => REWARD_ACCEPTED,
        Some(Reaction::Dismissed) => REWARD_DISMISSED,
        Some(Reaction::FlowBreak) => REWARD_FLOW_BREAK,
    }
}

/// The `with` table of `onnx.reinforce`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReinforceOptions {
    /// Passes over the train split.
    pub epochs: usize,
    /// Adam learning rate of the fine-tune.
    pub learning_rate: f64,
    /// Examples per step.
    pub batch_size: usize,
    /// Seed of the sampling and the order.
    pub seed: u64,
    /// ONNX Runtime threads (1: byte-reproducible).
    pub threads: usize,
    /// Share of the train split's sessions left out of the fine-tune to
    /// decide whether to keep it (at least one session, and one left to
    /// train on) when no validation users are given; unset:
    /// [`DEFAULT_VALIDATION_FRACTION`].
    pub validation_fraction: Option<f64>,
}

/// The share of the train split's sessions left out to decide on when
/// neither validation users nor `validation_fraction` are given.
pub const DEFAULT_VALIDATION_FRACTION: f64 = 0.2;

impl Default for ReinforceOptions {
    fn default() -> Self {
        ReinforceOptions {
            epochs: 10,
            learning_rate: 0.0005,
            batch_size: 256,
            seed: 57,
            threads: 1,
            validation_fraction: None,
        }
    }
}

impl ReinforceOptions {
    /// Checks the values serde cannot.
    pub fn check(&self) -> Result<(), BadOption> {
        if self.batch_size == 0 {
            return Err(BadOption::new("batch_size", "must be at least 1"));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return Err(BadOption::new("learning_rate", "must be a positive number"));
        }
        if self.threads == 0 {
            return Err(BadOption::new("threads", "must be at least 1"));
        }
        if self.validation_fraction.is_some_and(|f| !(f > 0.0 && f < 1.0)) {
            return Err(BadOption::new(
                "validation_fraction",
                "must be between 0 and 1 (exclusive)",
            ));
        }
        Ok(())
    }
}

/// How one model fared in the closed loop.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClosedLoop {
    /// Mean reward per step.
    pub reward: f64,
    /// Suggestions taken.
    pub accepted: usize,
    /// Suggestions waved away.
    pub dismissed: usize,
    /// Suggestions that broke the user's flow.
    pub flow_breaks: usize,
}

impl ClosedLoop {
    fn of(steps: &[Step]) -> ClosedLoop {
        let count = |reaction| steps.iter().filter(|s| s.reaction == Some(reaction)).count();
        ClosedLoop {
            reward: steps.iter().map(reward).sum::<f64>() / steps.len().max(1) as f64,
            accepted: count(Reaction::Accepted),
            dismissed: count(Reaction::Dismissed),
            flow_breaks: count(Reaction::FlowBreak),
        }
    }
}

/// One epoch of the fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochReward {
    /// 1-based.
    pub epoch: usize,
    /// Mean reward per step of the commands sampled this epoch.
    pub sampled_reward: f64,
}

/// Both models, greedy, on one set of sessions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Sessions replayed.
    pub sessions: usize,
    /// Examples (steps) replayed.
    pub examples: usize,
    /// The supervised model.
    pub supervised: ClosedLoop,
    /// The reinforced model.
    pub reinforced: ClosedLoop,
    /// Mean reward per step, reinforced minus supervised.
    pub gain: f64,
}

/// Where the keep-or-not decision is made.
#[derive(Debug, Clone, Copy)]
pub enum Validation<'a> {
    /// The examples of validation users, never seen in training; the whole
    /// train split is fine-tuned on.
    Users(&'a [Example]),
    /// A share of the train split's sessions, left out of the fine-tune
    /// ([`ReinforceOptions::validation_fraction`]).
    Sessions,
}

/// What the stage found: both models on the validation sessions (which
/// decided) and on the test split's (which did not), and which it kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReinforceReport {
    /// What the validation sessions are: `validation users` or `train
    /// sessions left out`.
    pub decided_on: &'static str,
    /// On the validation sessions: the decision.
    pub validation: Comparison,
    /// On the test split's sessions: the gain to quote.
    pub test: Comparison,
    /// `reinforced` when it won on the validation sessions, else `supervised`.
    pub kept: &'static str,
    /// The fine-tune, epoch by epoch.
    pub epochs: Vec<EpochReward>,
    /// The options used.
    pub options: ReinforceOptions,
}

/// The architecture and parameters of a model built by [`inference_graph`]:
/// the hidden sizes read from its `param.hiddenK.b`, the values by
/// [`released_params`].
fn parameters(model: &ModelProto) -> anyhow::Result<(Architecture, Vec<Param>)> {
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the model has no graph"))?;
    let tensor = |name: &str| graph.initializer.iter().find(|t| t.name == format!("param.{name}"));
    let first = tensor("hidden0.W").ok_or_else(|| {
        anyhow::anyhow!("not a Prime Brain MLP (no `param.hidden0.W`): reinforce fine-tunes the built-in architecture")
    })?;
    let arch = Architecture {
        features: first.dims[0] as usize,
        hidden: (0..)
            .map_while(|k| tensor(&format!("hidden{k}.b")).map(|t| t.dims[0] as usize))
            .collect(),
    };
    let params = released_params(model, &arch)?;
    Ok((arch, params))
}

/// The model's answers to `examples` and the command class of each: its
/// best (greedy), or one drawn from its command probabilities.
fn answers(
    workspace: Option<&std::path::Path>,
    model: &[u8],
    heads: &[Head],
    examples: &[Example],
    mut draw: Option<&mut ChaCha8Rng>,
) -> anyhow::Result<(Vec<Prediction>, Vec<usize>)> {
    let predictions = predictions_choosing(workspace, model, examples, |probs| {
        draw.as_deref_mut().map(|rng| sample(probs, rng))
    })?;
    let classes = predictions
        .iter()
        .map(|p| heads[0].classes.iter().position(|c| *c == p.command.kind).unwrap_or(0))
        .collect();
    Ok((predictions, classes))
}

/// A class drawn from `probs` (the doctrine's zeros are never drawn).
fn sample(probs: &[f32], rng: &mut ChaCha8Rng) -> usize {
    let total: f64 = probs.iter().map(|p| f64::from(*p)).sum();
    let mut left = rng.random::<f64>() * total;
    for (class, p) in probs.iter().enumerate() {
        left -= f64::from(*p);
        if left < 0.0 && *p > 0.0 {
            return class;
        }
    }
    probs.iter().rposition(|p| *p > 0.0).unwrap_or(0)
}

/// The train split's examples parted into the fine-tune's and the
/// validation sessions': the ⌈`fraction` × sessions⌉ sessions (at least
/// one, and one fewer than all) with the lowest [`session_draw`]s.
fn validation_split(train: &[Example], fraction: f64, seed: u64) -> anyhow::Result<(Vec<Example>, Vec<Example>)> {
    let mut sessions: Vec<&str> = train.iter().map(|e| e.session.as_str()).collect();
    sessions.sort_unstable();
    sessions.dedup();
    anyhow::ensure!(
        sessions.len() >= 2,
        "the train split holds {} session(s): the fine-tune needs two, one to train on and one to decide on",
        sessions.len()
    );
    let draw = |session: &str| session_draw("fabric-reinforce-validation-v1", seed, session);
    sessions.sort_by(|a, b| draw(a).total_cmp(&draw(b)).then(a.cmp(b)));
    let count = ((fraction * sessions.len() as f64).ceil() as usize).clamp(1, sessions.len() - 1);
    let validation: std::collections::HashSet<&str> = sessions[..count].iter().copied().collect();
    Ok(train
        .iter()
        .cloned()
        .partition(|e| !validation.contains(e.session.as_str())))
}

/// Fine-tunes the supervised `model` on `train` in the closed loop and
/// returns the model to keep (the reinforced one if it wins on the
/// `validation` sessions, else `model` itself) with the report, which
/// compares both on `test` too. Between epochs and batches it asks
/// `interrupted` and gives up when told so.
pub fn reinforce(
    workspace: Option<&std::path::Path>,
    model: &[u8],
    train: &[Example],
    validation: Validation,
    test: &[Example],
    options: &ReinforceOptions,
    interrupted: &dyn Fn() -> bool,
) -> anyhow::Result<(Vec<u8>, ReinforceReport)> {
    options.check()?;
    anyhow::ensure!(!train.is_empty(), "the train split holds no examples");
    let (train, validation, decided_on) = match validation {
        Validation::Users(users) => {
            anyhow::ensure!(
                options.validation_fraction.is_none(),
                "`validation_fraction` leaves train sessions out to decide on, but validation users are given (the 4th dep): remove one of them"
            );
            anyhow::ensure!(!users.is_empty(), "the validation users' dataset holds no examples");
            let trained: std::collections::HashSet<&str> = train.iter().map(|e| e.session.as_str()).collect();
            if let Some(shared) = users.iter().find(|e| trained.contains(e.session.as_str())) {
                anyhow::bail!(
                    "session {} is in the train split and among the validation users' (the 4th dep): the decision must be made on sessions the model never learned from; give the validation users' own dataset",
                    shared.session
                );
            }
            (Cow::Borrowed(train), Cow::Borrowed(users), "validation users")
        }
        Validation::Sessions => {
            let fraction = options.validation_fraction.unwrap_or(DEFAULT_VALIDATION_FRACTION);
            let (train, validation) = validation_split(train, fraction, options.seed)?;
            (Cow::Owned(train), Cow::Owned(validation), "train sessions left out")
        }
    };
    let train = &*train;
    let supervised = ModelProto::decode(model).map_err(|e| anyhow::anyhow!("not an ONNX model: {e}"))?;
    let (arch, initial) = parameters(&supervised)?;
    let heads = heads();
    // Only the command head moves: the hidden layers, and with them what
    // the other heads learned (intensity, target, arguments), stay.
    let settings = StepSettings {
        train_only: Some(vec!["command"]),
        ..StepSettings::default()
    };
    let initial = merge_heads(&initial);
    let step = train_step_graph(&arch, &initial, &settings, data_type::FLOAT);
    let mut stepper = Stepper::new(
        workspace,
        &step.encode_to_vec(),
        &heads,
        arch.features,
        &initial,
        options.learning_rate,
        options.threads,
    )?;
    let metadata: Vec<(String, String)> = supervised
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut current = model.to_vec();
    let mut epochs = Vec::with_capacity(options.epochs);
    let mut order: Vec<usize> = (0..train.len()).collect();
    for epoch in 1..=options.epochs {
        anyhow::ensure!(!interrupted(), fabric_core::steps::INTERRUPTED);
        let (predictions, classes) = answers(workspace, &current, &heads, train, Some(&mut rng))?;
        let rewards: Vec<f64> = walk(train, &predictions).iter().map(reward).collect();
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        epochs.push(EpochReward {
            epoch,
            sampled_reward: mean,
        });
        // The sampled command is the only label; the other heads have none.
        let labels: Vec<Vec<Option<usize>>> = classes
            .iter()
            .map(|class| {
                let mut row = vec![None; heads.len()];
                row[0] = Some(*class);
                row
            })
            .collect();
        order.shuffle(&mut rng);
        for batch in order.chunks(options.batch_size) {
            anyhow::ensure!(!interrupted(), fabric_core::steps::INTERRUPTED);
            let rows: Vec<StepRow> = batch
                .iter()
                .map(|&i| StepRow {
                    features: &train[i].features,
                    labels: &labels[i],
                    weight: (rewards[i] - mean) as f32,
                })
                .collect();
            stepper.step(&rows)?;
        }
        current = inference_graph(&arch, &split_heads(&stepper.params(&initial)?), metadata.clone()).encode_to_vec();
    }
    let compare = |examples: &[Example]| -> anyhow::Result<Comparison> {
        let greedy = |model: &[u8]| -> anyhow::Result<ClosedLoop> {
            let (predictions, _) = answers(workspace, model, &heads, examples, None)?;
            Ok(ClosedLoop::of(&walk(examples, &predictions)))
        };
        let (supervised, reinforced) = (greedy(model)?, greedy(&current)?);
        let mut sessions: Vec<&str> = examples.iter().map(|e| e.session.as_str()).collect();
        sessions.sort_unstable();
        sessions.dedup();
        Ok(Comparison {
            sessions: sessions.len(),
            examples: examples.len(),
            gain: reinforced.reward - supervised.reward,
            supervised,
            reinforced,
        })
    };
    let validation = compare(&validation)?;
    let wins = validation.gain > 0.0;
    let report = ReinforceReport {
        decided_on,
        validation,
        test: compare(test)?,
        kept: if wins { "reinforced" } else { "supervised" },
        epochs,
        options: options.clone(),
    };
    Ok((if wins { current } else { model.to_vec() }, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prime_brain::dataset::feature_layout;

    /// Sessions in active mode, not in flow, where the user now and then
    /// balances the levels: `sessions` of 60 steps with random features.
    fn sessions(sessions: usize, seed: u64) -> Vec<Example> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let width = feature_layout().len();
        let mut examples = Vec::new();
        for session in 0..sessions {
            for step in 0..60 {
                let mut features: Vec<f32> = (0..width).map(|_| rng.random_range(0.0..1.0)).collect();
                for (slot, mode) in features.iter_mut().zip(0..4) {
                    *slot = f32::from(u8::from(mode == 1));
                }
                features[feature_layout()
                    .iter()
                    .position(|n| n == "flags.performance.critical")
                    .unwrap()] = 0.0;
                features[feature_layout()
                    .iter()
                    .position(|n| n == "flags.health.critical")
                    .unwrap()] = 0.0;
                let command = if step % 20 == 19 { "mix.balanceLevels" } else { "none" };
                examples.push(
                    serde_json::from_value(serde_json::json!({
                        "session": format!("s{seed}-{session}"), "windowEnd": step, "mode": "active",
                        "critical": false, "features": features, "command": {"type": command},
                        "seedLabel": {"response": "All calm.", "command": {"type": "none"}, "channel": "pulse", "intensity": "whisper"},
                        "nextMode": "active", "guidance": {"channel": "temperature", "intensity": "whisper"},
                        "moment": {"playing": false, "energy": 0.3, "seconds": step as f64 * 4.0},
                    }))
                    .unwrap(),
                );
            }
        }
        examples
    }

    /// A model whose command head leans to `kind` by `bias`.
    fn leaning(kind: &str, bias: f32) -> Vec<u8> {
        let arch = Architecture {
            features: feature_layout().len(),
            hidden: vec![16],
        };
        let mut params = arch.initial_params(5);
        let class = heads()[0].classes.iter().position(|c| c == kind).unwrap();
        let biases = params.iter_mut().find(|p| p.name == "command.b").unwrap();
        biases.values[class] = bias;
        inference_graph(&arch, &params, Vec::new()).encode_to_vec()
    }

    fn workspace() -> Option<&'static std::path::Path> {
        Some(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
    }

    /// A model that nags (suggests stopping the transport at every step, a
    /// suggestion nobody wants) learns in the loop to hold back: the
    /// reinforced model wins on the validation sessions and is kept, and
    /// wins on the test sessions too.
    #[test]
    fn a_nagging_model_learns_to_hold_back_and_is_kept() {
        let (train, test) = (sessions(12, 1), sessions(4, 2));
        let nagging = leaning("transport.stop", 3.0);
        let options = ReinforceOptions {
            epochs: 10,
            learning_rate: 0.01,
            batch_size: 32,
            ..ReinforceOptions::default()
        };
        let (kept, report) = reinforce(
            workspace(),
            &nagging,
            &train,
            Validation::Sessions,
            &test,
            &options,
            &|| false,
        )
        .unwrap();
        assert_eq!((report.validation.sessions, report.test.sessions), (3, 4));
        assert!(report.test.supervised.dismissed > 200, "{report:?}");
        assert!(
            report.validation.gain > 0.0 && report.kept == "reinforced",
            "{report:?}"
        );
        assert!(
            report.test.reinforced.dismissed < report.test.supervised.dismissed / 2,
            "{report:?}"
        );
        assert_ne!(kept, nagging);
        // Only the command head moved.
        let (_, before) = parameters(&ModelProto::decode(nagging.as_slice()).unwrap()).unwrap();
        let (_, after) = parameters(&ModelProto::decode(kept.as_slice()).unwrap()).unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.values == a.values, !b.name.starts_with("command."), "{}", b.name);
            assert!(a.values.iter().all(|v| v.is_finite()), "{}", a.name);
        }
        let first = report.epochs.first().unwrap().sampled_reward;
        assert!(report.epochs.last().unwrap().sampled_reward > first, "{report:?}");
    }

    /// A model the loop cannot improve on is kept as it was, byte for byte.
    #[test]
    fn a_reinforced_model_that_does_not_win_is_not_kept() {
        let (train, test) = (sessions(6, 3), sessions(2, 4));
        let quiet = leaning(prime_brain::vocabulary::NONE, 8.0);
        let (kept, report) = reinforce(
            workspace(),
            &quiet,
            &train,
            Validation::Sessions,
            &test,
            &ReinforceOptions::default(),
            &|| false,
        )
        .unwrap();
        assert_eq!(report.validation.supervised.reward, 0.0, "{report:?}");
        assert!(
            report.validation.gain <= 0.0 && report.kept == "supervised",
            "{report:?}"
        );
        assert_eq!(kept, quiet);
    }

    /// Given validation users, the decision is made on them (the whole
    /// train split fine-tuned on) and a validation fraction besides is
    /// refused: it would leave train sessions out for nothing.
    #[test]
    fn validation_users_decide_when_given() {
        let (train, users, test) = (sessions(8, 8), sessions(3, 9), sessions(2, 10));
        let nagging = leaning("transport.stop", 3.0);
        let options = ReinforceOptions {
            epochs: 4,
            learning_rate: 0.01,
            batch_size: 32,
            ..ReinforceOptions::default()
        };
        let run = |options: &ReinforceOptions| {
            reinforce(
                workspace(),
                &nagging,
                &train,
                Validation::Users(&users),
                &test,
                options,
                &|| false,
            )
        };
        let (_, report) = run(&options).unwrap();
        assert_eq!(report.decided_on, "validation users");
        assert_eq!(
            (report.validation.sessions, report.validation.examples),
            (3, users.len())
        );
        assert!(
            report.kept == "reinforced" && report.validation.gain > 0.0,
            "{report:?}"
        );
        let both = ReinforceOptions {
            validation_fraction: Some(0.2),
            ..options
        };
        let error = run(&both).unwrap_err();
        assert!(error.to_string().contains("remove one of them"), "{error}");
        // Training users as validation users are refused.
        let error = reinforce(
            workspace(),
            &nagging,
            &train,
            Validation::Users(&train[..60]),
            &test,
            &options,
            &|| false,
        )
        .unwrap_err();
        assert!(error.to_string().contains("never learned from"), "{error}");
    }

    /// The validation sessions are whole sessions of the train split, none
    /// of them trained on, the same for every call; a train split of one
    /// session is refused.
    #[test]
    fn the_decision_is_made_on_sessions_the_fine_tune_never_saw() {
        let train = sessions(10, 5);
        let (fit, validation) = validation_split(&train, 0.2, 57).unwrap();
        let names = |examples: &[Example]| -> std::collections::BTreeSet<String> {
            examples.iter().map(|e| e.session.clone()).collect()
        };
        assert_eq!((names(&fit).len(), names(&validation).len()), (8, 2));
        assert!(names(&fit).is_disjoint(&names(&validation)));
        assert_eq!(fit.len() + validation.len(), train.len());
        assert_eq!(validation_split(&train, 0.2, 57).unwrap().1, validation);
        assert_ne!(names(&validation_split(&train, 0.2, 58).unwrap().1), names(&validation));
        // At least one session either way.
        assert_eq!(names(&validation_split(&train, 0.01, 57).unwrap().1).len(), 1);
        assert_eq!(names(&validation_split(&train, 0.99, 57).unwrap().0).len(), 1);
        let error = validation_split(&sessions(1, 6), 0.2, 57).unwrap_err();
        assert!(error.to_string().contains("needs two"), "{error}");
    }
}
