//! The grammar Prime's answers in the instruction-tuning set are written
//! from: many calm phrasings of the same situation, so that a tuned model
//! learns the voice rather than a handful of sentences.
//!
//! ```text
//! answer      := observation " " suggestion
//! observation := OBSERVATIONS[channel][intensity]      (what is felt; no action, track or amount)
//! suggestion  := REST                                   when the command is `none`
//!              | FRAMES[intensity] with {action}        otherwise
//! action      := ACTIONS[command] with {track}, {amount} ("trim {track} {amount}")
//! track       := "the " TRACK_WORDS[target] | "this part" (no target)
//! amount      := AMOUNT_WORDS[args.amount]              ("gently", "moderately", "firmly")
//! ```
//!
//! Observations and frames never name an action, a track or an amount and
//! rests never suggest one, so the command is named by the suggestion
//! alone: what the text asks for (and how strongly) is what the command
//! JSON does. Each choice is drawn from a seed (the example's place in the
//! data), so the same data gives the same texts. Four observations, three
//! frames and three actions give 36 phrasings of each command at each
//! channel and intensity (108 for a mix move, with three words for its
//! amount), 24 of each silence; every one passes the tone audit
//! ([`super::tone`]), which a test checks over the whole grammar.

use super::dataset::CommandTarget;
use super::schema::{AlsChannel, Intensity};
use super::vocabulary::{self, AMOUNT, NONE};

/// What is felt, by channel and intensity (whisper, nudge, call).
fn observations(channel: AlsChannel, intensity: Intensity) -> [&'static str; 4] {
    use AlsChannel::*;
    use Intensity::*;
    match (channel, intensity) {
        (Temperature, Whisper) => [
            "The mix feels warm.",
            "Warmth is gathering in the low end.",
            "The mix is glowing.",
            "The sound is thickening.",
        ],
        (Temperature, Nudge) => [
            "The low end feels crowded.",
            "The mix is getting dense.",
            "The middle of the mix feels crowded.",
            "Things are getting muddy.",
        ],
        (Temperature, Call) => [
            "The mix is running hot.",
            "The mix feels heavy and crowded.",
            "The low end is swelling over everything.",
            "The mix feels thick and boomy.",
        ],
        (Energy, Whisper) => [
            "Energy is rising.",
            "There is a nice lift in the energy.",
            "The energy is building.",
            "The music has a glow to it.",
        ],
        (Energy, Nudge) => [
            "The energy wants somewhere to go.",
            "The energy feels restless.",
            "The energy is pressing forward.",
            "The energy is gathering.",
        ],
        (Energy, Call) => [
            "The energy is spilling over.",
            "The energy feels overwhelming.",
            "The energy is running away.",
            "Everything feels loud and crowded.",
        ],
        (Pulse, Whisper) => [
            "All calm; the pulse is steady.",
            "The groove is sitting nicely.",
            "The pulse feels relaxed.",
            "The rhythm is steady.",
        ],
        (Pulse, Nudge) => [
            "The pulse could settle here.",
            "The groove feels ready to settle.",
            "The rhythm wants a home.",
            "This stretch of the groove feels good.",
        ],
        (Pulse, Call) => [
            "The pulse is slipping.",
            "The groove is drifting.",
            "The timing feels loose.",
            "The rhythm is losing its footing.",
        ],
        (Pressure, Whisper) => [
            "The room feels warm.",
            "The session feels weighty.",
            "Some weight is on the session.",
            "The session is working hard.",
        ],
        (Pressure, Nudge) => [
            "The session is running warm.",
            "The session feels heavy.",
            "The load is building.",
            "The session is carrying a lot.",
        ],
        (Pressure, Call) => [
            "The session is overheating.",
            "The session is straining.",
            "The load is getting heavy.",
            "The session is close to its limit.",
        ],
    }
}

