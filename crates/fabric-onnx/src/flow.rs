//! Flow impact in a closed loop: the held-out sessions replayed with a
//! predictor in the loop, and a simulated user who reacts to each
//! intervention.
//!
//! Each test session is walked in order. At every step the predictor either
//! stays silent or intervenes (a command, said at some intensity), and the
//! user reacts, deterministically, from their state and what they were about
//! to do:
//!
//! - **flow break**: the user is in flow (playing, ALS energy at least
//!   [`prime_brain::dataset::FLOW_ENERGY`], not recovering from an earlier
//!   break), no critical health flag is up, and the intervention is louder
//!   than a whisper, or intrusive and not what they were about to do; or,
//!   in any state, the doctrine does not allow the
//!   command in the current mode (passive: nothing unless health is
//!   critical; learning: nothing intrusive). The user is then out of flow
//!   for [`RECOVERY_STEPS`] steps.
//! - **accepted**: the suggestion is what the user did within the next
//!   [`LOOKAHEAD`] steps of the session (their hidden style, as their actions
//!   reveal it) and it was not already made in the last [`REPEAT_STEPS`].
//! - **dismissed**: anything else (an unwanted or repeated suggestion).
//!
//! The session continues from each reaction: a break takes the following
//! steps out of flow, and a suggestion made again soon after is dismissed.
//! Time kept in flow is the share of in-flow steps (playing, energy high)
//! that no break took away. Steps are [`SNAPSHOT_SECONDS`] apart.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::eval::Prediction;
use prime_brain::dataset::Example;
use prime_brain::labels::allowed;
use prime_brain::schema::Intensity;
use prime_brain::vocabulary::{self, NONE};

/// Seconds between snapshots in the Studio export.
pub const SNAPSHOT_SECONDS: f64 = 4.0;
/// Steps a broken flow takes to come back (about half a minute).
pub const RECOVERY_STEPS: usize = 8;
/// Steps ahead in which what the user did counts as wanted.
pub const LOOKAHEAD: usize = 3;
/// Steps within which the same suggestion again is a repeat.
pub const REPEAT_STEPS: usize = 5;

/// How the simulated user reacted, in one mode or overall.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reactions {
    /// Interventions (commands suggested).
    pub interventions: usize,
    /// Suggestions the user took.
    pub accepted: usize,
    /// Suggestions the user waved away.
    pub dismissed: usize,
    /// Interventions that broke the user's flow.
    pub flow_breaks: usize,
}

/// The closed-loop result of one predictor.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FlowImpact {
    /// All reactions.
    pub overall: Reactions,
    /// Reactions by mode.
    pub by_mode: BTreeMap<String, Reactions>,
    /// Share of in-flow steps kept in flow (1 when there were none).
    pub time_in_flow: f64,
    /// Accepted share of interventions (0 when there were none).
    pub acceptance: f64,
    /// Interventions per minute of replayed session.
    pub interventions_per_minute: f64,
}

/// What the user does with one intervention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The suggestion was what they wanted.
    Accepted,
    /// Unwanted, or made again too soon.
    Dismissed,
    /// It took them out of flow.
    FlowBreak,
}

/// One step of the closed loop, for the example at the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The user's reaction, if the predictor intervened.
    pub reaction: Option<Reaction>,
    /// The user was in flow (playing, energy high), whatever happened before.
    pub in_flow: bool,
    /// In flow, and still in flow after this step (no break now or recovering).
    pub kept: bool,
}

/// Walks every session with `predictions` (one per example, in the same
/// order) in the loop: what happened at each example's step.
pub fn walk(examples: &[Example], predictions: &[Prediction]) -> Vec<Step> {
    let mut sessions: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, example) in examples.iter().enumerate() {
        sessions.entry(&example.session).or_default().push(i);
    }
    let mut walked = vec![
        Step {
            reaction: None,
            in_flow: false,
            kept: false,
        };
        examples.len()
    ];
    for steps in sessions.values_mut() {
        steps.sort_by_key(|&i| examples[i].window_end);
        let mut recovering = 0usize;
        let mut suggested: HashMap<&str, usize> = HashMap::new();
        for (step, &i) in steps.iter().enumerate() {
            let (example, prediction) = (&examples[i], &predictions[i]);
            let in_flow = example.moment.in_flow();
            let flowing = in_flow && recovering == 0;
            recovering = recovering.saturating_sub(1);
            let kind = prediction.command.kind.as_str();
            if kind == NONE {
                walked[i] = Step {
                    reaction: None,
                    in_flow,
                    kept: flowing,
                };
                continue;
            }
            let wanted = steps[step..(step + LOOKAHEAD).min(steps.len())].iter().any(|&j| {
                let truth = &examples[j].command;
                truth.kind == kind
                    && (prediction.command.target.is_none()
                        || truth.target.is_none()
                        || truth.target == prediction.command.target)
            });
            let repeated = suggested.get(kind).is_some_and(|&at| step - at <= REPEAT_STEPS);
            suggested.insert(kind, step);
            let reaction = react(example, prediction, flowing, wanted && !repeated);
            if reaction == Reaction::FlowBreak {
                recovering = RECOVERY_STEPS;
            }
            walked[i] = Step {
                reaction: Some(reaction),
                in_flow,
                kept: flowing && reaction != Reaction::FlowBreak,
            };
        }
    }
    walked
}

/// Replays every test session with `predictions` (one per example, in the
/// same order) in the loop, and sums up what happened ([`walk`]).
pub fn replay(examples: &[Example], predictions: &[Prediction]) -> FlowImpact {
    let mut impact = FlowImpact::default();
    let steps = walk(examples, predictions);
    for (example, step) in examples.iter().zip(&steps) {
        let Some(reaction) = step.reaction else {
            continue;
        };
        for reactions in [
            &mut impact.overall,
            impact.by_mode.entry(example.mode.name().to_string()).or_default(),
        ] {
            reactions.interventions += 1;
            match reaction {
                Reaction::Accepted => reactions.accepted += 1,
                Reaction::Dismissed => reactions.dismissed += 1,
                Reaction::FlowBreak => reactions.flow_breaks += 1,
            }
        }
    }
    let in_flow = steps.iter().filter(|s| s.in_flow).count();
    let kept = steps.iter().filter(|s| s.kept).count();
    let overall = &impact.overall;
    impact.time_in_flow = if in_flow == 0 {
        1.0
    } else {
        kept as f64 / in_flow as f64
    };
    impact.acceptance = if overall.interventions == 0 {
        0.0
    } else {
        overall.accepted as f64 / overall.interventions as f64
    };
    let minutes = examples.len() as f64 * SNAPSHOT_SECONDS / 60.0;
    impact.interventions_per_minute = if minutes > 0.0 {
        overall.interventions as f64 / minutes
    } else {
        0.0
    };
    impact
}

/// The user's reaction to one intervention.
fn react(example: &Example, prediction: &Prediction, flowing: bool, wanted: bool) -> Reaction {
    let kind = prediction.command.kind.as_str();
    // An unknown command is as disruptive as any.
    let intrusive = vocabulary::command(kind).is_none_or(|c| c.intrusive);
    let loud = prediction.intensity != Some(Intensity::Whisper);
    let unbidden = !allowed(example.mode, kind, example.critical);
    if unbidden || (!example.critical && flowing && (loud || (intrusive && !wanted))) {
        Reaction::FlowBreak
    } else if wanted {
        Reaction::Accepted
    } else {
        Reaction::Dismissed
    }
}
