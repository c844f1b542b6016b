//! Snapshot schema v1 (`PrimeBrainRawSnapshot`): the Rust types are the source
//! of truth; `fabric schema` prints the contract generated from them
//! ([`super::contract`]).
//!
//! Serde reads exactly what the Studio exporter sends (camelCase). Unknown
//! fields are ignored on input, so they are dropped on output: nothing can be
//! smuggled through an unknown key. Range rules that types cannot express are
//! checked by [`Snapshot::validate`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The schema version this module describes.
pub const SCHEMA_VERSION: &str = "v1";
/// At most this many recent actions in `userMemorySummary`.
pub const MAX_RECENT_ACTIONS: usize = 10;
/// At most this many Bloom events.
pub const MAX_BLOOM_TRACE: usize = 24;
/// At most this many issued commands.
pub const MAX_ISSUED_COMMANDS: usize = 20;
/// At most this many conversation turns.
pub const MAX_CONVERSATION_TURNS: usize = 10;
/// A UUID v4 in its hyphenated form.
const UUID_V4: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-4[0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$";
/// An RFC 3339 date-time (the calendar check is `format: date-time`).
const RFC_3339: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";

/// The names of a closed enum in one place: `ALL` (a fixed order that
/// feature layouts depend on), `name()` (the canonical lowercase spelling,
/// which `Serialize` writes too), and reading it from JSON by name ignoring
/// case (`"Passive"` is `passive`).
macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in a fixed order.
            pub const ALL: [$ty; [$(stringify!($variant)),+].len()] = [$($ty::$variant),+];

            /// The canonical (lowercase) name.
            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(ByName {
                    all: &$ty::ALL,
                    name: $ty::name,
                    what: stringify!($ty),
                })
            }
        }
    };
}

/// Reads one of `all` by its name, ignoring ASCII case.
struct ByName<T: 'static> {
    all: &'static [T],
    name: fn(T) -> &'static str,
    what: &'static str,
}

impl<T: Copy> serde::de::Visitor<'_> for ByName<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(formatter, "a {} name", self.what)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        self.all
            .iter()
            .copied()
            .find(|value| (self.name)(*value).eq_ignore_ascii_case(text))
            .ok_or_else(|| E::custom(format!("unknown variant: not a {} name", self.what)))
    }
}

/// One Studio state snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// UUID v4.
    #[schemars(regex(pattern = UUID_V4), extend("format" = "uuid"))]
    pub snapshot_id: String,
    /// Opaque session id: 1–64 characters of `[A-Za-z0-9_-]`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub session_id: String,
    /// RFC 3339 capture time; orders snapshots within a session (not in the
    /// brief, so optional: without it, `sequence` orders them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC_3339), extend("format" = "date-time"))]
    pub captured_at: Option<String>,
    /// Per-session counter; breaks ties.
    #[serde(
        default,
        deserialize_with = "integral::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(max = 999_999))]
    pub sequence: Option<u64>,
    /// Prime Brain mode.
    pub mode: Mode,
    /// Transport state.
    pub transport: Transport,
    /// ALS channel readings.
    #[serde(deserialize_with = "lenient::als_channels")]
    pub als_channels: Vec<AlsReading>,
    /// Engine health.
    pub audio_metrics: AudioMetrics,
    /// Harmonic analysis.
    pub harmonic_state: HarmonicState,
    /// AI analysis flags.
    #[serde(deserialize_with = "lenient::ai_analysis_flags")]
    pub ai_analysis_flags: Vec<AnalysisFlag>,
    /// Mixx Recall memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_memory_summary: Option<UserMemory>,
    /// Bloom events, oldest first (at most 24).
    #[serde(deserialize_with = "lenient::bloom_trace")]
    #[schemars(length(max = MAX_BLOOM_TRACE))]
    pub bloom_trace: Vec<BloomEvent>,
    /// Commands the user issued, oldest first (at most 20).
    #[serde(
        default,
        deserialize_with = "lenient::issued_commands",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(max = MAX_ISSUED_COMMANDS))]
    pub issued_commands: Option<Vec<DawCommand>>,
    /// Conversation, oldest first (at most 10 turns).
    #[serde(deserialize_with = "lenient::conversation_turns")]
    #[schemars(length(max = MAX_CONVERSATION_TURNS))]
    pub conversation_turns: Vec<Turn>,
    /// The guidance Prime Brain gave.
    #[serde(
        default,
        deserialize_with = "lenient::guidance",
        skip_serializing_if = "Option::is_none"
    )]
    pub guidance: Option<Guidance>,
    /// The Studio's export consent (its `VITE_SESSION_PROBE_ALLOW_EXPORT`
    /// flag, also read as `consent`): a record with `false` is refused by
    /// ingest and dropped by sanitize. Never written out.
    #[serde(default, alias = "consent", skip_serializing)]
    pub allow_export: Option<bool>,
}