/// How a suggestion is framed at each intensity; `{action}` is the action.
fn frames(intensity: Intensity) -> [&'static str; 3] {
    match intensity {
        Intensity::Whisper => [
            "If it feels right, {action}.",
            "Maybe {action}, if you like.",
            "When you are ready, you might {action}.",
        ],
        Intensity::Nudge => ["It may help to {action}.", "You could {action}.", "Perhaps {action}."],
        Intensity::Call => [
            "This is a good moment to {action}.",
            "Now would be a good time to {action}.",
            "Now is the moment to {action}.",
        ],
    }
}

/// Silence: the answer when the command is `none`.
const REST: [&str; 6] = [
    "Nothing needs changing; stay with it.",
    "No need to act; let it ride.",
    "Stay with the music for now.",
    "Let it carry you.",
    "All is well; keep going.",
    "Nothing to do here; enjoy the sound.",
];

/// The actions that ask for a command; `{track}` names its target.
fn actions(kind: &str) -> [&'static str; 3] {
    match kind {
        "transport.play" => [
            "let the music play",
            "start the music again",
            "roll the music from here",
        ],
        "transport.stop" => [
            "pause for a moment",
            "bring the music to a stop",
            "pause and listen back",
        ],
        "transport.toggleCycle" => ["turn on the cycle", "let this part cycle", "cycle around this stretch"],
        "transport.setTempo" => [
            "settle on a new tempo",
            "ease the tempo",
            "find a tempo that suits the groove",
        ],
        "track.mute" => [
            "mute {track} for now",
            "try the part with {track} muted",
            "mute {track} and listen",
        ],
        "track.solo" => ["solo {track}", "hear {track} on its own", "listen to {track} alone"],
        "track.freeze" => [
            "freeze {track}",
            "print {track} to lighten the load",
            "freeze {track} so the session can rest",
        ],
        "engine.setBufferSize" => [
            "give the engine more room",
            "let the engine take longer breaths",
            "ease the engine's load",
        ],
        "mix.eqCut" => [
            "carve {track} back {amount}",
            "cut {track} {amount}",
            "trim {track} {amount}",
        ],
        "mix.compress" => [
            "glue {track} together {amount}",
            "tame {track} {amount}",
            "squeeze {track} {amount}",
        ],
        "mix.addReverb" => [
            "add reverb to {track} {amount}",
            "give {track} air, {amount}",
            "set {track} in more space, {amount}",
        ],
        "mix.balanceLevels" => [
            "balance the levels",
            "even out the levels",
            "rebalance the levels by ear",
        ],
        "arrange.loopSection" => [
            "loop this section",
            "loop this stretch a while",
            "stay here and loop it",
        ],
        "arrange.duplicateSection" => [
            "repeat this section",
            "duplicate this stretch",
            "let this section repeat",
        ],
        _ => unreachable!("every vocabulary command has actions (a test checks)"),
    }
}

/// How the answers name a track archetype: its own name, but in plain words
/// where the archetype is jargon or an abbreviation.
pub fn track_words(archetype: &str) -> &str {
    match archetype {
        "fx" => "effects",
        "bus" => "group",
        other => other,
    }
}

/// How an action says how strongly a mix move is made (`{amount}`), by
/// the `amount` argument.
fn amount_words(amount: &str) -> [&'static str; 3] {
    match amount {
        "strong" => ["firmly", "deeply", "generously"],
        "moderate" => ["moderately", "a fair bit", "somewhat"],
        _ => ["gently", "lightly", "softly"],
    }
}

/// How an action names its target: "the bass", or "this part" for none.
fn track_phrase(target: Option<&str>) -> String {
    target.map_or_else(|| "this part".to_string(), |t| format!("the {}", track_words(t)))
}

/// The command's `amount` argument, if it has one.
fn amount_of(command: &CommandTarget) -> Option<&str> {
    command.args.as_ref()?.get(AMOUNT.name)?.as_str()
}

/// A suggestion: `frame` around `action`, with the track and the
/// `amount_word`-th word of the amount of `command` in place.
fn suggestion(frame: &str, action: &str, command: &CommandTarget, amount_word: usize) -> String {
    let amount = amount_words(amount_of(command).unwrap_or_default())[amount_word];
    let action = action
        .replace("{track}", &track_phrase(command.target.as_deref()))
        .replace("{amount}", amount);
    capitalized(&frame.replace("{action}", &action))
}

