//! Simulated Studio sessions: the embedded default data and the "simulated
//! sessions" of the brief. Seeded and deterministic.
//!
//! Each simulated user has a hidden style the data should let a model learn:
//! how they free CPU (freeze a track or raise the buffer), how they answer a
//! muddy mix (EQ cut on the bass or a level balance), whether they loop
//! sections, how strongly they make a mix move and by how much they change
//! the tempo ([`Style`], answering [`Need`]s: one policy, which the
//! evaluation's oracle reuses). Commands carry the arguments the vocabulary
//! requires: a buffer size twice the current one, a mix move's amount (by
//! the mix flag's severity and the user's boldness), a tempo in bpm. A user's memory summary carries their recent
//! actions from one session to the next, as the Studio's Mixx Recall does.
//! Sessions change mode over time, play and stop, have CPU spikes
//! and dropouts, drift harmonically, and record Bloom suggestions with their
//! outcomes and the commands the user issued. A share of records is made bad
//! the way a real export stream is (personal data, out-of-range values,
//! oversize arrays, missing fields, duplicates, truncated JSON).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use fabric_core::steps::BadOption;

use super::labels::seed_label;
use super::schema::*;
use super::vocabulary;

/// What to simulate: the `with` table of `prime.simulate` and the flags of
/// `fabric simulate`, declared once.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct SimulateOptions {
    /// Random seed.
    #[arg(long, default_value_t = SimulateOptions::default().seed)]
    pub seed: u64,
    /// Simulated users, each with a hidden style.
    #[arg(long, default_value_t = SimulateOptions::default().users)]
    pub users: usize,
    /// The group of users: each group (`validation`, `test`, …) is drawn
    /// from its own random stream, so its users are others than the default
    /// group's (empty: the users a model learns from) whatever the counts.
    /// Session ids start with the group's name.
    #[arg(long, default_value_t = SimulateOptions::default().group)]
    pub group: String,
    /// Sessions per user.
    #[arg(long, default_value_t = SimulateOptions::default().sessions_per_user)]
    pub sessions_per_user: usize,
    /// Snapshots per session (one every 4 s).
    #[arg(long, default_value_t = SimulateOptions::default().snapshots_per_session)]
    pub snapshots_per_session: usize,
    /// Share of records made bad on purpose (0–1).
    #[arg(long, default_value_t = SimulateOptions::default().bad_fraction)]
    pub bad_fraction: f64,
}

impl Default for SimulateOptions {
    fn default() -> Self {
        SimulateOptions {
            seed: 57,
            users: 40,
            group: String::new(),
            sessions_per_user: 4,
            snapshots_per_session: 90,
            bad_fraction: 0.04,
        }
    }
}

impl SimulateOptions {
    /// Checks the values serde and clap cannot.
    pub fn check(&self) -> Result<(), BadOption> {
        if !(0.0..=1.0).contains(&self.bad_fraction) {
            return Err(BadOption::new("bad_fraction", "must be within 0–1"));
        }
        if !self
            .group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(BadOption::new("group", "must be letters, digits, `-` and `_` only"));
        }
        if self.group.len() > MAX_GROUP_LEN {
            return Err(BadOption::new(
                "group",
                format!("must be at most {MAX_GROUP_LEN} characters (session ids start with it)"),
            ));
        }
        Ok(())
    }
}

/// The longest group name: session ids (`GROUP-u00-s00`) stay well within
/// the schema's 64 characters.
pub const MAX_GROUP_LEN: usize = 32;

/// Counts of what was written.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SimulateSummary {
    /// Session files written.
    pub sessions: usize,
    /// Records written (bad ones included).
    pub records: usize,
    /// Records made bad on purpose.
    pub bad: usize,
}

/// A simulated user's hidden style: which command they answer each
/// [`Need`] with, and whether they talk to Prime.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Style {
    /// Frees CPU by freezing a track (else by raising the buffer).
    pub freezes: bool,
    /// Answers a muddy mix with an EQ cut on the bass (else a level balance).
    pub eq_cuts: bool,
    /// Loops a section now and then while playing.
    pub loops: bool,
    /// Talks to Prime now and then.
    pub talkative: bool,
    /// Makes mix moves one step stronger ([`Style::amount`]).
    pub bold: bool,
    /// Changes the tempo now and then, always by this many beats per
    /// minute (one of [`vocabulary::TEMPO_STEPS`]).
    pub tempo_step: f64,
}

