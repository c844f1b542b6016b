//! `prime.dataset`: sanitized sessions → sliding-window training examples.
//!
//! Per session (ordered by `capturedAt`, then `sequence`), every run of
//! `window_size` consecutive snapshots followed by one more makes an example
//! (stride 1). The example holds the window's fixed-length feature vector
//! ([`feature_layout`] names each position) and its targets:
//!
//! - `command`: what the user did right after the window — the first command
//!   new in the next snapshot's `issuedCommands`, else a Bloom suggestion
//!   accepted after the window, else `none`;
//! - `seedLabel`: what the current Prime Brain rules say ([`super::labels`]);
//! - `nextMode`, and the `guidance` channel and intensity the doctrine asks for.
//!
//! The test split holds every session of the held-out users (a second
//! input directory: users never trained on) and the sessions of the first
//! input whose seeded hash of their file name falls under `test_fraction`
//! (a session is never on both sides). `augment` replays each train example
//! under every other mode with the labels the doctrine demands there. The
//! card records counts, class histograms, the layout, source hashes, params
//! and the dataset hash (BLAKE3 over both files' bytes).
//!
//! Sessions are turned into examples a few per thread at a time, in
//! parallel, and written in file order: memory holds those few sessions.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};

use rayon::prelude::*;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::labels::{allowed, critical_health, seed_label};
use super::schema::*;
use super::vocabulary::COMMANDS;
use fabric_core::digest::{Digest, KeyEncoder};
use fabric_core::memo::{FieldWriter, Fields, Memo};
use fabric_core::steps::BadOption;

/// Dataset parameters: the `with` table of `prime.dataset` and the flags
/// of `fabric dataset`, declared once (the card records them in camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields, rename_all(serialize = "camelCase"))]
pub struct DatasetOptions {
    /// Snapshots per window.
    #[arg(long, default_value_t = DatasetOptions::default().window_size)]
    pub window_size: usize,
    /// Share of the input's sessions in the test split, drawn by a seeded
    /// hash of each session's name [default: 0.25, or 0 when held-out users
    /// make the test split].
    #[arg(long)]
    pub test_fraction: Option<f64>,
    /// Seed of the split.
    #[arg(long, default_value_t = DatasetOptions::default().seed)]
    pub seed: u64,
    /// Replay train examples under every mode with doctrine labels.
    #[arg(long)]
    pub augment_mode: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            window_size: 10,
            test_fraction: None,
            seed: 57,
            augment_mode: false,
        }
    }
}

/// The share of the input's sessions in the test split when no held-out
/// users are given and `test_fraction` is unset.
pub const DEFAULT_TEST_FRACTION: f64 = 0.25;

impl DatasetOptions {
    /// Checks the values serde and clap cannot.
    pub fn check(&self) -> Result<(), BadOption> {
        if self.window_size == 0 {
            return Err(BadOption::new("window_size", "must be at least 1"));
        }
        if self.test_fraction.is_some_and(|f| !(0.0..1.0).contains(&f)) {
            return Err(BadOption::new("test_fraction", "must be at least 0 and below 1"));
        }
        Ok(())
    }

    /// The options with `test_fraction` settled: as given; else 0 when
    /// held-out users make the test split (their sessions alone), else
    /// [`DEFAULT_TEST_FRACTION`].
    fn settled(&self, held_out_users: bool) -> DatasetOptions {
        let fallback = if held_out_users { 0.0 } else { DEFAULT_TEST_FRACTION };
        DatasetOptions {
            test_fraction: Some(self.test_fraction.unwrap_or(fallback)),
            ..self.clone()
        }
    }
}

/// A command target: a type (or `none`) and an optional archetype.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandTarget {
    /// Command type or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Track archetype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Arguments (`size`, `amount`, `bpm`: what the vocabulary requires),
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<BTreeMap<String, serde_json::Value>>,
}

impl CommandTarget {
    /// No command.
    pub fn none() -> CommandTarget {
        CommandTarget::new(super::vocabulary::NONE, None)
    }

    /// A command of type `kind` on `target`, without arguments.
    pub fn new(kind: &str, target: Option<&str>) -> CommandTarget {
        CommandTarget {
            kind: kind.to_string(),
            target: target.map(str::to_string),
            args: None,
        }
    }

    fn of(command: &DawCommand) -> CommandTarget {
        CommandTarget {
            kind: command.kind.clone(),
            target: command.target.clone(),
            args: command.args.clone(),
        }
    }

