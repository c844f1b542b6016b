//! The `DAWCommand` vocabulary v1 and the track archetypes: data shared by
//! the labeler, the model and the evaluator, kept in one table.

use super::schema::AlsChannel;

/// A command type and what the doctrine says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// The `type` string.
    pub kind: &'static str,
    /// Whether it needs a track archetype as `target`.
    pub needs_target: bool,
    /// Intrusive commands change the session; passive and learning modes may
    /// not issue them unless a critical health flag is up.
    pub intrusive: bool,
    /// The ALS channel guidance about it speaks through: pressure for the
    /// engine's load, temperature for the mix, pulse for time and form,
    /// energy for what is heard.
    pub channel: AlsChannel,
}

const fn spec(kind: &'static str, needs_target: bool, intrusive: bool, channel: AlsChannel) -> CommandSpec {
    CommandSpec {
        kind,
        needs_target,
        intrusive,
        channel,
    }
}

use AlsChannel::{Energy, Pressure, Pulse, Temperature};

/// Every command of v1, in a fixed order (class indices depend on it).
pub const COMMANDS: [CommandSpec; 14] = [
    spec("transport.play", false, true, Pulse),
    spec("transport.stop", false, true, Pulse),
    spec("transport.toggleCycle", false, true, Pulse),
    spec("transport.setTempo", false, true, Pulse),
    spec("track.mute", true, true, Energy),
    spec("track.solo", true, true, Energy),
    spec("track.freeze", true, false, Pressure),
    spec("engine.setBufferSize", false, false, Pressure),
    spec("mix.eqCut", true, false, Temperature),
    spec("mix.compress", true, false, Temperature),
    spec("mix.addReverb", true, false, Temperature),
    spec("mix.balanceLevels", false, false, Temperature),
    spec("arrange.loopSection", false, true, Pulse),
    spec("arrange.duplicateSection", false, true, Pulse),
];

/// Whether `args` are arguments `kind` takes: `engine.setBufferSize` takes
/// `size` (a power of two, 32–8192), `transport.setTempo` takes `bpm`
/// (20–400); no other command takes arguments.
pub fn valid_args(kind: &str, args: &serde_json::Map<String, serde_json::Value>) -> bool {
    args.iter().all(|(name, value)| match (kind, name.as_str()) {
        ("engine.setBufferSize", "size") => value
            .as_u64()
            .is_some_and(|n| n.is_power_of_two() && (32..=8192).contains(&n)),
        ("transport.setTempo", "bpm") => value.as_f64().is_some_and(|bpm| (20.0..=400.0).contains(&bpm)),
        _ => false,
    })
}

/// The class name for "no command".
pub const NONE: &str = "none";

/// Track archetypes, in a fixed order.
pub const ARCHETYPES: [&str; 9] = [
    "drums", "bass", "keys", "vocals", "guitar", "synth", "fx", "bus", "master",
];

/// The spec of a command type.
pub fn command(kind: &str) -> Option<&'static CommandSpec> {
    COMMANDS.iter().find(|c| c.kind == kind)
}

/// True for a known archetype.
pub fn is_archetype(name: &str) -> bool {
    ARCHETYPES.contains(&name)
}

/// The archetype a track or clip name refers to, by the words in it
/// (`"Maya vox take 3"` → `vocals`).
pub fn archetype_of(name: &str) -> Option<&'static str> {
    let lower = name.to_lowercase();
    const WORDS: [(&str, &str); 30] = [
        ("vox", "vocals"),
        ("vocal", "vocals"),
        ("voice", "vocals"),
        ("choir", "vocals"),
        ("bv", "vocals"),
        ("drum", "drums"),
        ("kick", "drums"),
        ("snare", "drums"),
        ("hat", "drums"),
        ("perc", "drums"),
        ("bass", "bass"),
        ("sub", "bass"),
        ("808", "bass"),
        ("key", "keys"),
        ("piano", "keys"),
        ("rhodes", "keys"),
        ("organ", "keys"),
        ("gtr", "guitar"),
        ("guitar", "guitar"),
        ("synth", "synth"),
        ("pad", "synth"),
        ("lead", "synth"),
        ("arp", "synth"),
        ("fx", "fx"),
        ("riser", "fx"),
        ("reverb", "fx"),
        ("bus", "bus"),
        ("group", "bus"),
        ("master", "master"),
        ("mix", "master"),
    ];
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    // Earlier stems win ("Lead Vocal" is a vocal, not a synth lead).
    WORDS
        .iter()
        .find(|(stem, _)| words.iter().any(|word| word.starts_with(stem)))
        .map(|(_, archetype)| *archetype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archetypes_come_from_track_words() {
        assert_eq!(archetype_of("Maya vox take 3"), Some("vocals"));
        assert_eq!(archetype_of("John's guitar DI"), Some("guitar"));
        assert_eq!(archetype_of("Kick In"), Some("drums"));
        assert_eq!(archetype_of("Lead Vocal - Priya"), Some("vocals"));
        assert_eq!(archetype_of("Lead arp"), Some("synth"));
        assert_eq!(archetype_of("Priya"), None);
        assert!(command("mix.eqCut").is_some_and(|c| c.needs_target && !c.intrusive));
        let args = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(valid_args(
            "engine.setBufferSize",
            &args(serde_json::json!({"size": 512}))
        ));
        assert!(!valid_args(
            "engine.setBufferSize",
            &args(serde_json::json!({"size": 500}))
        ));
        assert!(!valid_args(
            "engine.setBufferSize",
            &args(serde_json::json!({"size": "huge"}))
        ));
        assert!(!valid_args("mix.eqCut", &args(serde_json::json!({"gain": -3}))));
        assert!(valid_args("mix.eqCut", &args(serde_json::json!({}))));
    }
}
