//! The calm voice: the phrasebook guidance is rendered from, and the tone
//! audit every guidance text must pass (no raw numbers, no shouting, short,
//! speaking through temperature and energy cues). Shared by the evaluator
//! and the instruction-tuning export.

use super::schema::{AlsChannel, Intensity};

/// Calm, number-free guidance text for a channel and intensity.
pub fn phrase(channel: AlsChannel, intensity: Intensity) -> &'static str {
    use AlsChannel::*;
    use Intensity::*;
    match (channel, intensity) {
        (Temperature, Whisper) => "The mix feels a touch warm.",
        (Temperature, Nudge) => "The low end feels crowded; a gentle cut would let it breathe.",
        (Temperature, Call) => "The mix is running hot; let it cool before going on.",
        (Energy, Whisper) => "Energy is rising; let it carry you.",
        (Energy, Nudge) => "The energy wants somewhere to go; open a little space.",
        (Energy, Call) => "The energy is spilling over; bring it back to center.",
        (Pulse, Whisper) => "All calm; the pulse is steady.",
        (Pulse, Nudge) => "The pulse could loop here and settle.",
        (Pulse, Call) => "The pulse is slipping; steady the groove.",
        (Pressure, Whisper) => "The room feels a little warm.",
        (Pressure, Nudge) => "The session is running warm; easing the load keeps you in flow.",
        (Pressure, Call) => "The session is overheating; ease the load now.",
    }
}

const CUES: [&str; 13] = [
    "warm", "cool", "calm", "energy", "pulse", "breathe", "flow", "steady", "rising", "hot", "heat", "settle", "space",
];

/// The tone audit of one guidance text: no raw numbers, no shouting, short,
/// and speaking through temperature/energy cues.
pub fn tone_ok(text: &str) -> bool {
    let shouting = text
        .split(|c: char| !c.is_alphabetic())
        .any(|w| w.chars().count() >= 2 && w.chars().all(char::is_uppercase));
    let lower = text.to_lowercase();
    !text.chars().any(|c| c.is_ascii_digit())
        && !text.contains('!')
        && !shouting
        && !text.is_empty()
        && text.chars().count() <= 160
        && CUES.iter().any(|cue| lower.contains(cue))
}