    /// Whether it can be executed as it is: `none`, or a known command with
    /// the target and every argument it requires, all valid.
    pub fn executable(&self) -> bool {
        if self.kind == super::vocabulary::NONE {
            return self.target.is_none() && self.args.is_none();
        }
        let Some(spec) = super::vocabulary::command(&self.kind) else {
            return false;
        };
        let target_ok = match &self.target {
            Some(target) => spec.needs_target && super::vocabulary::is_archetype(target),
            None => !spec.needs_target,
        };
        let args: Option<serde_json::Map<String, serde_json::Value>> =
            self.args.as_ref().map(|a| a.clone().into_iter().collect());
        target_ok && super::vocabulary::complete_args(&self.kind, args.as_ref())
    }
}

/// The rule-based label of an example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedTarget {
    /// Ideal response text.
    pub response: String,
    /// Command JSON (type `none` when silent).
    pub command: CommandTarget,
    /// The ALS channel the rules speak through.
    pub channel: AlsChannel,
    /// How strongly.
    pub intensity: Intensity,
}

/// Guidance target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuidanceTarget {
    /// ALS channel.
    pub channel: AlsChannel,
    /// Intensity.
    pub intensity: Intensity,
}

/// What the Flow impact simulation needs to know about the moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Moment {
    /// Transport playing.
    pub playing: bool,
    /// ALS energy, 0–1.
    pub energy: f64,
    /// Seconds since the session started.
    pub seconds: f64,
}

/// ALS energy at or above which a playing user is in flow.
pub const FLOW_ENERGY: f64 = 0.6;

impl Moment {
    /// The user is in flow: playing, with high energy. The doctrine speaks
    /// only in whispers then.
    pub fn in_flow(&self) -> bool {
        self.playing && self.energy >= FLOW_ENERGY
    }
}

/// One training example.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    /// The sanitized session file the window comes from (its name, a hash
    /// of its content without identifiers: not a pseudonym, so examples do
    /// not depend on the pseudonym key).
    pub session: String,
    /// Position of the window's last snapshot in the session.
    pub window_end: usize,
    /// Mode at the end of the window.
    pub mode: Mode,
    /// A critical health flag is up.
    pub critical: bool,
    /// Feature vector ([`feature_layout`]).
    pub features: Vec<f32>,
    /// Ground truth: what the user did next.
    pub command: CommandTarget,
    /// What the current rules say.
    pub seed_label: SeedTarget,
    /// Mode of the next snapshot.
    pub next_mode: Mode,
    /// Guidance channel and intensity.
    pub guidance: GuidanceTarget,
    /// Transport and energy at the window's end.
    pub moment: Moment,
    /// Made by `--augment-mode`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub augmented: bool,
}

/// The dataset card.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatasetCard {
    /// Snapshot schema version.
    pub schema: String,
    /// BLAKE3 over the train and test files.
    pub dataset_hash: String,
    /// Parameters used.
    pub params: DatasetOptions,
    /// Examples per split.
    pub examples: BTreeMap<String, usize>,
    /// Sessions per split.
    pub sessions: BTreeMap<String, usize>,
    /// Class histograms: target → class → count (train and test together).
    pub classes: BTreeMap<String, BTreeMap<String, usize>>,
    /// Name of each feature position.
    pub feature_layout: Vec<String>,
    /// The sanitized session files read; each name is the BLAKE3 of the
    /// file's content without identifiers, so it doubles as its hash. Those
    /// of held-out users (all in the test split) are named `held-out/NAME`.
    pub sources: Vec<String>,
    /// File names of the splits.
    pub files: BTreeMap<String, String>,
}

/// Where the dataset goes.
pub struct DatasetPaths {
    /// Train examples.
    pub train: PathBuf,
    /// Test examples.
    pub test: PathBuf,
    /// The card.
    pub card: PathBuf,
    /// Names of the train and test files recorded in the card.
    pub names: (String, String),
    /// The instruction-tuning set of the train split, if wanted.
    pub sft: Option<InstructionPaths>,
}

/// Where the instruction-tuning set and its card ([`super::sft::InstructionCard`]) go.
pub struct InstructionPaths {
    /// The train split's conversations: the tuning data (JSONL).
    pub data: PathBuf,
    /// The test split's conversations, one per test example in its order:
    /// the prompts a tuned model is scored on.
    pub test: PathBuf,
    /// The card.
    pub card: PathBuf,
}