/// The answer for a situation: the guidance `channel` and `intensity` and
/// the `command` (`none`, or a command with its target and arguments), with
/// `seed` picking among the grammar's phrasings.
pub fn answer(channel: AlsChannel, intensity: Intensity, command: &CommandTarget, seed: u64) -> String {
    // Each choice from its own 12 bits of the seed.
    let pick = |n: usize, part: u64| ((seed >> (part * 12)) & 0xfff) as usize % n;
    let observation = observations(channel, intensity);
    let observation = observation[pick(observation.len(), 0)];
    let suggestion = if command.kind == NONE || vocabulary::command(&command.kind).is_none() {
        REST[pick(REST.len(), 1)].to_string()
    } else {
        suggestion(
            frames(intensity)[pick(3, 3)],
            actions(&command.kind)[pick(3, 2)],
            command,
            pick(3, 4),
        )
    };
    format!("{observation} {suggestion}")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

/// Every answer the grammar can give for `command` (`none`, or a command
/// with its target and arguments), at every channel and intensity.
pub fn all_answers(command: &CommandTarget) -> Vec<String> {
    let mut out = Vec::new();
    for channel in AlsChannel::ALL {
        for intensity in Intensity::ALL {
            for observation in observations(channel, intensity) {
                if command.kind == NONE {
                    out.extend(REST.iter().map(|rest| format!("{observation} {rest}")));
                    continue;
                }
                for action in actions(&command.kind) {
                    for amount_word in 0..3 {
                        for frame in frames(intensity) {
                            let text = suggestion(frame, action, command, amount_word);
                            out.push(format!("{observation} {text}"));
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::super::tone::{tone_issues, tone_ok};
    use super::super::vocabulary::{ARCHETYPES, COMMANDS};
    use super::*;

    /// Every command of the vocabulary with every target and amount it can
    /// take (one buffer size and tempo: the text does not say them).
    fn situations() -> Vec<CommandTarget> {
        let mut out = vec![CommandTarget::none()];
        for spec in COMMANDS {
            let targets: Vec<Option<&str>> = if spec.needs_target {
                ARCHETYPES.iter().map(|a| Some(*a)).chain([None]).collect()
            } else {
                vec![None]
            };
            let amounts: Vec<Option<String>> = if spec.args.contains(&AMOUNT) {
                AMOUNT.classes().into_iter().map(Some).collect()
            } else {
                vec![None]
            };
            for target in &targets {
                for amount in &amounts {
                    let mut command = CommandTarget::new(spec.kind, *target);
                    command.args = amount
                        .as_ref()
                        .map(|a| [(AMOUNT.name.to_string(), serde_json::json!(a))].into());
                    out.push(command);
                }
            }
        }
        out
    }

    #[test]
    fn every_phrasing_of_the_grammar_passes_the_tone_audit() {
        let mut checked = 0;
        for command in situations() {
            for text in all_answers(&command) {
                assert!(tone_ok(&text), "{text}: {:?}", tone_issues(&text));
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn a_situation_has_many_distinct_phrasings_and_the_seed_reaches_them() {
        for command in situations() {
            let all = all_answers(&command);
            assert!(all.len() >= 12 * 24, "{command:?}: {}", all.len());
        }
        let mut cut = CommandTarget::new("mix.eqCut", Some("bass"));
        cut.args = Some([(AMOUNT.name.to_string(), serde_json::json!("strong"))].into());
        let drawn: std::collections::BTreeSet<String> = (0..4_000u64)
            .map(|n| {
                let seed = fabric_core::digest::Digest::of(&n.to_le_bytes()).0;
                let seed = u64::from_le_bytes(seed[..8].try_into().unwrap());
                answer(AlsChannel::Temperature, Intensity::Nudge, &cut, seed)
            })
            .collect();
        assert_eq!(drawn.len(), 4 * 3 * 3 * 3, "every phrasing of one situation is drawn");
    }
}