/// What a moment of a session asks of the user, in order of precedence: at
/// each step the user answers at most one need, the first present one they
/// answer, and answers nothing at the step after they answered one (the
/// answer is issued then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The engine runs hot (a performance flag is up).
    CpuRelief,
    /// The low end is muddy (a mix flag is up).
    MudFix,
    /// Playing, for a user who loops sections.
    Loop,
}

impl Need {
    /// Every need, most pressing first.
    pub const ALL: [Need; 3] = [Need::CpuRelief, Need::MudFix, Need::Loop];

    /// The chance a user answers the need at a step where it is present.
    pub fn answer_rate(self) -> f64 {
        match self {
            Need::CpuRelief => 0.85,
            Need::MudFix => 0.8,
            Need::Loop => 0.05,
        }
    }

    /// The flag that shows the need, if one does.
    pub fn flag(self) -> Option<FlagCategory> {
        match self {
            Need::CpuRelief => Some(FlagCategory::Performance),
            Need::MudFix => Some(FlagCategory::Mix),
            Need::Loop => None,
        }
    }

    /// Whether the need is present: its flag is up, or (a loop) the
    /// transport plays for a user who loops.
    pub fn present(self, flags: &[FlagCategory], playing: bool, loops: bool) -> bool {
        match self.flag() {
            Some(category) => flags.contains(&category),
            None => loops && playing,
        }
    }

    /// The command types the need is answered with, whatever the style.
    pub fn answers(self) -> &'static [&'static str] {
        match self {
            Need::CpuRelief => &["track.freeze", "engine.setBufferSize"],
            Need::MudFix => &["mix.eqCut", "mix.balanceLevels"],
            Need::Loop => &["arrange.loopSection"],
        }
    }
}

/// The tracks a freeze picks from, with their odds: the heaviest track
/// most often.
pub const FREEZABLE: [(&str, f64); 3] = [("synth", 0.6), ("keys", 0.25), ("fx", 0.15)];

/// The tracks an answer of type `kind` may target with their odds, the
/// likeliest first (none for a command without a target).
pub fn answer_targets(kind: &str) -> &'static [(&'static str, f64)] {
    match kind {
        "track.freeze" => &FREEZABLE,
        "mix.eqCut" => &[("bass", 1.0)],
        _ => &[],
    }
}

/// The commands a user issues on their own, not in answer to a moment
/// (they do not hold back the next answer): the transport, and now and
/// then, while playing, a change of tempo by the user's own step.
pub const SPONTANEOUS: [&str; 3] = ["transport.play", "transport.stop", "transport.setTempo"];

impl Style {
    /// How strongly this user makes a mix move: gentle, one step stronger
    /// for a mix flag of high severity or more, one more for a bold user.
    /// `severity` is the mix flag's (none for a move of their own).
    pub fn amount(&self, severity: Option<Severity>) -> &'static str {
        let flagged = severity.is_some_and(|s| s >= Severity::High);
        let words = match vocabulary::AMOUNT.values {
            vocabulary::ArgValues::Words(words) => words,
            _ => unreachable!("amounts are words"),
        };
        words[usize::from(flagged) + usize::from(self.bold)]
    }

    /// The command type this user answers `need` with.
    pub fn answer(&self, need: Need) -> &'static str {
        let answers = need.answers();
        match need {
            Need::CpuRelief if !self.freezes => answers[1],
            Need::MudFix if !self.eq_cuts => answers[1],
            _ => answers[0],
        }
    }
}

const PEOPLE: [&str; 8] = ["Maya", "John", "Priya", "Carlos", "Ahmed", "Sofia", "Kenji", "Amara"];
const TRACKS: [(&str, &str); 8] = [
    ("vox take 3", "vocals"),
    ("guitar DI", "guitar"),
    ("bass comp", "bass"),
    ("drum bus", "drums"),
    ("keys", "keys"),
    ("synth lead", "synth"),
    ("fx riser", "fx"),
    ("piano", "keys"),
];