impl InstructionPaths {
    /// The set at `data`, the test conversations beside it as
    /// `STEM-test.jsonl` and the card as `STEM.card.json`.
    pub fn beside(data: &Path) -> InstructionPaths {
        let stem = data
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        InstructionPaths {
            test: data.with_file_name(format!("{stem}-test.jsonl")),
            card: data.with_file_name(format!("{stem}.card.json")),
            data: data.to_path_buf(),
        }
    }
}

impl DatasetPaths {
    /// Where the instruction-tuning export of the split at `train` goes
    /// unless told otherwise: `NAME.sft.jsonl` beside it.
    pub fn sft_default(&self) -> PathBuf {
        let stem = self
            .train
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.train.with_file_name(format!("{stem}.sft.jsonl"))
    }

    /// The conventional paths for an output file `F`: the test split beside
    /// it as `F-stem-test.ext`, the card as `F-stem.card.json`.
    pub fn beside(output: &Path) -> DatasetPaths {
        let stem = output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = output
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or("jsonl".into());
        let test = output.with_file_name(format!("{stem}-test.{ext}"));
        DatasetPaths {
            names: (file_name(output), file_name(&test)),
            sft: None,
            card: output.with_file_name(format!("{stem}.card.json")),
            train: output.to_path_buf(),
            test,
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Names of the feature positions, in order.
pub fn feature_layout() -> Vec<String> {
    let mut names = Vec::new();
    names.extend(Mode::ALL.iter().map(|m| format!("mode.{}", m.name())));
    names.extend(AlsChannel::ALL.iter().map(|c| format!("als.{}.last", c.name())));
    names.extend(AlsChannel::ALL.iter().map(|c| format!("als.{}.mean", c.name())));
    names.extend(
        [
            "health.cpuLoad.last",
            "health.cpuLoad.max",
            "health.dropouts.last",
            "health.dropouts.window",
            "health.latency",
            "health.bufferSize",
            "harmonic.consonance",
            "harmonic.tension",
            "harmonic.velocityEnergy",
            "transport.playing",
            "transport.cycle",
            "transport.tempo",
        ]
        .map(String::from),
    );
    for category in FlagCategory::ALL {
        for severity in Severity::ALL {
            names.push(flag_feature(category, severity));
        }
    }
    names.extend(COMMANDS.iter().map(|c| format!("recent.{}", c.kind)));
    names.extend(COMMANDS.iter().map(|c| format!("history.{}", c.kind)));
    names.extend(COMMANDS.iter().map(|c| new_command_feature(c.kind)));
    names.extend(BloomOutcome::ALL.iter().map(|o| format!("bloom.{o:?}").to_lowercase()));
    names
}

/// Reads a feature vector by the names of [`feature_layout`].
pub struct FeatureNames(Vec<String>);

impl Default for FeatureNames {
    fn default() -> Self {
        FeatureNames(feature_layout())
    }
}

impl FeatureNames {
    /// The position of the feature `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|n| n == name)
    }

    /// The value of the feature `name` in `features` (0 when there is none).
    pub fn get(&self, features: &[f32], name: &str) -> f32 {
        self.index(name).and_then(|i| features.get(i).copied()).unwrap_or(0.0)
    }
}

/// The feature counting the window's last flags of `category` at `severity`.
pub fn flag_feature(category: FlagCategory, severity: Severity) -> String {
    format!("flags.{category:?}.{severity:?}").to_lowercase()
}

/// The feature that is 1 when the user issued `kind` at the window's last step.
pub fn new_command_feature(kind: &str) -> String {
    format!("new.{kind}")
}

/// The feature vector of a window (the last snapshot plus window aggregates).
pub fn features(window: &[Snapshot]) -> Vec<f32> {
    let last = window.last().expect("windows are non-empty");
    let mut v: Vec<f64> = Vec::with_capacity(64);
    v.extend(Mode::ALL.iter().map(|m| f64::from(u8::from(*m == last.mode))));
    let als = |s: &Snapshot, c: AlsChannel| {
        s.als_channels
            .iter()
            .find(|r| r.channel == c)
            .map_or(0.0, |r| r.normalized)
    };
    v.extend(AlsChannel::ALL.iter().map(|c| als(last, *c)));
    v.extend(
        AlsChannel::ALL
            .iter()
            .map(|c| window.iter().map(|s| als(s, *c)).sum::<f64>() / window.len() as f64),
    );
    let m = &last.audio_metrics;
    v.push(m.cpu_load);
    v.push(window.iter().map(|s| s.audio_metrics.cpu_load).fold(0.0, f64::max));
    v.push(f64::from(u8::from(m.dropouts > 0)));
    v.push((1.0 + window.iter().map(|s| s.audio_metrics.dropouts as f64).sum::<f64>()).ln() / 3.0);
    v.push((m.latency_ms / 50.0).min(2.0));
    v.push((f64::from(m.buffer_size).log2() - 5.0) / 8.0);
    let h = &last.harmonic_state;
    v.extend([h.consonance, h.tension, h.velocity_energy]);
    let t = &last.transport;
    v.extend([
        f64::from(u8::from(t.is_playing)),
        f64::from(u8::from(t.cycle.enabled)),
        t.tempo / 200.0,
    ]);
    for category in FlagCategory::ALL {
        for severity in Severity::ALL {
            let count = last
                .ai_analysis_flags
                .iter()
                .filter(|f| f.category == category && f.severity == severity)
                .count();
            v.push((count as f64).min(3.0) / 3.0);
        }
    }
    let actions = last
        .user_memory_summary
        .as_ref()
        .map(|m| m.recent_actions.as_slice())
        .unwrap_or(&[]);
    for command in COMMANDS {
        let count = actions.iter().filter(|a| *a == command.kind).count();
        v.push(count as f64 / actions.len().max(1) as f64);
    }
    let history = last.issued_commands.as_deref().unwrap_or(&[]);
    for command in COMMANDS {
        let count = history.iter().filter(|c| c.kind == command.kind).count();
        v.push(count as f64 / history.len().max(1) as f64);
    }
    // What the user did at the last step: the commands new in its history.
    let fresh = match window.len().checked_sub(2) {
        Some(before) => new_items(window[before].issued_commands.as_deref().unwrap_or(&[]), history),
        None => &[],
    };
    for command in COMMANDS {
        v.push(f64::from(u8::from(fresh.iter().any(|c| c.kind == command.kind))));
    }
    for outcome in BloomOutcome::ALL {
        let count = last.bloom_trace.iter().filter(|b| b.outcome == outcome).count();
        v.push(count as f64 / last.bloom_trace.len().max(1) as f64);
    }
    v.into_iter()
        .map(|x| ((x * 10_000.0).round() / 10_000.0) as f32)
        .collect()
}

/// Items of `next` that were not in `current` (the lists keep the most
/// recent ones, so `next` is `current` minus some oldest ones plus new ones).
fn new_items<'a, T: PartialEq>(current: &[T], next: &'a [T]) -> &'a [T] {
    for dropped in 0..=current.len() {
        let kept = &current[dropped..];
        if next.len() >= kept.len() && next[..kept.len()] == *kept {
            return &next[kept.len()..];
        }
    }
    next
}