/// Prime Brain's modes; they govern cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Whisper only; never intrude.
    Passive,
    /// Suggest freely.
    Active,
    /// Observe and learn.
    Learning,
    /// Tune performance.
    Optimizing,
}

/// Transport state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// Playing or stopped.
    pub is_playing: bool,
    /// Beats per minute, 20–400.
    #[schemars(range(min = 20, max = 400))]
    pub tempo: f64,
    /// Playhead position in beats, ≥ 0.
    #[schemars(range(min = 0, max = 999_999))]
    pub playhead_beats: f64,
    /// Like `4/4` (not in the brief, so optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([1-9]|[12][0-9]|3[0-2])/(1|2|4|8|16|32)$"))]
    pub time_signature: Option<String>,
    /// Loop region.
    pub cycle: Cycle,
}

/// The loop region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cycle {
    /// Looping or not.
    pub enabled: bool,
    /// Start in beats.
    #[schemars(range(min = 0, max = 999_999))]
    pub start_beats: f64,
    /// End in beats (an end before the start is read as the start).
    #[schemars(range(min = 0, max = 999_999))]
    pub end_beats: f64,
}

/// ALS channels: how Prime Brain speaks without numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlsChannel {
    /// Warmth of the mix.
    Temperature,
    /// Intensity of the session.
    Energy,
    /// Rhythm and momentum.
    Pulse,
    /// Load and strain.
    Pressure,
}

/// One ALS reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlsReading {
    /// Which channel.
    pub channel: AlsChannel,
    /// Raw value.
    #[schemars(range(min = -999_999, max = 999_999))]
    pub value: f64,
    /// 0–1.
    #[schemars(range(min = 0, max = 1))]
    pub normalized: f64,
}

/// Engine health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AudioMetrics {
    /// Round-trip latency, ≥ 0.
    #[schemars(range(min = 0, max = 999_999))]
    pub latency_ms: f64,
    /// 0–1.
    #[schemars(range(min = 0, max = 1))]
    pub cpu_load: f64,
    /// Dropouts since the last snapshot.
    #[serde(deserialize_with = "integral::required")]
    #[schemars(range(max = 999_999))]
    pub dropouts: u64,
    /// A power of two, 32–8192.
    #[serde(deserialize_with = "integral::required")]
    #[schemars(extend("enum" = [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]))]
    pub buffer_size: u32,
    /// Hz, 8–384 kHz (not in the brief, so optional).
    #[serde(
        default,
        deserialize_with = "integral::optional",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 8_000, max = 384_000))]
    pub sample_rate: Option<u32>,
}

/// Harmonic analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarmonicState {
    /// `C` … `B`, optionally with `#` or `b`.
    #[schemars(regex(pattern = r"^[A-G](#|b)?$"))]
    pub key: String,
    /// Scale name (`major`, `minor`, `dorian` …).
    pub scale: String,
    /// 0–1.
    #[schemars(range(min = 0, max = 1))]
    pub consonance: f64,
    /// 0–1.
    #[schemars(range(min = 0, max = 1))]
    pub tension: f64,
    /// 0–1.
    #[schemars(range(min = 0, max = 1))]
    pub velocity_energy: f64,
}

/// Analysis flag categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FlagCategory {
    /// Mix problems.
    Mix,
    /// Tonal problems.
    Tonal,
    /// Engine performance.
    Performance,
    /// Arrangement.
    Arrangement,
    /// System health.
    Health,
}

