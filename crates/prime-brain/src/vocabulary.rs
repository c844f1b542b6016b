//! The `DAWCommand` vocabulary v1 and the track archetypes: data shared by
//! the labeler, the model and the evaluator, kept in one table.

use super::schema::AlsChannel;

/// A command type and what the doctrine says about it.
#[derive(Debug, Clone, Copy, PartialEq)]
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
    /// The arguments it requires (in `args`; the track is `target`).
    pub args: &'static [ArgSpec],
}

/// An argument a command requires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ArgSpec {
    /// Its key in `args`.
    pub name: &'static str,
    /// The values it takes.
    pub values: ArgValues,
}

/// The values an argument takes: discrete ones (a model names one of them,
/// so its answer is valid by construction) or a range (checked).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ArgValues {
    /// One of these whole numbers.
    Integers(&'static [u64]),
    /// One of these words.
    Words(&'static [&'static str]),
    /// Any number within `min..=max`.
    Range {
        /// Smallest.
        min: f64,
        /// Largest.
        max: f64,
    },
}

impl ArgSpec {
    /// The discrete values as class labels, in order (none for a range).
    pub fn classes(&self) -> Vec<String> {
        match self.values {
            ArgValues::Integers(values) => values.iter().map(u64::to_string).collect(),
            ArgValues::Words(values) => values.iter().map(|w| w.to_string()).collect(),
            ArgValues::Range { .. } => Vec::new(),
        }
    }

    /// The JSON value of a class label from [`ArgSpec::classes`].
    pub fn value_of(&self, class: &str) -> Option<serde_json::Value> {
        match self.values {
            ArgValues::Integers(_) => class.parse::<u64>().ok().map(serde_json::Value::from),
            ArgValues::Words(_) => Some(serde_json::Value::from(class)),
            ArgValues::Range { .. } => None,
        }
        .filter(|value| self.accepts(value))
    }

    /// Whether `value` is one this argument takes.
    pub fn accepts(&self, value: &serde_json::Value) -> bool {
        match self.values {
            ArgValues::Integers(values) => value.as_u64().is_some_and(|n| values.contains(&n)),
            ArgValues::Words(values) => value.as_str().is_some_and(|w| values.contains(&w)),
            ArgValues::Range { min, max } => value.as_f64().is_some_and(|x| (min..=max).contains(&x)),
        }
    }
}

/// Whether two argument values are the same: numbers as numbers (a size
/// written `512` or `512.0`), anything else as written.
pub fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-6,
        _ => a == b,
    }
}

/// Buffer sizes: powers of two, 32–8192.
pub const SIZE: ArgSpec = ArgSpec {
    name: "size",
    values: ArgValues::Integers(&[32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]),
};
/// A tempo in beats per minute, 20–400.
pub const BPM: ArgSpec = ArgSpec {
    name: "bpm",
    values: ArgValues::Range { min: 20.0, max: 400.0 },
};
/// How strongly a mix move is made.
pub const AMOUNT: ArgSpec = ArgSpec {
    name: "amount",
    values: ArgValues::Words(&["gentle", "moderate", "strong"]),
};

const fn spec(
    kind: &'static str,
    needs_target: bool,
    intrusive: bool,
    channel: AlsChannel,
    args: &'static [ArgSpec],
) -> CommandSpec {
    CommandSpec {
        kind,
        needs_target,
        intrusive,
        channel,
        args,
    }
}

use AlsChannel::{Energy, Pressure, Pulse, Temperature};

/// Every command of v1, in a fixed order (class indices depend on it).
pub const COMMANDS: [CommandSpec; 14] = [
    spec("transport.play", false, true, Pulse, &[]),
    spec("transport.stop", false, true, Pulse, &[]),
    spec("transport.toggleCycle", false, true, Pulse, &[]),
    spec("transport.setTempo", false, true, Pulse, &[BPM]),
    spec("track.mute", true, true, Energy, &[]),
    spec("track.solo", true, true, Energy, &[]),
    spec("track.freeze", true, false, Pressure, &[]),
    spec("engine.setBufferSize", false, false, Pressure, &[SIZE]),
    spec("mix.eqCut", true, false, Temperature, &[AMOUNT]),
    spec("mix.compress", true, false, Temperature, &[AMOUNT]),
    spec("mix.addReverb", true, false, Temperature, &[AMOUNT]),
    spec("mix.balanceLevels", false, false, Temperature, &[]),
    spec("arrange.loopSection", false, true, Pulse, &[]),
    spec("arrange.duplicateSection", false, true, Pulse, &[]),
];

/// The changes of tempo, in beats per minute, a `transport.setTempo` makes
/// from the session's tempo (the model names one; the `bpm` it gives is
/// then checked against [`BPM`]).
pub const TEMPO_STEPS: [f64; 6] = [-8.0, -4.0, -2.0, 2.0, 4.0, 8.0];

/// Whether `args` are arguments `kind` takes, each with a value it takes
/// (some may be missing; [`complete_args`] says whether all are there).
pub fn valid_args(kind: &str, args: &serde_json::Map<String, serde_json::Value>) -> bool {
    let specs = command(kind).map_or(&[][..], |c| c.args);
    args.iter()
        .all(|(name, value)| specs.iter().any(|s| s.name == name && s.accepts(value)))
}

/// Whether `args` hold every argument `kind` requires, and only valid ones:
/// the command can be executed as it is.
pub fn complete_args(kind: &str, args: Option<&serde_json::Map<String, serde_json::Value>>) -> bool {
    let specs = command(kind).map_or(&[][..], |c| c.args);
    let empty = serde_json::Map::new();
    let args = args.unwrap_or(&empty);
    valid_args(kind, args) && specs.iter().all(|s| args.contains_key(s.name))
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
        assert!(!complete_args("mix.eqCut", Some(&args(serde_json::json!({})))));
        assert!(complete_args(
            "mix.eqCut",
            Some(&args(serde_json::json!({"amount": "gentle"})))
        ));
        assert!(!complete_args(
            "mix.eqCut",
            Some(&args(serde_json::json!({"amount": "huge"})))
        ));
        assert!(complete_args("transport.play", None));
        assert!(!complete_args(
            "transport.setTempo",
            Some(&args(serde_json::json!({"bpm": 500.0})))
        ));
        assert!(complete_args(
            "transport.setTempo",
            Some(&args(serde_json::json!({"bpm": 121.5})))
        ));
    }
}