/// The random stream of a group of users: the seed itself for the default
/// group, else a hash of the seed and the group's name.
fn group_rng(seed: u64, group: &str) -> ChaCha8Rng {
    if group.is_empty() {
        return ChaCha8Rng::seed_from_u64(seed);
    }
    let mut key = fabric_core::digest::KeyEncoder::new("fabric-simulate-group-v1");
    key.bytes(b's', &seed.to_le_bytes()).text(b'g', group);
    ChaCha8Rng::from_seed(key.finish().0)
}

/// Writes one `<session>.jsonl` file per session into `dir`.
pub fn simulate(options: &SimulateOptions, dir: &Path) -> std::io::Result<SimulateSummary> {
    std::fs::create_dir_all(dir)?;
    let mut rng = group_rng(options.seed, &options.group);
    let prefix = if options.group.is_empty() {
        String::new()
    } else {
        format!("{}-", options.group)
    };
    let mut summary = SimulateSummary::default();
    for user in 0..options.users {
        let style = Style {
            freezes: rng.random_bool(0.5),
            eq_cuts: rng.random_bool(0.5),
            loops: rng.random_bool(0.4),
            talkative: rng.random_bool(0.5),
            bold: rng.random_bool(0.5),
            // The middle steps: a habit of small changes either way.
            tempo_step: *vocabulary::TEMPO_STEPS[1..5].choose(&mut rng).expect("non-empty"),
        };
        // The user's memory (Mixx Recall) carries their recent actions from
        // one session to the next.
        let mut recent: Vec<String> = Vec::new();
        for session in 0..options.sessions_per_user {
            let id = format!("{prefix}u{user:02}-s{session:02}");
            let records = simulate_session(&mut rng, &id, style, &mut recent, options, user * 1000 + session);
            let mut file = std::io::BufWriter::new(std::fs::File::create(dir.join(format!("{id}.jsonl")))?);
            let mut previous: Option<String> = None;
            for snapshot in records {
                let mut line = serde_json::to_string(&snapshot).map_err(std::io::Error::other)?;
                if rng.random_bool(options.bad_fraction) {
                    line = spoil(&mut rng, &snapshot, previous.as_deref());
                    summary.bad += 1;
                }
                writeln!(file, "{line}")?;
                previous = Some(line);
                summary.records += 1;
            }
            file.flush()?;
            summary.sessions += 1;
        }
    }
    Ok(summary)
}