/// The ground-truth command after a window ending at `last`, seen in `next`.
fn ground_truth(last: &Snapshot, next: &Snapshot) -> CommandTarget {
    let empty = Vec::new();
    let fresh = new_items(
        last.issued_commands.as_ref().unwrap_or(&empty),
        next.issued_commands.as_ref().unwrap_or(&empty),
    );
    if let Some(command) = fresh.first() {
        return CommandTarget::of(command);
    }
    // Bloom events since the last snapshot: by time when both times are
    // known, else (the times are optional) the events `next` adds to the trace.
    let since = last.captured();
    let timed = since.is_some() && next.bloom_trace.iter().all(|b| b.time().is_some());
    let recent: &[BloomEvent] = if timed {
        &next.bloom_trace
    } else {
        new_items(&last.bloom_trace, &next.bloom_trace)
    };
    recent
        .iter()
        .filter(|b| b.outcome == BloomOutcome::Accepted)
        .filter(|b| !timed || b.time() > since)
        .find(|b| super::vocabulary::command(&b.action).is_some())
        .map_or_else(CommandTarget::none, |b| CommandTarget::new(&b.action, None))
}

fn example(session: &str, window_end: usize, window: &[Snapshot], next: &Snapshot) -> Example {
    let last = window.last().expect("windows are non-empty");
    let label = seed_label(last);
    let command = ground_truth(last, next);
    let critical = critical_health(last);
    let moment = Moment {
        playing: last.transport.is_playing,
        energy: last
            .als_channels
            .iter()
            .find(|r| r.channel == AlsChannel::Energy)
            .map_or(0.0, |r| r.normalized),
        seconds: 0.0,
    };
    let intensity = guidance_intensity(last.mode, critical, moment.in_flow(), &command);
    let start = window[0].captured();
    let end = last.captured();
    let seconds = match (start, end) {
        (Some(a), Some(b)) => (b - a).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    Example {
        session: session.to_string(),
        window_end,
        mode: last.mode,
        critical,
        features: features(window),
        seed_label: SeedTarget {
            response: label.response,
            command: label
                .command
                .as_ref()
                .map_or_else(CommandTarget::none, CommandTarget::of),
            channel: label.channel,
            intensity: label.intensity,
        },
        guidance: GuidanceTarget {
            // The channel of what the user did next; the rules' when they did nothing.
            channel: super::vocabulary::command(&command.kind).map_or(label.channel, |c| c.channel),
            intensity,
        },
        command,
        next_mode: next.mode,
        moment: Moment { seconds, ..moment },
        augmented: false,
    }
}

/// The intensity the doctrine asks for: a call only for critical health,
/// whispers in passive mode, in flow, and with nothing to suggest.
pub fn guidance_intensity(mode: Mode, critical: bool, in_flow: bool, command: &CommandTarget) -> Intensity {
    if critical {
        Intensity::Call
    } else if mode == Mode::Passive || in_flow || command.kind == super::vocabulary::NONE {
        Intensity::Whisper
    } else {
        Intensity::Nudge
    }
}

/// The same context under another mode, labelled as the doctrine demands.
fn replay(example: &Example, mode: Mode) -> Example {
    let mut copy = example.clone();
    copy.mode = mode;
    for (slot, m) in copy.features.iter_mut().zip(Mode::ALL) {
        *slot = f32::from(u8::from(m == mode));
    }
    let permitted = |c: &CommandTarget| c.kind == super::vocabulary::NONE || allowed(mode, &c.kind, example.critical);
    if !permitted(&copy.command) {
        copy.command = CommandTarget::none();
    }
    if !permitted(&copy.seed_label.command) {
        copy.seed_label.command = CommandTarget::none();
    }
    copy.guidance.intensity = guidance_intensity(mode, example.critical, example.moment.in_flow(), &copy.command);
    copy.augmented = true;
    copy
}

/// A session's draw in [0, 1] for the split named `purpose`: a hash of
/// `seed` and the session's name (its file name: a hash of its content
/// without identifiers, not a pseudonym), so a split by session is the same
/// whatever the run, the order or the pseudonym key.
pub fn session_draw(purpose: &str, seed: u64, session: &str) -> f64 {
    let mut key = KeyEncoder::new(purpose);
    key.bytes(b's', &seed.to_le_bytes()).text(b'i', session);
    let bits = u64::from_le_bytes(key.finish().0[..8].try_into().expect("8 bytes"));
    bits as f64 / u64::MAX as f64
}

/// True when the session belongs to the test split: every session of a
/// held-out user, and the share `test_fraction` of the others.
fn is_test(session: &str, held_out_user: bool, options: &DatasetOptions) -> bool {
    let fraction = options.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
    held_out_user || session_draw("fabric-split-v1", options.seed, session) < fraction
}

/// The name a session file goes by in the card and the memo: its file name,
/// under `held-out/` for a held-out user's session.
fn source_name(file: &Path, held_out_user: bool) -> String {
    let name = file_name(file);
    if held_out_user {
        format!("held-out/{name}")
    } else {
        name
    }
}

/// The sanitized `*.jsonl` session files in `dir`, sorted.
fn session_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "no sanitized *.jsonl session files in {}",
        dir.display()
    );
    Ok(files)
}

