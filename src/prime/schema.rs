//! Snapshot schema v1 (`PrimeBrainRawSnapshot`): the Rust types are the source
//! of truth; `fabric schema` prints the JSON Schema generated from them.
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

/// One Studio state snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// UUID v4.
    pub snapshot_id: String,
    /// Opaque session id: 1–64 characters of `[A-Za-z0-9_-]`.
    pub session_id: String,
    /// RFC 3339 capture time; orders snapshots within a session.
    pub captured_at: String,
    /// Per-session counter; breaks ties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    /// Prime Brain mode.
    pub mode: Mode,
    /// Transport state.
    pub transport: Transport,
    /// ALS channel readings.
    pub als_channels: Vec<AlsReading>,
    /// Engine health.
    pub audio_metrics: AudioMetrics,
    /// Harmonic analysis.
    pub harmonic_state: HarmonicState,
    /// AI analysis flags.
    pub ai_analysis_flags: Vec<AnalysisFlag>,
    /// Mixx Recall memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_memory_summary: Option<UserMemory>,
    /// Bloom events, oldest first (at most 24).
    pub bloom_trace: Vec<BloomEvent>,
    /// Commands the user issued, oldest first (at most 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_commands: Option<Vec<DawCommand>>,
    /// Conversation, oldest first (at most 10 turns).
    pub conversation_turns: Vec<Turn>,
    /// The guidance Prime Brain gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<Guidance>,
    /// The Studio's export consent (its `VITE_SESSION_PROBE_ALLOW_EXPORT`
    /// flag, also read as `consent`): a record with `false` is refused by
    /// ingest and dropped by sanitize. Never written out.
    #[serde(default, alias = "consent", skip_serializing)]
    pub allow_export: Option<bool>,
}

/// Prime Brain's modes; they govern cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
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

impl Mode {
    /// Every mode, in a fixed order (feature layouts depend on it).
    pub const ALL: [Mode; 4] = [Mode::Passive, Mode::Active, Mode::Learning, Mode::Optimizing];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Passive => "passive",
            Mode::Active => "active",
            Mode::Learning => "learning",
            Mode::Optimizing => "optimizing",
        }
    }
}

/// Transport state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transport {
    /// Playing or stopped.
    pub is_playing: bool,
    /// Beats per minute, 20–400.
    pub tempo: f64,
    /// Playhead position in beats, ≥ 0.
    pub playhead_beats: f64,
    /// Like `4/4`.
    pub time_signature: String,
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
    pub start_beats: f64,
    /// End in beats.
    pub end_beats: f64,
}

/// ALS channels: how Prime Brain speaks without numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
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

impl AlsChannel {
    /// Every channel, in a fixed order.
    pub const ALL: [AlsChannel; 4] = [
        AlsChannel::Temperature,
        AlsChannel::Energy,
        AlsChannel::Pulse,
        AlsChannel::Pressure,
    ];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            AlsChannel::Temperature => "temperature",
            AlsChannel::Energy => "energy",
            AlsChannel::Pulse => "pulse",
            AlsChannel::Pressure => "pressure",
        }
    }
}

/// One ALS reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlsReading {
    /// Which channel.
    pub channel: AlsChannel,
    /// Raw value.
    pub value: f64,
    /// 0–1 (clamped by sanitize).
    pub normalized: f64,
}

/// Engine health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AudioMetrics {
    /// Round-trip latency, ≥ 0.
    pub latency_ms: f64,
    /// 0–1.
    pub cpu_load: f64,
    /// Dropouts since the last snapshot.
    pub dropouts: u64,
    /// A power of two, 32–8192.
    pub buffer_size: u32,
    /// Hz.
    pub sample_rate: u32,
}

/// Harmonic analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HarmonicState {
    /// `C` … `B`, optionally with `#` or `b`.
    pub key: String,
    /// Scale name (`major`, `minor`, `dorian` …).
    pub scale: String,
    /// 0–1.
    pub consonance: f64,
    /// 0–1.
    pub tension: f64,
    /// 0–1.
    pub velocity_energy: f64,
}

/// Analysis flag categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
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

impl FlagCategory {
    /// Every category, in a fixed order.
    pub const ALL: [FlagCategory; 5] = [
        FlagCategory::Mix,
        FlagCategory::Tonal,
        FlagCategory::Performance,
        FlagCategory::Arrangement,
        FlagCategory::Health,
    ];
}

/// Flag severities, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
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

impl Severity {
    /// Every severity, in a fixed order.
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
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
    pub recent_actions: Vec<String>,
    /// Preferences.
    #[serde(default)]
    pub preferences: BTreeMap<String, String>,
}

/// Where a Bloom event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BloomOutcome {
    /// Took it.
    Accepted,
    /// Waved it away.
    Dismissed,
    /// Did not react.
    Ignored,
}

impl BloomOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [BloomOutcome; 3] = [BloomOutcome::Accepted, BloomOutcome::Dismissed, BloomOutcome::Ignored];
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
    /// RFC 3339 time.
    pub at: String,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Intensity {
    /// Barely there.
    Whisper,
    /// A gentle push.
    Nudge,
    /// Needs attention.
    Call,
}

impl Intensity {
    /// Every intensity, in a fixed order.
    pub const ALL: [Intensity; 3] = [Intensity::Whisper, Intensity::Nudge, Intensity::Call];

    /// The lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Intensity::Whisper => "whisper",
            Intensity::Nudge => "nudge",
            Intensity::Call => "call",
        }
    }
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

/// A rule a snapshot breaks: the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// JSON path of the field (`audioMetrics.cpuLoad`).
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl Snapshot {
    /// The order of snapshots within a session: capture time (nanoseconds
    /// since the epoch; unparseable times last), then `sequence`.
    pub fn order_key(&self) -> (i64, u64) {
        let time = chrono::DateTime::parse_from_rfc3339(&self.captured_at)
            .map(|t| t.timestamp_nanos_opt().unwrap_or(i64::MAX))
            .unwrap_or(i64::MAX);
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
        if chrono::DateTime::parse_from_rfc3339(&self.captured_at).is_err() {
            return fail("capturedAt", "not an RFC 3339 time");
        }
        let t = &self.transport;
        if !(20.0..=400.0).contains(&t.tempo) {
            return fail("transport.tempo", "outside 20–400 bpm");
        }
        if t.playhead_beats < 0.0 {
            return fail("transport.playheadBeats", "negative");
        }
        if !valid_time_signature(&t.time_signature) {
            return fail("transport.timeSignature", "not like 4/4");
        }
        if t.cycle.start_beats < 0.0 || t.cycle.end_beats < t.cycle.start_beats {
            return fail("transport.cycle", "end before start or negative");
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
        if !(8_000..=384_000).contains(&a.sample_rate) {
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
            if chrono::DateTime::parse_from_rfc3339(&event.at).is_err() {
                return fail("bloomTrace.at", "not an RFC 3339 time");
            }
        }
        Ok(())
    }
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

/// The JSON Schema of [`Snapshot`], pretty-printed.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Snapshot);
    serde_json::to_string_pretty(&schema).expect("a schema serializes")
}