/// Flag severities, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical: the only level that lets passive modes intervene.
    Critical,
}

/// One AI analysis flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisFlag {
    /// Category.
    pub category: FlagCategory,
    /// Severity.
    pub severity: Severity,
    /// ALS-safe text.
    pub message: String,
}

/// Mixx Recall memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserMemory {
    /// Recent action names, oldest first (at most 10).
    #[schemars(length(max = MAX_RECENT_ACTIONS))]
    pub recent_actions: Vec<String>,
    /// Preferences.
    #[serde(default)]
    pub preferences: BTreeMap<String, String>,
}

/// Where a Bloom event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BloomSource {
    /// A Bloom petal.
    Bloom,
    /// An ALS pulse.
    Als,
    /// An inline recommendation.
    Inline,
}

/// What the user did with a suggestion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BloomOutcome {
    /// Took it.
    Accepted,
    /// Waved it away.
    Dismissed,
    /// Did not react.
    Ignored,
}

/// One Bloom event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BloomEvent {
    /// The suggested action (a command type for accepted suggestions).
    pub action: String,
    /// Where it surfaced.
    pub source: BloomSource,
    /// What the user did.
    pub outcome: BloomOutcome,
    /// RFC 3339 time (optional: the brief does not list it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = RFC_3339), extend("format" = "date-time"))]
    pub at: Option<String>,
}

/// A command the Studio executes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DawCommand {
    /// Command type from the vocabulary (`mix.eqCut`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Track archetype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<String, serde_json::Value>>,
}

/// Who spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The creator.
    User,
    /// Prime Brain.
    Prime,
}

/// One conversation turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub text: String,
}

/// How strongly guidance speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Intensity {
    /// Barely there.
    Whisper,
    /// A gentle push.
    Nudge,
    /// Needs attention.
    Call,
}

/// Guidance given through an ALS channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guidance {
    /// The channel.
    pub channel: AlsChannel,
    /// The strength.
    pub intensity: Intensity,
    /// What it says (calm, number-free).
    pub text: String,
}

named_enum!(Mode {
    Passive => "passive",
    Active => "active",
    Learning => "learning",
    Optimizing => "optimizing",
});
named_enum!(AlsChannel {
    Temperature => "temperature",
    Energy => "energy",
    Pulse => "pulse",
    Pressure => "pressure",
});
named_enum!(FlagCategory {
    Mix => "mix",
    Tonal => "tonal",
    Performance => "performance",
    Arrangement => "arrangement",
    Health => "health",
});
named_enum!(Severity {
    Info => "info",
    Low => "low",
    Medium => "medium",
    High => "high",
    Critical => "critical",
});
named_enum!(BloomSource {
    Bloom => "bloom",
    Als => "als",
    Inline => "inline",
});
named_enum!(BloomOutcome {
    Accepted => "accepted",
    Dismissed => "dismissed",
    Ignored => "ignored",
});
named_enum!(Role {
    User => "user",
    Prime => "prime",
});
named_enum!(Intensity {
    Whisper => "whisper",
    Nudge => "nudge",
    Call => "call",
});

