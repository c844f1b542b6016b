//! The grammar Prime's answers in the instruction-tuning set are written
//! from: many calm phrasings of the same situation, so that a tuned model
//! learns the voice rather than a handful of sentences.
//!
//! ```text
//! answer      := observation " " suggestion
//! observation := OBSERVATIONS[channel][intensity]      (what is felt; no action, no track)
//! suggestion  := REST                                   when the command is `none`
//!              | FRAMES[intensity] with {action}        otherwise
//! action      := ACTIONS[command] with {track}          ("carve a little from {track}")
//! track       := "the " TRACK_WORDS[target] | "this part" (no target)
//! ```
//!
//! Observations never name an action or a track and rests never suggest
//! one, so the command is named by the suggestion alone: what the text asks
//! for is what the command JSON does. Each choice is drawn from a seed (the
//! example's place in the data), so the same data gives the same texts. Four
//! observations, three frames and three actions give 36 phrasings of each
//! command at each channel and intensity, 24 of each silence; every one
//! passes the tone audit ([`super::tone`]), which a test checks over the
//! whole grammar.

use super::schema::{AlsChannel, Intensity};
use super::vocabulary::{self, NONE};

/// What is felt, by channel and intensity (whisper, nudge, call).
fn observations(channel: AlsChannel, intensity: Intensity) -> [&'static str; 4] {
    use AlsChannel::*;
    use Intensity::*;
    match (channel, intensity) {
        (Temperature, Whisper) => [
            "The mix feels a touch warm.",
            "A little warmth is gathering in the low end.",
            "The mix is glowing a little.",
            "The sound is getting a little thick.",
        ],
        (Temperature, Nudge) => [
            "The low end feels crowded.",
            "The mix is getting dense.",
            "The middle of the mix feels crowded.",
            "Things are getting a little muddy.",
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
            "The energy is building softly.",
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
            "The room feels a little warm.",
            "The session feels a touch heavy.",
            "A little weight is on the session.",
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
            "Gently {action} now.",
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
            "carve a little from {track}",
            "make a gentle cut on {track}",
            "trim {track} a little",
        ],
        "mix.compress" => [
            "glue {track} together",
            "tame {track} a touch",
            "squeeze {track} gently",
        ],
        "mix.addReverb" => [
            "give {track} some air",
            "add a touch of reverb to {track}",
            "set {track} in a little more space",
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

/// How an action names its target: "the bass", or "this part" for none.
fn track_phrase(target: Option<&str>) -> String {
    target.map_or_else(|| "this part".to_string(), |t| format!("the {}", track_words(t)))
}

/// The answer for a situation: the guidance `channel` and `intensity`,
/// the command `kind` (or `none`) and its `target`, with `seed` picking
/// among the grammar's phrasings.
pub fn answer(channel: AlsChannel, intensity: Intensity, kind: &str, target: Option<&str>, seed: u64) -> String {
    // Each choice from its own 16 bits of the seed.
    let pick = |n: usize, part: u64| ((seed >> (part * 16)) & 0xffff) as usize % n;
    let observation = observations(channel, intensity);
    let observation = observation[pick(observation.len(), 0)];
    let suggestion = if kind == NONE || vocabulary::command(kind).is_none() {
        REST[pick(REST.len(), 1)].to_string()
    } else {
        let action = actions(kind)[pick(3, 2)].replace("{track}", &track_phrase(target));
        let frame = frames(intensity)[pick(3, 3)];
        let text = frame.replace("{action}", &action);
        capitalized(&text)
    };
    format!("{observation} {suggestion}")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

/// Every answer the grammar can give for a command `kind` (or `none`) and
/// `target`, at every channel and intensity.
pub fn all_answers(kind: &str, target: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for channel in AlsChannel::ALL {
        for intensity in Intensity::ALL {
            for observation in observations(channel, intensity) {
                if kind == NONE {
                    out.extend(REST.iter().map(|rest| format!("{observation} {rest}")));
                    continue;
                }
                let track = track_phrase(target);
                for action in actions(kind) {
                    for frame in frames(intensity) {
                        let text = frame.replace("{action}", &action.replace("{track}", &track));
                        out.push(format!("{observation} {}", capitalized(&text)));
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::tone::{tone_issues, tone_ok};
    use super::super::vocabulary::{ARCHETYPES, COMMANDS};
    use super::*;

    fn situations() -> Vec<(&'static str, Option<&'static str>)> {
        let mut out = vec![(NONE, None)];
        for spec in COMMANDS {
            out.push((spec.kind, None));
            if spec.needs_target {
                out.extend(ARCHETYPES.iter().map(|a| (spec.kind, Some(*a))));
            }
        }
        out
    }

    #[test]
    fn every_phrasing_of_the_grammar_passes_the_tone_audit() {
        let mut checked = 0;
        for (kind, target) in situations() {
            for text in all_answers(kind, target) {
                assert!(tone_ok(&text), "{text}: {:?}", tone_issues(&text));
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn a_situation_has_many_distinct_phrasings_and_the_seed_reaches_them() {
        for (kind, target) in situations() {
            let all: std::collections::BTreeSet<String> = all_answers(kind, target).into_iter().collect();
            assert!(all.len() >= 12 * 24, "{kind}: {}", all.len());
        }
        let drawn: std::collections::BTreeSet<String> = (0..2_000u64)
            .map(|n| {
                let seed = fabric_core::digest::Digest::of(&n.to_le_bytes()).0;
                let seed = u64::from_le_bytes(seed[..8].try_into().unwrap());
                answer(
                    AlsChannel::Temperature,
                    Intensity::Nudge,
                    "mix.eqCut",
                    Some("bass"),
                    seed,
                )
            })
            .collect();
        assert_eq!(drawn.len(), 4 * 3 * 3, "every phrasing of one situation is drawn");
    }
}
