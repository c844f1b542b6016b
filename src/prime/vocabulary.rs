//! The `DAWCommand` vocabulary v1 and the track archetypes: data shared by
//! the labeler, the model and the evaluator, kept in one table.

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
}

const fn spec(kind: &'static str, needs_target: bool, intrusive: bool) -> CommandSpec {
    CommandSpec {
        kind,
        needs_target,
        intrusive,
    }
}

/// Every command of v1, in a fixed order (class indices depend on it).
pub const COMMANDS: [CommandSpec; 14] = [
    spec("transport.play", false, true),
    spec("transport.stop", false, true),
    spec("transport.toggleCycle", false, true),
    spec("transport.setTempo", false, true),
    spec("track.mute", true, true),
    spec("track.solo", true, true),
    spec("track.freeze", true, false),
    spec("engine.setBufferSize", false, false),
    spec("mix.eqCut", true, false),
    spec("mix.compress", true, false),
    spec("mix.addReverb", true, false),
    spec("mix.balanceLevels", false, false),
    spec("arrange.loopSection", false, true),
    spec("arrange.duplicateSection", false, true),
];

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
    }
}