/// A rule a snapshot breaks: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// JSON path of the field (`audioMetrics.cpuLoad`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl Snapshot {
    /// The capture time, when given and valid.
    pub fn captured(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        time(self.captured_at.as_deref())
    }

    /// The order of snapshots within a session: capture time (nanoseconds
    /// since the epoch; absent or unparseable times last), then `sequence`.
    pub fn order_key(&self) -> (i64, u64) {
        let time = self
            .captured()
            .map_or(i64::MAX, |t| t.timestamp_nanos_opt().unwrap_or(i64::MAX));
        (time, self.sequence.unwrap_or(0))
    }

    /// Checks the rules types cannot express. Array lengths are not checked:
    /// sanitize truncates them.
    pub fn validate(&self) -> Result<(), RuleViolation> {
        let fail = |field: &str, problem: &str| {
            Err(RuleViolation {
                field: field.to_string(),
                problem: problem.to_string(),
            })
        };
        match uuid::Uuid::parse_str(&self.snapshot_id) {
            Ok(id) if id.get_version_num() == 4 => {}
            _ => return fail("snapshotId", "not a UUID v4"),
        }
        if self.session_id.is_empty()
            || self.session_id.len() > 64
            || !self
                .session_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return fail("sessionId", "must be 1–64 characters of A-Z a-z 0-9 _ -");
        }
        if self.captured_at.is_some() && self.captured().is_none() {
            return fail("capturedAt", "not an RFC 3339 time");
        }
        let t = &self.transport;
        if !(20.0..=400.0).contains(&t.tempo) {
            return fail("transport.tempo", "outside 20–400 bpm");
        }
        if t.playhead_beats < 0.0 {
            return fail("transport.playheadBeats", "negative");
        }
        if t.time_signature.as_deref().is_some_and(|s| !valid_time_signature(s)) {
            return fail("transport.timeSignature", "not like 4/4");
        }
        if t.cycle.start_beats < 0.0 || t.cycle.end_beats < 0.0 {
            return fail("transport.cycle", "negative");
        }
        for reading in &self.als_channels {
            if !reading.value.is_finite() || !reading.normalized.is_finite() {
                return fail("alsChannels.value", "not a finite number");
            }
        }
        let a = &self.audio_metrics;
        if a.latency_ms < 0.0 || !a.latency_ms.is_finite() {
            return fail("audioMetrics.latencyMs", "negative or not finite");
        }
        if !(0.0..=1.0).contains(&a.cpu_load) {
            return fail("audioMetrics.cpuLoad", "outside 0–1");
        }
        if !a.buffer_size.is_power_of_two() || !(32..=8192).contains(&a.buffer_size) {
            return fail("audioMetrics.bufferSize", "not a power of two in 32–8192");
        }
        if a.sample_rate.is_some_and(|rate| !(8_000..=384_000).contains(&rate)) {
            return fail("audioMetrics.sampleRate", "outside 8–384 kHz");
        }
        let h = &self.harmonic_state;
        if !valid_key(&h.key) {
            return fail("harmonicState.key", "not a key like C, F# or Bb");
        }
        for (field, value) in [
            ("harmonicState.consonance", h.consonance),
            ("harmonicState.tension", h.tension),
            ("harmonicState.velocityEnergy", h.velocity_energy),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return fail(field, "outside 0–1");
            }
        }
        for event in &self.bloom_trace {
            if event.at.is_some() && event.time().is_none() {
                return fail("bloomTrace.at", "not an RFC 3339 time");
            }
        }
        Ok(())
    }
}

impl BloomEvent {
    /// When it happened, when given and valid.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        time(self.at.as_deref())
    }
}

/// An RFC 3339 time, if `text` is one.
fn time(text: Option<&str>) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text?).ok()
}

fn valid_time_signature(text: &str) -> bool {
    let Some((beats, unit)) = text.split_once('/') else {
        return false;
    };
    matches!(beats.parse::<u32>(), Ok(1..=32)) && matches!(unit.parse::<u32>(), Ok(1 | 2 | 4 | 8 | 16 | 32))
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some('A'..='G')) && matches!(chars.as_str(), "" | "#" | "b")
}