/// Counts for the card.
#[derive(Default)]
struct Tally {
    examples: BTreeMap<String, usize>,
    sessions: BTreeMap<String, usize>,
    classes: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (name, n) in other.examples {
            *self.examples.entry(name).or_insert(0) += n;
        }
        for (name, n) in other.sessions {
            *self.sessions.entry(name).or_insert(0) += n;
        }
        for (head, counts) in other.classes {
            let mine = self.classes.entry(head).or_default();
            for (class, n) in counts {
                *mine.entry(class).or_insert(0) += n;
            }
        }
    }

    fn count(&mut self, head: &str, class: &str) {
        *self
            .classes
            .entry(head.into())
            .or_default()
            .entry(class.into())
            .or_insert(0) += 1;
    }
}

/// What one session file contributes: its hash, counts and output lines.
struct SessionPart {
    source: Digest,
    tally: Tally,
    train: String,
    test: String,
    sft_train: String,
    sft_test: String,
}

impl SessionPart {
    /// The part as a memo result.
    fn encode(&self, with_sft: bool) -> Vec<u8> {
        let mut fields = FieldWriter::default();
        fields.number(u64::from(with_sft)).text(&self.source.to_string());
        let counts = |fields: &mut FieldWriter, counts: &BTreeMap<String, usize>| {
            fields.number(counts.len() as u64);
            for (name, n) in counts {
                fields.text(name).number(*n as u64);
            }
        };
        counts(&mut fields, &self.tally.examples);
        counts(&mut fields, &self.tally.sessions);
        fields.number(self.tally.classes.len() as u64);
        for (head, classes) in &self.tally.classes {
            fields.text(head);
            counts(&mut fields, classes);
        }
        fields
            .text(&self.train)
            .text(&self.test)
            .text(&self.sft_train)
            .text(&self.sft_test);
        fields.finish()
    }