fn uuid_v4(rng: &mut ChaCha8Rng) -> String {
    let bytes: [u8; 16] = rng.random();
    uuid::Builder::from_random_bytes(bytes).into_uuid().to_string()
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn simulate_session(
    rng: &mut ChaCha8Rng,
    session_id: &str,
    style: Style,
    recent: &mut Vec<String>,
    options: &SimulateOptions,
    index: usize,
) -> Vec<Snapshot> {
    let start = chrono::DateTime::from_timestamp(1_790_000_000 + index as i64 * 7_200, 0).expect("valid time");
    let mut tempo = [84.0, 92.0, 100.0, 120.0, 128.0, 140.0]
        .choose(rng)
        .copied()
        .unwrap_or(120.0);
    let key = ["C", "D", "Eb", "E", "F", "F#", "G", "A", "Bb", "B"]
        .choose(rng)
        .copied()
        .unwrap_or("C");
    let scale = ["major", "minor", "dorian"].choose(rng).copied().unwrap_or("major");
    let mut mode = Mode::Active;
    let mut playing = false;
    let mut playhead = 0.0;
    let mut cpu: f64 = rng.random_range(0.2..0.45);
    let mut buffer: u32 = [128, 256].choose(rng).copied().unwrap_or(256);
    let mut tension: f64 = rng.random_range(0.2..0.5);
    let mut mud_left: u32 = 0;
    let mut mud_severity = Severity::Medium;
    let mut spike_left: u32 = 0;
    let mut commands: Vec<DawCommand> = Vec::new();
    let mut bloom: Vec<BloomEvent> = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    let mut pending: Option<(DawCommand, usize)> = None;
    let mut snapshots = Vec::with_capacity(options.snapshots_per_session);

    for step in 0..options.snapshots_per_session {
        let at = start + chrono::Duration::seconds(4 * step as i64);
        let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // Mode drifts slowly.
        if rng.random_bool(0.06) {
            mode = *Mode::ALL.choose(rng).expect("non-empty");
        }
        // Transport.
        if rng.random_bool(0.04) {
            playing = !playing;
            issue(
                &mut commands,
                recent,
                command(SPONTANEOUS[usize::from(!playing)], None, None),
            );
        } else if playing && rng.random_bool(0.004) {
            tempo += style.tempo_step;
            let bpm = BTreeMap::from([(vocabulary::BPM.name.into(), serde_json::json!(tempo))]);
            issue(&mut commands, recent, command(SPONTANEOUS[2], None, Some(bpm)));
        }
        if playing {
            playhead += tempo / 60.0 * 4.0;
        }
        // Health incidents.
        if spike_left == 0 && rng.random_bool(0.05) {
            spike_left = rng.random_range(2..5);
        }
        let target_cpu = if spike_left > 0 { 0.93 } else { 0.35 };
        cpu = (cpu + (target_cpu - cpu) * 0.6 + rng.random_range(-0.04..0.04)).clamp(0.05, 1.0);
        let dropouts = if cpu > 0.9 { rng.random_range(1..4) } else { 0 };
        // Mix problems.
        if mud_left == 0 && rng.random_bool(0.04) {
            mud_left = rng.random_range(2..5);
            mud_severity = *[Severity::Medium, Severity::High].choose(rng).expect("non-empty");
        }
        tension = (tension + rng.random_range(-0.05..0.05)).clamp(0.0, 1.0);

        let mut flags = Vec::new();
        if spike_left > 0 {
            let severity = if dropouts > 2 {
                Severity::Critical
            } else {
                Severity::High
            };
            flags.push(AnalysisFlag {
                category: FlagCategory::Performance,
                severity,
                message: "The engine is running hot".into(),
            });
        }
        if mud_left > 0 {
            flags.push(AnalysisFlag {
                category: FlagCategory::Mix,
                severity: mud_severity,
                message: "The low end feels crowded".into(),
            });
        }
        if tension > 0.75 {
            flags.push(AnalysisFlag {
                category: FlagCategory::Tonal,
                severity: Severity::Low,
                message: "Tension is building".into(),
            });
        }

        let flag_categories: Vec<FlagCategory> = flags.iter().map(|f| f.category).collect();
        // The user's own reaction, one snapshot after the cue.
        if let Some((command, due)) = pending.take() {
            if due == step {
                let suggestion_matches = bloom.last().is_some_and(|b| b.action == command.kind);
                if let Some(last) = bloom.last_mut()
                    && last.outcome == BloomOutcome::Ignored
                {
                    last.outcome = if suggestion_matches {
                        BloomOutcome::Accepted
                    } else {
                        BloomOutcome::Dismissed
                    };
                }
                if command.kind == "engine.setBufferSize" {
                    buffer = (buffer * 2).min(2048);
                }
                if command.kind == "track.freeze" {
                    cpu *= 0.7;
                }
                if command.kind.starts_with("mix.") {
                    mud_left = 0;
                }
                if command.kind == "engine.setBufferSize" || command.kind == "track.freeze" {
                    spike_left = 0;
                }
                issue(&mut commands, recent, command);
            } else {
                pending = Some((command, due));
            }
        } else if let Some(need) = Need::ALL
            .into_iter()
            .find(|need| need.present(&flag_categories, playing, style.loops) && rng.random_bool(need.answer_rate()))
        {
            let kind = style.answer(need);
            let target = answer_targets(kind)
                .choose_weighted(rng, |(_, odds)| *odds)
                .ok()
                .map(|(track, _)| *track);
            let args = match kind {
                "engine.setBufferSize" => Some((vocabulary::SIZE.name, serde_json::json!(buffer * 2))),
                _ if needs_amount(kind) => Some((
                    vocabulary::AMOUNT.name,
                    serde_json::json!(style.amount(Some(mud_severity))),
                )),
                _ => None,
            };
            let args = args.map(|(name, value)| BTreeMap::from([(name.to_string(), value)]));
            pending = Some((command(kind, target, args), step + 1));
        } else if rng.random_bool(0.02) {
            let kind = ["mix.addReverb", "mix.compress", "track.solo", "track.mute"]
                .choose(rng)
                .expect("non-empty");
            let target = ["vocals", "drums", "guitar", "keys"].choose(rng).copied();
            let args = needs_amount(kind).then(|| {
                BTreeMap::from([(
                    vocabulary::AMOUNT.name.to_string(),
                    serde_json::json!(style.amount(None)),
                )])
            });
            pending = Some((command(kind, target, args), step + 1));
        }
        spike_left = spike_left.saturating_sub(1);
        mud_left = mud_left.saturating_sub(1);

        let mut snapshot = Snapshot {
            snapshot_id: uuid_v4(rng),
            session_id: session_id.to_string(),
            captured_at: Some(at_text.clone()),
            sequence: Some(step as u64),
            mode,
            transport: Transport {
                is_playing: playing,
                tempo,
                playhead_beats: round(playhead),
                time_signature: Some("4/4".into()),
                cycle: Cycle {
                    enabled: style.loops && playing,
                    start_beats: 0.0,
                    end_beats: 16.0,
                },
            },
            als_channels: AlsChannel::ALL
                .iter()
                .map(|&channel| {
                    let normalized = match channel {
                        AlsChannel::Temperature => 0.5 + if mud_left > 0 { 0.3 } else { 0.0 },
                        AlsChannel::Energy => (if playing { 0.7 } else { 0.3 }) + tension * 0.2,
                        AlsChannel::Pulse => (tempo - 60.0) / 120.0,
                        AlsChannel::Pressure => cpu,
                    };
                    let normalized = round((normalized + rng.random_range(-0.03..0.03)).clamp(0.0, 1.0));
                    AlsReading {
                        channel,
                        value: round(normalized * 100.0),
                        normalized,
                    }
                })
                .collect(),
            audio_metrics: AudioMetrics {
                latency_ms: round(buffer as f64 / 48.0 * 2.0),
                cpu_load: round(cpu),
                dropouts,
                buffer_size: buffer,
                sample_rate: Some(48_000),
            },
            harmonic_state: HarmonicState {
                key: key.into(),
                scale: scale.into(),
                consonance: round(1.0 - tension * 0.6),
                tension: round(tension),
                velocity_energy: round((if playing { 0.6 } else { 0.2 }) + rng.random_range(0.0..0.2)),
            },
            ai_analysis_flags: flags,
            user_memory_summary: Some(UserMemory {
                recent_actions: tail(recent, MAX_RECENT_ACTIONS),
                preferences: BTreeMap::from([("meter".into(), "calm".into())]),
            }),
            bloom_trace: tail(&bloom, MAX_BLOOM_TRACE),
            issued_commands: Some(tail(&commands, MAX_ISSUED_COMMANDS)),
            conversation_turns: tail(&turns, MAX_CONVERSATION_TURNS),
            guidance: None,
            allow_export: None,
        };
        // Prime Brain's current logic reacts; its suggestion goes out through Bloom.
        let label = seed_label(&snapshot);
        snapshot.guidance = Some(Guidance {
            channel: label.channel,
            intensity: label.intensity,
            text: label.response.clone(),
        });
        if let Some(command) = &label.command {
            bloom.push(BloomEvent {
                action: command.kind.clone(),
                source: BloomSource::Bloom,
                outcome: BloomOutcome::Ignored,
                at: Some(at_text.clone()),
            });
        }
        if style.talkative && rng.random_bool(0.08) {
            // Clean records carry no personal data; bad ones do (see `spoil`).
            let (track, _) = TRACKS.choose(rng).expect("non-empty");
            turns.push(Turn {
                role: Role::User,
                text: format!("the {track} needs more space"),
            });
            turns.push(Turn {
                role: Role::Prime,
                text: label.response.clone(),
            });
        }
        snapshots.push(snapshot);
    }
    snapshots
}

fn command(kind: &str, target: Option<&str>, args: Option<BTreeMap<String, serde_json::Value>>) -> DawCommand {
    DawCommand {
        kind: kind.to_string(),
        target: target.map(str::to_string),
        args,
    }
}

/// Whether a command of type `kind` takes an `amount`.
pub fn needs_amount(kind: &str) -> bool {
    vocabulary::command(kind).is_some_and(|c| c.args.contains(&vocabulary::AMOUNT))
}

fn issue(commands: &mut Vec<DawCommand>, recent: &mut Vec<String>, command: DawCommand) {
    recent.push(command.kind.clone());
    commands.push(command);
}

fn tail<T: Clone>(items: &[T], limit: usize) -> Vec<T> {
    items[items.len().saturating_sub(limit)..].to_vec()
}

/// Turns a good record into one of the bad kinds a real stream carries.
fn spoil(rng: &mut ChaCha8Rng, snapshot: &Snapshot, previous: Option<&str>) -> String {
    let mut value = serde_json::to_value(snapshot).expect("a snapshot serializes");
    match rng.random_range(0..8) {
        0 => {
            let person = PEOPLE.choose(rng).expect("non-empty");
            value["conversationTurns"] = serde_json::json!([
                {"role": "user", "text": format!("{person} here, mail me at {}@example.com or call +44 20 7946 0958", person.to_lowercase())},
                {"role": "user", "text": format!("stems are in /home/{}/Music/final_mix.wav", person.to_lowercase())}
            ]);
        }
        1 => {
            let person = PEOPLE.choose(rng).expect("non-empty");
            value["issuedCommands"] =
                serde_json::json!([{"type": "track.mute", "target": format!("{person} vox take 3")}]);
            value["aiAnalysisFlags"] = serde_json::json!([{"category": "mix", "severity": "low", "message": format!("{person} vox take 3 is clipping")}]);
        }
        2 => value["audioMetrics"]["cpuLoad"] = serde_json::json!(3.5),
        3 => value["transport"]["tempo"] = serde_json::json!(1000),
        4 => {
            let many: Vec<serde_json::Value> = (0..30)
                .map(|i| serde_json::json!({"role": "prime", "text": format!("turn {i}")}))
                .collect();
            value["conversationTurns"] = serde_json::Value::Array(many);
            value["smuggled"] = serde_json::json!({"email": "leak@example.com"});
        }
        5 => {
            if let Some(object) = value.as_object_mut() {
                object.remove("harmonicState");
            }
        }
        6 => {
            if let Some(previous) = previous {
                return previous.to_string();
            }
        }
        _ => {
            let text = value.to_string();
            return text[..text.len() / 2].to_string();
        }
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file `simulate` writes, by name.
    fn run(options: &SimulateOptions) -> BTreeMap<String, String> {
        let dir = tempfile::tempdir().unwrap();
        simulate(options, dir.path()).unwrap();
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    }

    /// Every snapshot id of a run (random per snapshot: two runs of one
    /// stream share them all, two streams none).
    fn snapshot_ids(files: &BTreeMap<String, String>) -> std::collections::BTreeSet<String> {
        files
            .values()
            .flat_map(|text| text.lines())
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter_map(|v| v["snapshotId"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn a_group_of_users_is_its_own_stream_and_shares_no_snapshot_with_the_default_one() {
        let options = SimulateOptions {
            users: 3,
            sessions_per_user: 2,
            snapshots_per_session: 12,
            ..SimulateOptions::default()
        };
        let test = SimulateOptions {
            group: "test".into(),
            ..options.clone()
        };
        let (learn, held_out) = (run(&options), run(&test));
        assert_eq!(held_out, run(&test), "a group is reproducible");
        assert!(
            held_out.keys().all(|name| name.starts_with("test-u")),
            "{:?}",
            held_out.keys()
        );
        assert!(learn.keys().all(|name| name.starts_with('u')));
        assert_eq!(held_out.len(), learn.len());
        assert!(snapshot_ids(&learn).is_disjoint(&snapshot_ids(&held_out)));
        // Another group is another stream again; more users of the default
        // group do not change the ones before them.
        let validation = run(&SimulateOptions {
            group: "validation".into(),
            ..options.clone()
        });
        assert!(snapshot_ids(&validation).is_disjoint(&snapshot_ids(&held_out)));
        let more = run(&SimulateOptions {
            users: 4,
            ..options.clone()
        });
        assert!(learn.iter().all(|(name, text)| more[name] == *text));
        assert!(test.check().is_ok());
        let bad = SimulateOptions {
            group: "../x".into(),
            ..options.clone()
        };
        assert!(bad.check().is_err());
        let long = SimulateOptions {
            group: "g".repeat(MAX_GROUP_LEN + 1),
            ..options
        };
        assert!(long.check().unwrap_err().to_string().contains("at most 32"));
    }
}