/// Lists (and the guidance) whose items are dropped one by one when they do
/// not read — an unknown channel or category, a misspelt field — instead of
/// dropping the whole record: the Studio may know more than this Fabric.
/// Leniency costs a second pass over each item, so it is switched on only
/// for a record that did not read strictly ([`read_snapshot`]); each drop is
/// counted by field.
mod lenient {
    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer};
    use serde_json::value::RawValue;

    use super::{AlsReading, AnalysisFlag, BloomEvent, DawCommand, Guidance, Turn};

    thread_local! {
        /// Whether items that do not read are dropped (else they fail the record).
        pub(super) static ON: Cell<bool> = const { Cell::new(false) };
        /// The items dropped, by field.
        pub(super) static DROPPED: RefCell<BTreeMap<&'static str, usize>> = const { RefCell::new(BTreeMap::new()) };
    }

    fn read<T: DeserializeOwned>(raw: &RawValue, field: &'static str) -> Option<T> {
        let item = serde_json::from_str(raw.get()).ok();
        if item.is_none() {
            DROPPED.with(|dropped| *dropped.borrow_mut().entry(field).or_insert(0) += 1);
        }
        item
    }

    fn items<'de, D: Deserializer<'de>, T: DeserializeOwned>(
        deserializer: D,
        field: &'static str,
    ) -> Result<Vec<T>, D::Error> {
        if !ON.get() {
            return Vec::<T>::deserialize(deserializer);
        }
        let raw = Vec::<Box<RawValue>>::deserialize(deserializer)?;
        Ok(raw.iter().filter_map(|item| read(item, field)).collect())
    }

    pub fn als_channels<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<AlsReading>, D::Error> {
        items(deserializer, "dropped:alsChannels")
    }

    pub fn ai_analysis_flags<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<AnalysisFlag>, D::Error> {
        items(deserializer, "dropped:aiAnalysisFlags")
    }

    pub fn bloom_trace<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<BloomEvent>, D::Error> {
        items(deserializer, "dropped:bloomTrace")
    }

    pub fn conversation_turns<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Turn>, D::Error> {
        items(deserializer, "dropped:conversationTurns")
    }

    pub fn issued_commands<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Vec<DawCommand>>, D::Error> {
        if !ON.get() {
            return Option::<Vec<DawCommand>>::deserialize(deserializer);
        }
        let raw = Option::<Vec<Box<RawValue>>>::deserialize(deserializer)?;
        Ok(raw.map(|raw| {
            raw.iter()
                .filter_map(|item| read(item, "dropped:issuedCommands"))
                .collect()
        }))
    }

    pub fn guidance<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Guidance>, D::Error> {
        if !ON.get() {
            return Option::<Guidance>::deserialize(deserializer);
        }
        let raw = Option::<Box<RawValue>>::deserialize(deserializer)?;
        Ok(raw.and_then(|raw| read(&raw, "dropped:guidance")))
    }
}

/// Reads one raw record: strictly first (the fast path, which every valid
/// record takes), then, if that fails, leniently — items that do not read
/// are dropped and returned counted by field (`dropped:alsChannels` …). The
/// error is the lenient reading's: what is wrong with the record itself.
pub fn read_snapshot(text: &str) -> Result<(Snapshot, BTreeMap<&'static str, usize>), serde_json::Error> {
    if let Ok(snapshot) = serde_json::from_str(text) {
        return Ok((snapshot, BTreeMap::new()));
    }
    let (read, dropped) = leniently(|| serde_json::from_str(text));
    read.map(|snapshot| (snapshot, dropped))
}

/// Runs `read` with lenient item lists on this thread, and returns what it
/// returned with the items it dropped, by field.
pub fn leniently<T>(read: impl FnOnce() -> T) -> (T, BTreeMap<&'static str, usize>) {
    lenient::ON.set(true);
    lenient::DROPPED.with(|dropped| dropped.borrow_mut().clear());
    let result = read();
    lenient::ON.set(false);
    (
        result,
        lenient::DROPPED.with(|dropped| std::mem::take(&mut *dropped.borrow_mut())),
    )
}

/// Integer fields read from JSON integers and from integral floats (`256.0`),
/// as JSON Schema's `integer` (and JavaScript's numbers) allow.
mod integral {
    use serde::{Deserialize, Deserializer, de::Error};

    fn convert<T: TryFrom<u64>, E: Error>(value: serde_json::Number) -> Result<T, E> {
        let whole = match value.as_u64() {
            Some(whole) => Some(whole),
            None => value
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64),
        };
        whole
            .and_then(|w| T::try_from(w).ok())
            .ok_or_else(|| E::custom(format!("invalid value: {value} is not a whole number in range")))
    }

    /// A required integer field.
    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
        convert(serde_json::Number::deserialize(deserializer)?)
    }

    /// An optional integer field (`null` is absent).
    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<Option<T>, D::Error> {
        Option::<serde_json::Number>::deserialize(deserializer)?
            .map(convert)
            .transpose()
    }
}