    /// A part back from a memo result made with the same `with_sft`.
    fn decode(bytes: &[u8], with_sft: bool) -> Option<SessionPart> {
        let mut fields = Fields::new(bytes);
        if fields.number()? != u64::from(with_sft) {
            return None;
        }
        let source = fields.text()?.parse().ok()?;
        fn counts(fields: &mut Fields) -> Option<BTreeMap<String, usize>> {
            (0..fields.number()?)
                .map(|_| Some((fields.text()?.to_string(), fields.number()? as usize)))
                .collect()
        }
        let examples = counts(&mut fields)?;
        let sessions = counts(&mut fields)?;
        let classes = (0..fields.number()?)
            .map(|_| Some((fields.text()?.to_string(), counts(&mut fields)?)))
            .collect::<Option<_>>()?;
        let part = SessionPart {
            source,
            tally: Tally {
                examples,
                sessions,
                classes,
            },
            train: fields.text()?.to_string(),
            test: fields.text()?.to_string(),
            sft_train: fields.text()?.to_string(),
            sft_test: fields.text()?.to_string(),
        };
        fields.is_done().then_some(part)
    }
}

/// Turns one sanitized session file into examples.
fn session_part(
    file: &Path,
    held_out_user: bool,
    options: &DatasetOptions,
    with_sft: bool,
) -> anyhow::Result<SessionPart> {
    let bytes = std::fs::read(file)?;
    let mut part = SessionPart {
        source: Digest::of(&bytes),
        tally: Tally::default(),
        train: String::new(),
        test: String::new(),
        sft_train: String::new(),
        sft_test: String::new(),
    };
    let text = String::from_utf8(bytes)?;
    let mut snapshots: Vec<Snapshot> =
        fabric_core::jsonl::parse(&text, file, "not a sanitized snapshot", Some("run sanitize first"))?;
    snapshots.sort_by_key(Snapshot::order_key);
    if snapshots.is_empty() {
        return Ok(part);
    }
    let session = file_name(file);
    let session = session.strip_suffix(".jsonl").unwrap_or(&session);
    let held_out = is_test(session, held_out_user, options);
    let split = if held_out { "test" } else { "train" };
    part.tally.sessions.insert(split.into(), 1);
    if snapshots.len() <= options.window_size {
        return Ok(part);
    }
    for start in 0..snapshots.len() - options.window_size {
        let window = &snapshots[start..start + options.window_size];
        let next = &snapshots[start + options.window_size];
        let example = example(session, start + options.window_size - 1, window, next);
        let mut batch = vec![example.clone()];
        if options.augment_mode && !held_out {
            batch.extend(
                Mode::ALL
                    .iter()
                    .filter(|m| **m != example.mode)
                    .map(|m| replay(&example, *m)),
            );
        }
        for item in batch {
            part.tally.count("command", &item.command.kind);
            part.tally.count("nextMode", item.next_mode.name());
            part.tally.count("guidanceIntensity", item.guidance.intensity.name());
            if item.augmented {
                *part.tally.examples.entry("augmented".into()).or_insert(0) += 1;
            }
            *part.tally.examples.entry(split.into()).or_insert(0) += 1;
            let lines = if held_out { &mut part.test } else { &mut part.train };
            lines.push_str(&serde_json::to_string(&item)?);
            lines.push('\n');
            if with_sft {
                let sft = if held_out {
                    &mut part.sft_test
                } else {
                    &mut part.sft_train
                };
                sft.push_str(&serde_json::to_string(&super::sft::conversation(window, &item))?);
                sft.push('\n');
            }
        }
    }
    Ok(part)
}

/// Builds the dataset from the per-session JSONL files under `input`, and
/// those under `held_out_users` (sessions of users never seen in training:
/// all go to the test split). With a `memo`, session files unchanged since
/// the last run reuse their kept examples; the output is the same byte for
/// byte.
pub fn build(
    input: &Path,
    held_out_users: Option<&Path>,
    options: &DatasetOptions,
    paths: &DatasetPaths,
    memo: Option<&Memo>,
) -> anyhow::Result<DatasetCard> {
    anyhow::ensure!(options.window_size >= 1, "window size must be at least 1");
    let options = &options.settled(held_out_users.is_some());
    let mut files: Vec<(PathBuf, bool)> = session_files(input)?.into_iter().map(|f| (f, false)).collect();
    if let Some(dir) = held_out_users {
        anyhow::ensure!(
            !matches!(
                (std::fs::canonicalize(dir), std::fs::canonicalize(input)),
                (Ok(a), Ok(b)) if a == b
            ),
            "the held-out users' directory {} is the input directory: give the sanitized sessions of other users (e.g. `fabric simulate --group test`, then `fabric sanitize`)",
            dir.display()
        );
        let names: std::collections::HashSet<String> = files.iter().map(|(f, _)| file_name(f)).collect();
        let held_out = session_files(dir)?;
        if let Some(both) = held_out.iter().find(|f| names.contains(&file_name(f))) {
            anyhow::bail!(
                "session {} is in both {} and {} (the held-out users): a session belongs to one side of the split; remove it from one of them",
                file_name(both),
                input.display(),
                dir.display()
            );
        }
        files.extend(held_out.into_iter().map(|f| (f, true)));
    }
    // The memo reads its entries back in path order.
    files.sort_by_cached_key(|(file, held_out_user)| PathBuf::from(source_name(file, *held_out_user)));

    let mut train = BufWriter::new(std::fs::File::create(&paths.train)?);
    let mut sft = match &paths.sft {
        Some(sft) => Some((
            BufWriter::new(std::fs::File::create(&sft.data)?),
            BufWriter::new(std::fs::File::create(&sft.test)?),
        )),
        None => None,
    };
    let mut test = BufWriter::new(std::fs::File::create(&paths.test)?);
    let mut tally = Tally {
        examples: BTreeMap::from([("train".into(), 0), ("test".into(), 0), ("augmented".into(), 0)]),
        sessions: BTreeMap::from([("train".into(), 0), ("test".into(), 0)]),
        classes: BTreeMap::new(),
    };
    let mut sources = Vec::new();
    // A few sessions per thread at a time, merged in file order: parallel,
    // deterministic, and memory bounded by the group, not the input.
    let with_sft = paths.sft.is_some();
    let mut kept = memo.map(Memo::reader);
    let mut remember = memo.map(Memo::writer).transpose()?;
    let group = rayon::current_num_threads() * 2;
    for files in files.chunks(group) {
        let keys = files
            .par_iter()
            .map(|(file, _)| Ok(memo.map(|memo| memo.content_hash(file)).transpose()?))
            .collect::<anyhow::Result<Vec<Option<Digest>>>>()?;
        let known: Vec<Option<SessionPart>> = files
            .iter()
            .zip(&keys)
            .map(|((file, held_out_user), key)| {
                let (kept, key) = (kept.as_mut()?, key.as_ref()?);
                SessionPart::decode(&kept.take(&source_name(file, *held_out_user), key)?, with_sft)
            })
            .collect();
        let parts = files
            .par_iter()
            .zip(known)
            .map(|((file, held_out_user), known)| match known {
                Some(part) => Ok(part),
                None => session_part(file, *held_out_user, options, with_sft),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for ((file, held_out_user), part) in files.iter().zip(parts) {
            let name = source_name(file, *held_out_user);
            // Under the hash of the bytes the part was made from (a file
            // edited during the run is kept under its new content).
            if let Some(memo) = remember.as_mut() {
                memo.put(&name, &part.source, &part.encode(with_sft))?;
            }
            sources.push(name);
            tally.add(part.tally);
            train.write_all(part.train.as_bytes())?;
            test.write_all(part.test.as_bytes())?;
            if let Some((sft_train, sft_test)) = sft.as_mut() {
                sft_train.write_all(part.sft_train.as_bytes())?;
                sft_test.write_all(part.sft_test.as_bytes())?;
            }
        }
    }
    train.flush()?;
    test.flush()?;
    if let Some((mut sft_train, mut sft_test)) = sft {
        sft_train.flush()?;
        sft_test.flush()?;
    }
    drop((train, test));
    if let Some(sft) = &paths.sft {
        let card = super::sft::audit(&sft.data, &sft.test)?;
        std::fs::write(&sft.card, serde_json::to_string_pretty(&card)? + "\n")?;
    }
    let mut key = KeyEncoder::new("fabric-dataset-v1");
    key.file(b't', &paths.train)?.file(b'T', &paths.test)?;
    let card = DatasetCard {
        schema: SCHEMA_VERSION.into(),
        dataset_hash: key.finish().to_string(),
        params: options.clone(),
        examples: tally.examples,
        sessions: tally.sessions,
        classes: tally.classes,
        feature_layout: feature_layout(),
        sources,
        files: {
            let mut files = BTreeMap::from([
                ("train".to_string(), paths.names.0.clone()),
                ("test".to_string(), paths.names.1.clone()),
            ]);
            if let Some(sft) = &paths.sft {
                files.insert("sft".into(), file_name(&sft.data));
            }
            files
        },
    };
    std::fs::write(&paths.card, serde_json::to_string_pretty(&card)? + "\n")?;
    if let Some(memo) = remember {
        memo.commit()?;
    }
    Ok(card)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(bloom: serde_json::Value, captured_at: Option<&str>) -> Snapshot {
        let mut value = serde_json::json!({
            "snapshotId": "00000000-0000-4000-8000-000000000001", "sessionId": "s", "mode": "active",
            "transport": {"isPlaying": true, "tempo": 120.0, "playheadBeats": 0.0,
                          "cycle": {"enabled": false, "startBeats": 0.0, "endBeats": 4.0}},
            "alsChannels": [], "audioMetrics": {"latencyMs": 5.0, "cpuLoad": 0.5, "dropouts": 0, "bufferSize": 256},
            "harmonicState": {"key": "C", "scale": "major", "consonance": 0.5, "tension": 0.5, "velocityEnergy": 0.5},
            "aiAnalysisFlags": [], "bloomTrace": bloom, "conversationTurns": []
        });
        if let Some(at) = captured_at {
            value["capturedAt"] = at.into();
        }
        serde_json::from_value(value).unwrap()
    }

    /// The label is the Bloom suggestion accepted since the last snapshot,
    /// whether or not the optional times are there.
    #[test]
    fn an_accepted_suggestion_is_new_with_or_without_times() {
        let old = serde_json::json!({"action": "mix.eqCut", "source": "bloom", "outcome": "accepted", "at": "2026-11-24T10:00:00Z"});
        let new = serde_json::json!({"action": "track.freeze", "source": "bloom", "outcome": "accepted", "at": "2026-11-24T10:00:05Z"});
        let untimed = |mut event: serde_json::Value| {
            event.as_object_mut().unwrap().remove("at");
            event
        };
        for (last, next) in [
            // Times known.
            (
                snapshot(serde_json::json!([old]), Some("2026-11-24T10:00:02Z")),
                snapshot(serde_json::json!([old, new]), None),
            ),
            // The snapshot's time missing, the events' times there.
            (
                snapshot(serde_json::json!([old]), None),
                snapshot(serde_json::json!([old, new]), None),
            ),
            // No times at all.
            (
                snapshot(serde_json::json!([untimed(old.clone())]), None),
                snapshot(serde_json::json!([untimed(old.clone()), untimed(new.clone())]), None),
            ),
        ] {
            assert_eq!(ground_truth(&last, &next).kind, "track.freeze");
            assert_eq!(
                ground_truth(&next, &next).kind,
                super::super::vocabulary::NONE,
                "nothing new"
            );
        }
    }
}
