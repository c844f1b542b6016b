//! `prime.sanitize`: raw snapshots in, clean per-session JSONL out.
//!
//! 1. Every `*.json` (one record) and `*.jsonl` (one per line) file under the
//!    input directory is read in name order, in chunks parsed in parallel.
//! 2. Each record is parsed into the v1 types (unknown fields fall away),
//!    validated, normalized (clamped, rounded, arrays cut to their limits
//!    keeping the most recent, command targets mapped to archetypes, numbers
//!    bounded), its free text rebuilt from the closed vocabulary
//!    ([`super::redact`]) and its identifiers replaced by keyed pseudonyms
//!    ([`super::pseudonym`]). Invalid records, and records whose consent
//!    flag is false, are dropped with a reason.
//! 3. Records are deduplicated by `snapshotId` (the first in file and line
//!    order wins) and kept per session: in memory while they fit a fixed
//!    budget, then appended to a partial file per session, so memory stays
//!    bounded whatever the input size.
//! 4. Each session file is sorted by `capturedAt`, then `sequence`, then
//!    content, and named by the BLAKE3 of its content without identifiers,
//!    so file names and order do not depend on the pseudonym key.
//! 5. The independent verifier ([`super::privacy`]) re-reads every written
//!    file; any record it cannot vouch for fails the step and the output is
//!    removed: nothing unverified is ever published.
//!
//! The same input and key give byte-identical output, whatever the thread count.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::lexicon::Placeholder;
use super::privacy::{self, NUMBER_LIMIT};
use super::pseudonym::PseudonymKey;
use super::redact;
use super::schema::{self, *};
use super::vocabulary;
use fabric_core::digest::Digest;
use fabric_core::hash::Hasher;
use fabric_core::memo::{FieldWriter, Fields, Memo, MemoWriter};

/// Records parsed together in parallel.
const CHUNK: usize = 4096;
/// Cleaned lines held in memory before they go to partial files.
const MEMORY_BUDGET: usize = 48 << 20;

/// What sanitize did, written to `reports/sanitize.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SanitizeReport {
    /// Schema version applied.
    pub schema: String,
    /// Input files read.
    pub files: usize,
    /// Records read.
    pub records_in: usize,
    /// Records written.
    pub records_out: usize,
    /// Sessions written (one file each).
    pub sessions: usize,
    /// Dropped records by reason.
    pub dropped: BTreeMap<String, usize>,
    /// Placeholders written, by kind (`person`, `contact`, …, `word`).
    pub redactions: BTreeMap<String, usize>,
    /// How much free text came through unchanged.
    pub free_text: FreeText,
    /// The pseudonym key's one-way id (never the key).
    pub pseudonym_key: String,
    /// Normalizations by kind.
    pub normalized: BTreeMap<String, usize>,
}

/// Words and numbers of free text, and how many came through unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FreeText {
    /// Words and numbers read.
    pub tokens: usize,
    /// Of those, kept as written.
    pub kept: usize,
    /// `kept / tokens` (1 when there was no free text).
    pub kept_share: f64,
}

/// Why sanitize failed.
#[derive(Debug, thiserror::Error)]
pub enum SanitizeError {
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The verifier could not vouch for a written record; nothing was published.
    #[error(
        "the privacy verifier refused sanitize's output, so nothing was written: {0}. Report this input to the Fabric maintainers"
    )]
    Unverified(#[from] privacy::VerifyError),
    /// The input directory holds no snapshot files.
    #[error("no *.json or *.jsonl files under {0}")]
    NoInput(PathBuf),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SanitizeError + '_ {
    move |source| SanitizeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One record after cleaning.
struct Clean {
    snapshot: Snapshot,
    redactions: BTreeMap<Placeholder, usize>,
    normalized: BTreeMap<&'static str, usize>,
    /// Free-text words and numbers read, and kept unchanged.
    tokens: (usize, usize),
}

/// A count by name (a kind of personal data, a normalization).
type Counts = Vec<(Cow<'static, str>, usize)>;

/// What the sequential collector needs of a cleaned record.
struct Cleaned {
    id: String,
    session: String,
    /// The output line behind a fixed-width sort key (capture time, sequence,
    /// id), so a session file sorts as plain text.
    keyed_line: String,
    redactions: Counts,
    normalized: Counts,
    /// Free-text words and numbers read, and kept unchanged.
    tokens: (usize, usize),
}

/// One record's result: cleaned, or the reason it is dropped.
type Outcome = Result<Cleaned, String>;

/// Outcomes of one input file (by index), with the memo result they were
/// decoded from when the old memo kept them.
type FileOutcomes = (usize, Vec<Outcome>, Option<Vec<u8>>);

/// Appends a file's outcomes to its memo result.
fn encode(outcomes: &[Outcome], fields: &mut FieldWriter) {
    for outcome in outcomes {
        match outcome {
            Err(reason) => {
                fields.number(0).text(reason);
            }
            Ok(record) => {
                fields
                    .number(1)
                    .text(&record.id)
                    .text(&record.session)
                    .text(&record.keyed_line)
                    .number(record.tokens.0 as u64)
                    .number(record.tokens.1 as u64);
                for counts in [&record.redactions, &record.normalized] {
                    fields.number(counts.len() as u64);
                    for (name, count) in counts {
                        fields.text(name).number(*count as u64);
                    }
                }
            }
        }
    }
}

/// Reads a file's outcomes back from a memo result.
fn decode(bytes: &[u8]) -> Option<Vec<Outcome>> {
    let mut fields = Fields::new(bytes);
    let mut outcomes = Vec::new();
    while !fields.is_done() {
        let outcome = match fields.number()? {
            0 => Err(fields.text()?.to_string()),
            1 => {
                let (id, session, keyed_line) = (fields.text()?, fields.text()?, fields.text()?);
                let tokens = (fields.number()? as usize, fields.number()? as usize);
                let mut counts = || -> Option<Counts> {
                    (0..fields.number()?)
                        .map(|_| Some((Cow::Owned(fields.text()?.to_string()), fields.number()? as usize)))
                        .collect()
                };
                let (redactions, normalized) = (counts()?, counts()?);
                Ok(Cleaned {
                    id: id.to_string(),
                    session: session.to_string(),
                    keyed_line: keyed_line.to_string(),
                    redactions,
                    normalized,
                    tokens,
                })
            }
            _ => return None,
        };
        outcomes.push(outcome);
    }
    Some(outcomes)
}

impl From<Clean> for Cleaned {
    fn from(clean: Clean) -> Cleaned {
        let s = clean.snapshot;
        let (time, sequence) = s.order_key();
        // Shift to unsigned so the hex digits sort in time order.
        let time = (time as i128 - i64::MIN as i128) as u64;
        let line = serde_json::to_string(&s).expect("snapshots serialize");
        Cleaned {
            keyed_line: format!("{time:016x}{sequence:016x}\t{line}"),
            id: s.snapshot_id,
            session: s.session_id,
            redactions: clean
                .redactions
                .into_iter()
                .map(|(kind, n)| (Cow::Borrowed(kind.name()), n))
                .collect(),
            normalized: clean
                .normalized
                .into_iter()
                .map(|(name, n)| (Cow::Borrowed(name), n))
                .collect(),
            tokens: clean.tokens,
        }
    }
}

/// The sequential half: deduplicates in input order, counts, and keeps each
/// record under its session: in memory up to [`MEMORY_BUDGET`] bytes, then in
/// a partial file per session.
struct Collector<'a> {
    partial: PathBuf,
    report: SanitizeReport,
    redactions: BTreeMap<Cow<'static, str>, usize>,
    normalized: BTreeMap<Cow<'static, str>, usize>,
    seen: HashSet<String>,
    /// Keyed lines not yet on disk, by session.
    held: HashMap<String, Vec<String>>,
    held_bytes: usize,
    /// Sessions with a partial file.
    spilled: HashSet<String>,
    sessions: HashSet<String>,
    /// This run's memo, with the hasher that checks that computed outcomes
    /// are those of the content their memo key names.
    memo: Option<(MemoWriter, &'a Hasher<'a>)>,
    /// The outcomes of the file being computed (`None` once they outgrew
    /// [`MEMO_FILE_LIMIT`]).
    memo_file: Option<(usize, Option<FieldWriter>)>,
}

impl<'a> Collector<'a> {
    fn new(partial: PathBuf, files: usize, memo: Option<(MemoWriter, &'a Hasher<'a>)>) -> Collector<'a> {
        Collector {
            memo,
            memo_file: None,
            partial,
            report: SanitizeReport {
                schema: SCHEMA_VERSION.into(),
                files,
                ..SanitizeReport::default()
            },
            redactions: BTreeMap::new(),
            normalized: BTreeMap::new(),
            seen: HashSet::new(),
            held: HashMap::new(),
            held_bytes: 0,
            spilled: HashSet::new(),
            sessions: HashSet::new(),
        }
    }

    /// Takes outcomes in input order, by input file index (with the memo
    /// result they came from, when the old memo kept them).
    fn take(&mut self, outcomes: Vec<FileOutcomes>, inputs: &[Input]) -> Result<(), SanitizeError> {
        for (file, outcomes, kept) in outcomes {
            if self.memo.is_some() && inputs[file].memo_key.is_some() {
                match kept {
                    Some(result) => self.keep(file, &result, inputs)?,
                    None => self.remember(file, &outcomes, inputs)?,
                }
            }
            self.take_file(outcomes)?;
        }
        Ok(())
    }

    /// Carries the old memo's result for input `file` into the new memo as
    /// it was read.
    fn keep(&mut self, file: usize, result: &[u8], inputs: &[Input]) -> Result<(), SanitizeError> {
        self.flush_memo(inputs)?;
        if let (Some((memo, _)), Some((path, hash))) = (self.memo.as_mut(), &inputs[file].memo_key) {
            memo.put(path, hash, result).map_err(io_error(&inputs[file].path))?;
        }
        Ok(())
    }

    /// Adds outcomes computed for input `file` to the memo (a file's
    /// outcomes may come in several pieces; each file is written once the
    /// next one starts).
    fn remember(&mut self, file: usize, outcomes: &[Outcome], inputs: &[Input]) -> Result<(), SanitizeError> {
        if self.memo_file.as_ref().is_some_and(|(current, _)| *current != file) {
            self.flush_memo(inputs)?;
        }
        let (_, kept) = self
            .memo_file
            .get_or_insert_with(|| (file, Some(FieldWriter::default())));
        if let Some(fields) = kept {
            encode(outcomes, fields);
            if fields.written() > MEMO_FILE_LIMIT {
                *kept = None;
            }
        }
        Ok(())
    }

    /// Writes the computed outcomes of the file collected last to the memo.
    fn flush_memo(&mut self, inputs: &[Input]) -> Result<(), SanitizeError> {
        if let (Some((memo, hasher)), Some((file, Some(fields)))) = (self.memo.as_mut(), self.memo_file.take())
            && let Some((path, hash)) = &inputs[file].memo_key
        {
            // A file edited while the run read it holds other content than
            // its key names: keep nothing for it.
            let input = &inputs[file].path;
            if hasher.file_digest(input).ok().as_ref() == Some(hash) {
                memo.put(path, hash, &fields.finish()).map_err(io_error(input))?;
            }
        }
        Ok(())
    }

    fn take_file(&mut self, results: Vec<Outcome>) -> Result<(), SanitizeError> {
        for result in results {
            self.report.records_in += 1;
            let record = match result {
                Ok(record) => record,
                Err(reason) => {
                    *self.report.dropped.entry(reason).or_insert(0) += 1;
                    continue;
                }
            };
            if !self.seen.insert(record.id) {
                *self.report.dropped.entry("duplicate".into()).or_insert(0) += 1;
                continue;
            }
            self.report.free_text.tokens += record.tokens.0;
            self.report.free_text.kept += record.tokens.1;
            for (kind, count) in record.redactions {
                *self.redactions.entry(kind).or_insert(0) += count;
            }
            for (kind, count) in record.normalized {
                *self.normalized.entry(kind).or_insert(0) += count;
            }
            self.held_bytes += record.keyed_line.len();
            self.held.entry(record.session).or_default().push(record.keyed_line);
            self.report.records_out += 1;
            if self.held_bytes > MEMORY_BUDGET {
                self.spill()?;
            }
        }
        Ok(())
    }

    /// Appends every held line to its session's partial file.
    fn spill(&mut self) -> Result<(), SanitizeError> {
        std::fs::create_dir_all(&self.partial).map_err(io_error(&self.partial))?;
        for (session, lines) in self.held.drain() {
            let path = self.partial.join(format!("{session}.jsonl"));
            let file = File::options()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            let mut writer = BufWriter::new(file);
            for line in &lines {
                writeln!(writer, "{line}").map_err(io_error(&path))?;
            }
            writer.flush().map_err(io_error(&path))?;
            self.spilled.insert(session.clone());
            self.sessions.insert(session);
        }
        self.held_bytes = 0;
        Ok(())
    }

    /// Sorts and writes every session file into `output`, each named by its
    /// content without identifiers; returns the report and the memo, to keep
    /// once reading succeeded too.
    fn finish(
        mut self,
        output: &Path,
        inputs: &[Input],
    ) -> Result<(SanitizeReport, Option<MemoWriter>), SanitizeError> {
        self.flush_memo(inputs)?;
        let mut report = self.report;
        report.redactions = self.redactions.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        report.normalized = self.normalized.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let free = &mut report.free_text;
        free.kept_share = if free.tokens == 0 {
            1.0
        } else {
            free.kept as f64 / free.tokens as f64
        };
        self.sessions.extend(self.held.keys().cloned());
        let mut sessions: Vec<String> = self.sessions.into_iter().collect();
        sessions.sort();
        report.sessions = sessions.len();
        let (held, spilled, partial) = (&self.held, &self.spilled, &self.partial);
        let names = sessions
            .par_iter()
            .map(|session| {
                let on_disk = spilled
                    .contains(session)
                    .then(|| partial.join(format!("{session}.jsonl")));
                let in_memory = held.get(session).map_or(&[][..], Vec::as_slice);
                finish_session(on_disk.as_deref(), in_memory, &output.join(format!("{session}.part")))
            })
            .collect::<Result<Vec<String>, SanitizeError>>()?;
        // Two sessions with the same content apart from identifiers get
        // numbered names, in pseudonym order.
        let mut taken = HashSet::new();
        for (session, name) in sessions.iter().zip(names) {
            let mut unique = format!("{name}.jsonl");
            for n in 2.. {
                if taken.insert(unique.clone()) {
                    break;
                }
                unique = format!("{name}-{n}.jsonl");
            }
            let from = output.join(format!("{session}.part"));
            std::fs::rename(&from, output.join(unique)).map_err(io_error(&from))?;
        }
        Ok((report, self.memo.map(|(memo, _)| memo)))
    }
}

/// Raw records, in input order: a whole `*.json` file (read by whichever
/// thread cleans it) or one line of a `*.jsonl` file.
enum Raw {
    File(PathBuf),
    Line(String),
}

impl Raw {
    fn text(&self) -> Result<std::borrow::Cow<'_, str>, SanitizeError> {
        match self {
            Raw::File(path) => Ok(std::fs::read_to_string(path).map_err(io_error(path))?.into()),
            Raw::Line(line) => Ok(line.as_str().into()),
        }
    }
}

/// One input file, with the memo key (its path under the input directory and
/// its content hash) when its outcomes are memoized.
struct Input {
    path: PathBuf,
    memo_key: Option<(String, Digest)>,
}

/// A file whose outcomes take more than this is not memoized (a file's
/// outcomes are gathered whole before they go into the memo).
const MEMO_FILE_LIMIT: usize = 16 << 20;

/// Work for the cleaning threads, in input order.
enum Work {
    /// A raw record of input file `file`.
    Raw { file: usize, raw: Raw },
    /// The memo's result for input file `file`: every outcome of it,
    /// decoded by the cleaning threads.
    Known { file: usize, result: Vec<u8> },
}

/// About how many bytes of memo result one record takes: known files count
/// as that many records towards a chunk, which bounds memory alike.
const RESULT_BYTES_PER_RECORD: usize = 2048;

impl Work {
    /// Cleans the raw record, or decodes the kept result (cleaning the file
    /// again should it not decode): the file's outcomes, with the result
    /// they were decoded from.
    fn outcomes(self, inputs: &[Input], key: &PseudonymKey, cleaner: Cleaner) -> Result<FileOutcomes, SanitizeError> {
        let clean = |raw: Raw| -> Result<Outcome, SanitizeError> { Ok(cleaner(&raw.text()?, key).map(Cleaned::from)) };
        match self {
            Work::Raw { file, raw } => Ok((file, vec![clean(raw)?], None)),
            Work::Known { file, result } => match decode(&result) {
                Some(outcomes) => Ok((file, outcomes, Some(result))),
                None => {
                    let mut outcomes = Vec::new();
                    for_each_raw(&inputs[file].path, |raw| {
                        outcomes.push(clean(raw)?);
                        Ok(())
                    })?;
                    Ok((file, outcomes, None))
                }
            },
        }
    }
}

/// Hands each raw record of input file `path` to `take`: the whole file for
/// `*.json`, each line that is not blank for `*.jsonl`.
fn for_each_raw(path: &Path, mut take: impl FnMut(Raw) -> Result<(), SanitizeError>) -> Result<(), SanitizeError> {
    if path.extension().is_some_and(|e| e == "json") {
        return take(Raw::File(path.to_path_buf()));
    }
    let reader = BufReader::new(File::open(path).map_err(io_error(path))?);
    for line in reader.lines() {
        let line = line.map_err(io_error(path))?;
        if !line.trim().is_empty() {
            take(Raw::Line(line))?;
        }
    }
    Ok(())
}

/// Hands the work to `consume` in chunks, in file and line order: whole
/// files whose outcomes the memo kept, and raw records to clean.
fn read_chunks(
    inputs: &[Input],
    mut memo: Option<fabric_core::memo::MemoReader>,
    mut consume: impl FnMut(Vec<Work>) -> Result<(), SanitizeError>,
) -> Result<(), SanitizeError> {
    // Chunks span files, so many one-record files make few chunks.
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut size = 0;
    let mut push = |work: Work, chunk: &mut Vec<Work>| -> Result<(), SanitizeError> {
        size += match &work {
            Work::Raw { .. } => 1,
            Work::Known { result, .. } => 1 + result.len() / RESULT_BYTES_PER_RECORD,
        };
        chunk.push(work);
        if size >= CHUNK {
            size = 0;
            consume(std::mem::replace(chunk, Vec::with_capacity(CHUNK)))?;
        }
        Ok(())
    };
    for (index, input) in inputs.iter().enumerate() {
        let kept = match (&input.memo_key, memo.as_mut()) {
            (Some((path, hash)), Some(memo)) => memo.take(path, hash),
            _ => None,
        };
        match kept {
            Some(result) => push(Work::Known { file: index, result }, &mut chunk)?,
            None => for_each_raw(&input.path, |raw| push(Work::Raw { file: index, raw }, &mut chunk))?,
        }
    }
    if !chunk.is_empty() {
        consume(chunk)?;
    }
    Ok(())
}

/// Sanitizes every snapshot under `input` into `output` (created; must not
/// hold earlier results), with identifiers pseudonymized under `key`, and
/// returns the report. With a `memo`, input files unchanged since the last
/// run reuse their kept outcomes instead of being read and cleaned again;
/// the output is the same byte for byte. If the verifier refuses the output,
/// it is removed and the error returned.
pub fn sanitize(
    input: &Path,
    output: &Path,
    memo: Option<&Memo>,
    key: &PseudonymKey,
) -> Result<SanitizeReport, SanitizeError> {
    sanitize_with(input, output, memo, key, clean)
}

/// How one raw record is cleaned (a seam for the test that breaks it).
type Cleaner = fn(&str, &PseudonymKey) -> Result<Clean, String>;

fn sanitize_with(
    input: &Path,
    output: &Path,
    memo: Option<&Memo>,
    key: &PseudonymKey,
    cleaner: Cleaner,
) -> Result<SanitizeReport, SanitizeError> {
    let inputs: Vec<Input> = match memo {
        // The files the stage's fingerprint found, with their hashes as memo
        // keys: the memo is read in path order, so it is keyed by the path
        // itself (local state beside the raw input).
        Some(memo) => memo
            .files_under(input)
            .into_iter()
            .filter(|file| is_snapshot_file(&file.path))
            .map(|file| Input {
                path: file.path,
                memo_key: Some((file.name, file.hash)),
            })
            .collect(),
        None => input_files(input)?
            .into_iter()
            .map(|path| Input { path, memo_key: None })
            .collect(),
    };
    if inputs.is_empty() {
        return Err(SanitizeError::NoInput(input.to_path_buf()));
    }
    std::fs::create_dir_all(output).map_err(io_error(output))?;
    let partial = output.join(".partial");
    let writer = match memo {
        Some(memo) => Some((memo.writer().map_err(io_error(output))?, memo.hasher)),
        None => None,
    };
    let collector = Collector::new(partial.clone(), inputs.len(), writer);
    // Reading and cleaning run on the rayon pool while the collector thread
    // takes the previous chunks; a bounded channel keeps memory to a few chunks.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<FileOutcomes>>(2);
    let inputs = &inputs;
    let (read, collected) = std::thread::scope(|scope| {
        let collector_thread = scope.spawn(move || {
            let mut collector = collector;
            for outcomes in receiver {
                collector.take(outcomes, inputs)?;
            }
            collector.finish(output, inputs)
        });
        let read = read_chunks(inputs, memo.map(Memo::reader), |chunk| {
            let outcomes = chunk
                .into_par_iter()
                .map(|work| work.outcomes(inputs, key, cleaner))
                .collect::<Result<Vec<_>, SanitizeError>>()?;
            // A closed channel means the collector failed; its error is reported below.
            let _ = sender.send(outcomes);
            Ok(())
        });
        drop(sender);
        (read, collector_thread.join().expect("the collector does not panic"))
    });
    let _ = std::fs::remove_dir_all(&partial);
    let passed = memo.map(|memo| memo.beside("verified"));
    let (mut report, memo) = read.and(collected)?;
    if let Err(error) = privacy::verify_dir(output, passed.as_deref()) {
        let _ = std::fs::remove_dir_all(output);
        return Err(error.into());
    }
    report.pseudonym_key = key.id();
    if let Some(memo) = memo {
        memo.commit().map_err(io_error(output))?;
    }
    Ok(report)
}

/// A sanitized line without its identifiers (they lead every line, in
/// fixed widths), so sorting and naming do not depend on the pseudonym key.
fn without_ids(line: &str) -> &str {
    line.split_once(r#","sessionId":""#)
        .and_then(|(_, rest)| rest.get(33..))
        .unwrap_or(line)
}

/// Sorts one session's keyed lines (spilled to `on_disk`, and held
/// `in_memory`) by their key prefix, then content, and writes the records to
/// `target`. Returns the session's name: BLAKE3 of its content without
/// identifiers.
fn finish_session(on_disk: Option<&Path>, in_memory: &[String], target: &Path) -> Result<String, SanitizeError> {
    let text = match on_disk {
        Some(path) => std::fs::read_to_string(path).map_err(io_error(path))?,
        None => String::new(),
    };
    // (sort key, record without ids, record)
    let mut records: Vec<(&str, &str, &str)> = text
        .lines()
        .chain(in_memory.iter().map(String::as_str))
        .map(|line| {
            let (key, record) = line.split_once('\t').expect("keyed lines have a tab");
            (key, without_ids(record), record)
        })
        .collect();
    records.sort_unstable();
    let mut name = blake3::Hasher::new();
    let mut writer = BufWriter::with_capacity(1 << 20, File::create(target).map_err(io_error(target))?);
    for (_, content, record) in records {
        name.update(content.as_bytes()).update(b"\n");
        writeln!(writer, "{record}").map_err(io_error(target))?;
    }
    writer.flush().map_err(io_error(target))?;
    Ok(name.finalize().to_hex()[..32].to_string())
}

/// Whether sanitize reads the file at `path`: `*.json` and `*.jsonl`.
fn is_snapshot_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json" || e == "jsonl")
}

/// Input files under `dir`, sorted by path.
fn input_files(dir: &Path) -> Result<Vec<PathBuf>, SanitizeError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| SanitizeError::Io {
            path: dir.to_path_buf(),
            source: e.into(),
        })?;
        if entry.file_type().is_file() && is_snapshot_file(entry.path()) {
            files.push(entry.into_path());
        }
    }
    Ok(files)
}

/// Sanitizes one raw record: the clean snapshot, or why it is dropped. The
/// result always passes [`Snapshot::validate`] and the privacy verifier.
pub fn clean_record(text: &str, key: &PseudonymKey) -> Result<Snapshot, String> {
    clean(text, key).map(|clean| clean.snapshot)
}

/// Parses, validates, normalizes, pseudonymizes and rebuilds the free text of
/// one record, or names why it is dropped.
fn clean(text: &str, key: &PseudonymKey) -> Result<Clean, String> {
    let (mut snapshot, mut normalized) = schema::read_snapshot(text).map_err(|error| drop_reason(text, &error))?;
    if snapshot.allow_export == Some(false) {
        return Err("no_consent".into());
    }
    snapshot
        .validate()
        .map_err(|violation| format!("invalid:{}", violation.field))?;
    snapshot.allow_export = None;
    snapshot.snapshot_id = key.snapshot(&snapshot.snapshot_id);
    snapshot.session_id = key.session(&snapshot.session_id);
    normalize(&mut snapshot, &mut normalized);
    let mut redactions = BTreeMap::new();
    let mut tokens = (0, 0);
    for_each_text(&mut snapshot, &mut normalized, |text| {
        let redacted = redact::redact_memoized(text);
        if redacted.text != *text {
            text.clone_from(&redacted.text);
        }
        for (kind, count) in &redacted.counts {
            *redactions.entry(*kind).or_insert(0) += count;
        }
        tokens.0 += redacted.tokens;
        tokens.1 += redacted.kept;
    });
    Ok(Clean {
        snapshot,
        redactions,
        normalized,
        tokens,
    })
}

/// Why a record does not read, with the field where that is known
/// (`wrong_type:transport.tempo`, `missing_field:transport.cycle`). The
/// path comes from reading the record once more, on this error path only;
/// a segment that is not a schema field name (a map key: free text) shows
/// as `*`, so no text of the record reaches the report.
fn drop_reason(text: &str, error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    if matches!(error.classify(), Category::Syntax | Category::Eof | Category::Io) {
        return "invalid_json".into();
    }
    let message = error.to_string();
    let (kind, field) = if let Some(rest) = message.strip_prefix("missing field `") {
        ("missing_field", rest.split('`').next().unwrap_or(""))
    } else if message.starts_with("invalid type") {
        ("wrong_type", "")
    } else {
        ("invalid_value", "")
    };
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let (read, _) = schema::leniently(|| serde_path_to_error::deserialize::<_, Snapshot>(&mut deserializer));
    let mut segments: Vec<String> = match read {
        Err(error) => error
            .path()
            .iter()
            .map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } if super::contract::is_field_name(key) => key.clone(),
                serde_path_to_error::Segment::Seq { .. } => "[]".into(),
                _ => "*".into(),
            })
            .collect(),
        Ok(_) => Vec::new(),
    };
    if !field.is_empty() {
        segments.push(field.to_string());
    }
    let path = segments.join(".").replace(".[]", "[]");
    if path.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}:{path}")
    }
}

fn round(value: &mut f64) {
    *value = (*value * 10_000.0).round() / 10_000.0;
}

fn truncate<T>(items: &mut Vec<T>, limit: usize, what: &'static str, normalized: &mut BTreeMap<&'static str, usize>) {
    if items.len() > limit {
        items.drain(..items.len() - limit);
        *normalized.entry(what).or_insert(0) += 1;
    }
}

/// Brings a number below [`NUMBER_LIMIT`] in magnitude (a measurement that
/// large is an error, and could carry a phone or card number).
fn bound(value: &mut f64, what: &'static str, normalized: &mut BTreeMap<&'static str, usize>) {
    let limit = NUMBER_LIMIT - 1.0;
    if value.abs() > limit {
        *value = value.clamp(-limit, limit);
        *normalized.entry(what).or_insert(0) += 1;
    }
}

fn normalize(s: &mut Snapshot, normalized: &mut BTreeMap<&'static str, usize>) {
    if s.sequence.is_some_and(|n| n as f64 >= NUMBER_LIMIT) {
        s.sequence = None;
        *normalized.entry("dropped:sequence").or_insert(0) += 1;
    }
    let limit = NUMBER_LIMIT as u64 - 1;
    if s.audio_metrics.dropouts > limit {
        s.audio_metrics.dropouts = limit;
        *normalized.entry("clamped:audioMetrics.dropouts").or_insert(0) += 1;
    }
    for reading in &mut s.als_channels {
        bound(&mut reading.value, "clamped:alsChannels.value", normalized);
        if !(0.0..=1.0).contains(&reading.normalized) {
            reading.normalized = reading.normalized.clamp(0.0, 1.0);
            *normalized.entry("clamped:alsChannels.normalized").or_insert(0) += 1;
        }
        round(&mut reading.value);
        round(&mut reading.normalized);
    }
    let t = &mut s.transport;
    if t.cycle.end_beats < t.cycle.start_beats {
        t.cycle.end_beats = t.cycle.start_beats;
        *normalized.entry("clamped:transport.cycle").or_insert(0) += 1;
    }
    for value in [
        &mut t.tempo,
        &mut t.playhead_beats,
        &mut t.cycle.start_beats,
        &mut t.cycle.end_beats,
    ] {
        bound(value, "clamped:transport", normalized);
        round(value);
    }
    bound(
        &mut s.audio_metrics.latency_ms,
        "clamped:audioMetrics.latencyMs",
        normalized,
    );
    round(&mut s.audio_metrics.latency_ms);
    round(&mut s.audio_metrics.cpu_load);
    let h = &mut s.harmonic_state;
    for value in [&mut h.consonance, &mut h.tension, &mut h.velocity_energy] {
        round(value);
    }
    if let Some(memory) = &mut s.user_memory_summary {
        truncate(
            &mut memory.recent_actions,
            MAX_RECENT_ACTIONS,
            "truncated:recentActions",
            normalized,
        );
    }
    truncate(&mut s.bloom_trace, MAX_BLOOM_TRACE, "truncated:bloomTrace", normalized);
    truncate(
        &mut s.conversation_turns,
        MAX_CONVERSATION_TURNS,
        "truncated:conversationTurns",
        normalized,
    );
    if let Some(commands) = &mut s.issued_commands {
        truncate(commands, MAX_ISSUED_COMMANDS, "truncated:issuedCommands", normalized);
        let before = commands.len();
        commands.retain(|c| vocabulary::command(&c.kind).is_some());
        if commands.len() < before {
            *normalized.entry("dropped:unknownCommand").or_insert(0) += before - commands.len();
        }
        for command in commands.iter_mut() {
            if let Some(target) = &command.target
                && !vocabulary::is_archetype(target)
            {
                command.target = vocabulary::archetype_of(target).map(str::to_string);
                *normalized.entry("mapped:targetToArchetype").or_insert(0) += 1;
            }
        }
    }
}

/// Calls `visit` with every free-text string of a snapshot: flag messages,
/// memory (actions, preference keys and values), Bloom actions, the scale,
/// turns, guidance, and every string and key anywhere inside command
/// arguments. Keys that become equal merge (the first wins) and numbers in
/// arguments too large to be a setting become `⟨number⟩`.
fn for_each_text(s: &mut Snapshot, normalized: &mut BTreeMap<&'static str, usize>, mut visit: impl FnMut(&mut String)) {
    visit(&mut s.harmonic_state.scale);
    for flag in &mut s.ai_analysis_flags {
        visit(&mut flag.message);
    }
    if let Some(memory) = &mut s.user_memory_summary {
        memory.recent_actions.iter_mut().for_each(&mut visit);
        let preferences = std::mem::take(&mut memory.preferences);
        for (mut key, mut value) in preferences {
            visit(&mut key);
            visit(&mut value);
            match memory.preferences.entry(key) {
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(value);
                }
                std::collections::btree_map::Entry::Occupied(_) => {
                    *normalized.entry("merged:preferences").or_insert(0) += 1;
                }
            }
        }
    }
    for event in &mut s.bloom_trace {
        visit(&mut event.action);
    }
    for command in s.issued_commands.iter_mut().flatten() {
        if let Some(args) = &mut command.args {
            let mut value = serde_json::Value::Object(std::mem::take(args).into_iter().collect());
            visit_json(&mut value, normalized, &mut visit);
            if let serde_json::Value::Object(map) = value {
                *args = map.into_iter().collect();
            }
        }
    }
    for turn in &mut s.conversation_turns {
        visit(&mut turn.text);
    }
    if let Some(guidance) = &mut s.guidance {
        visit(&mut guidance.text);
    }
}

/// [`for_each_text`] inside a JSON value: strings, keys, and numbers.
fn visit_json(
    value: &mut serde_json::Value,
    normalized: &mut BTreeMap<&'static str, usize>,
    visit: &mut impl FnMut(&mut String),
) {
    use serde_json::Value;
    match value {
        Value::String(text) => visit(text),
        Value::Number(number) => {
            let magnitude = number.as_f64().map_or(f64::INFINITY, f64::abs);
            if magnitude >= NUMBER_LIMIT {
                *value = Value::String(Placeholder::Number.text().into());
                *normalized.entry("replaced:largeNumber").or_insert(0) += 1;
            } else if number.is_f64() {
                let mut rounded = number.as_f64().unwrap_or(0.0);
                round(&mut rounded);
                *value = serde_json::json!(rounded);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| visit_json(item, normalized, visit)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut item) in entries {
                visit(&mut key);
                visit_json(&mut item, normalized, visit);
                if map.contains_key(&key) {
                    *normalized.entry("merged:argumentKeys").or_insert(0) += 1;
                } else {
                    map.insert(key, item);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;

    use super::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[A-Za-z0-9 .,:/@+()'_-]{0,60}",
            prop::sample::select(vec![
                "Maya vox take 3".to_string(),
                "mail a.b@c.io or +1 (555) 123-4567".to_string(),
                "C:\\Users\\Zoë\\mix.wav at 10.0.0.1".to_string(),
            ]),
        ]
    }

    prop_compose! {
        fn raw_snapshot()(
            id in any::<u128>(),
            session in "[A-Za-z0-9_-]{0,70}",
            mode in prop::sample::select(vec!["passive", "active", "learning", "optimizing", "loud"]),
            tempo in -10.0f64..500.0,
            cpu in -0.5f64..1.5,
            buffer in prop::sample::select(vec![16u32, 32, 100, 256, 8192, 16384]),
            normalized in -2.0f64..3.0,
            texts in prop::collection::vec(text(), 7),
            turns in 0usize..15,
            target in text(),
        ) -> serde_json::Value {
            let id = uuid::Builder::from_random_bytes(id.to_le_bytes()).into_uuid().to_string();
            serde_json::json!({
                "snapshotId": id, "sessionId": session, "capturedAt": "2026-11-24T10:00:00+01:00",
                "mode": mode,
                "transport": {"isPlaying": true, "tempo": tempo, "playheadBeats": 1.0, "timeSignature": "4/4",
                              "cycle": {"enabled": false, "startBeats": 0.0, "endBeats": 4.0}},
                "alsChannels": [{"channel": "energy", "value": 1.0, "normalized": normalized}],
                "audioMetrics": {"latencyMs": 3.0, "cpuLoad": cpu, "dropouts": 0, "bufferSize": buffer, "sampleRate": 48000},
                "harmonicState": {"key": "F#", "scale": texts[0], "consonance": 0.5, "tension": 0.5, "velocityEnergy": 0.5},
                "aiAnalysisFlags": [{"category": "mix", "severity": "high", "message": texts[1]}],
                "userMemorySummary": {"recentActions": [texts[2]], "preferences": {texts[3].clone(): texts[4]}},
                "bloomTrace": [{"action": texts[5], "source": "als", "outcome": "accepted", "at": "2026-11-24T10:00:00Z"}],
                "issuedCommands": [{"type": "track.mute", "target": target, "args": {"note": texts[6]}}],
                "conversationTurns": (0..turns).map(|i| serde_json::json!({"role": "user", "text": texts[i % 7]})).collect::<Vec<_>>(),
                "guidance": {"channel": "pulse", "intensity": "nudge", "text": texts[1]}
            })
        }
    }

    const KEY: PseudonymKey = PseudonymKey::from_bytes([3; 32]);

    proptest! {
        #[test]
        fn sanitize_never_panics_and_its_output_revalidates(record in raw_snapshot(), cut in 0usize..2000) {
            let text = record.to_string();
            // Whole records and truncated ones.
            let _ = clean_record(&text[..text.floor_char_boundary(cut.min(text.len()))], &KEY);
            if let Ok(snapshot) = clean_record(&text, &KEY) {
                prop_assert!(snapshot.validate().is_ok());
                prop_assert_eq!(privacy::check_snapshot(&snapshot), Ok(()));
                prop_assert!(snapshot.conversation_turns.len() <= MAX_CONVERSATION_TURNS);
                prop_assert!(snapshot.als_channels.iter().all(|r| (0.0..=1.0).contains(&r.normalized)));
                // Sanitizing again changes nothing but the identifiers,
                // which are pseudonymized once more.
                let mut again = clean_record(&serde_json::to_string(&snapshot).unwrap(), &KEY).unwrap();
                prop_assert_eq!(&again.session_id, &KEY.session(&snapshot.session_id));
                again.snapshot_id.clone_from(&snapshot.snapshot_id);
                again.session_id.clone_from(&snapshot.session_id);
                prop_assert_eq!(again, snapshot, "sanitizing is idempotent");
            }
        }
    }

    fn raw_line(session: &str, turn: &str) -> String {
        let mut record = raw_snapshot()
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap()
            .current();
        record["sessionId"] = session.into();
        record["mode"] = "active".into();
        record["transport"]["tempo"] = 120.0.into();
        record["audioMetrics"]["cpuLoad"] = 0.5.into();
        record["audioMetrics"]["bufferSize"] = 256.into();
        record["conversationTurns"] = serde_json::json!([{"role": "user", "text": turn}]);
        record.to_string()
    }

    /// Lenient where the Studio may differ: enum spellings in any case,
    /// fields outside the brief absent, integral floats, an unknown channel
    /// or category dropping only its item (counted), an inverted cycle
    /// clamped; strict where it matters: an unknown mode drops the record.
    #[test]
    fn items_the_studio_may_spell_differently_do_not_drop_the_record() {
        let mut record: serde_json::Value = serde_json::from_str(&raw_line("s1", "hello")).unwrap();
        record["mode"] = "Passive".into();
        record["guidance"]["channel"] = "ENERGY".into();
        record["bloomTrace"][0]["outcome"] = "Accepted".into();
        for (pointer, field) in [
            ("", "capturedAt"),
            ("/audioMetrics", "sampleRate"),
            ("/transport", "timeSignature"),
        ] {
            record
                .pointer_mut(pointer)
                .unwrap()
                .as_object_mut()
                .unwrap()
                .remove(field);
        }
        record["audioMetrics"]["bufferSize"] = serde_json::json!(256.0);
        record["transport"]["cycle"] = serde_json::json!({"enabled": true, "startBeats": 8.0, "endBeats": 4.0});
        record["alsChannels"] = serde_json::json!([
            {"channel": "energy", "value": 1.0, "normalized": 0.5},
            {"channel": "shimmer", "value": 1.0, "normalized": 0.5},
        ]);
        record["aiAnalysisFlags"] = serde_json::json!([
            {"category": "mix", "severity": "HIGH", "message": "muddy"},
            {"category": "vibes", "severity": "low", "message": "odd"},
        ]);
        let clean = clean(&record.to_string(), &KEY).expect("kept");
        assert_eq!(clean.snapshot.mode, Mode::Passive);
        assert_eq!(
            clean.snapshot.guidance.as_ref().map(|g| g.channel),
            Some(AlsChannel::Energy)
        );
        assert_eq!(clean.snapshot.audio_metrics.buffer_size, 256);
        assert_eq!(clean.snapshot.als_channels.len(), 1);
        assert_eq!(clean.snapshot.ai_analysis_flags[0].severity, Severity::High);
        assert_eq!(clean.snapshot.transport.cycle.end_beats, 8.0);
        for (reason, count) in [
            ("dropped:alsChannels", 1),
            ("dropped:aiAnalysisFlags", 1),
            ("clamped:transport.cycle", 1),
        ] {
            assert_eq!(clean.normalized.get(reason), Some(&count), "{:?}", clean.normalized);
        }

        record["mode"] = "furious".into();
        assert_eq!(
            clean_record(&record.to_string(), &KEY).unwrap_err(),
            "invalid_value:mode"
        );
        record["mode"] = "active".into();
        record["audioMetrics"]["bufferSize"] = serde_json::json!(256.5);
        assert_eq!(
            clean_record(&record.to_string(), &KEY).unwrap_err(),
            "invalid_value:audioMetrics.bufferSize"
        );
        // A reason names the field, never text of the record: a map key
        // (free text) shows as `*`.
        record["audioMetrics"]["bufferSize"] = serde_json::json!(256);
        record["userMemorySummary"] = serde_json::json!({"recentActions": [], "preferences": {"Jane Doe": 5}});
        assert_eq!(
            clean_record(&record.to_string(), &KEY).unwrap_err(),
            "wrong_type:userMemorySummary.preferences.*"
        );
        record["userMemorySummary"] = serde_json::json!({"preferences": {}});
        assert_eq!(
            clean_record(&record.to_string(), &KEY).unwrap_err(),
            "missing_field:userMemorySummary.recentActions"
        );
    }

    /// With a memo, kept results are used as read, a result that does not
    /// decode has its file cleaned again, and the output is byte for byte
    /// the output of a run without a memo.
    #[test]
    fn kept_results_and_damaged_ones_give_the_output_of_a_run_without_memo() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("raw");
        std::fs::create_dir_all(input.join("sub")).unwrap();
        std::fs::write(
            input.join("a.jsonl"),
            raw_line("s1", "more reverb") + "\n\n" + &raw_line("s2", "less") + "\n",
        )
        .unwrap();
        std::fs::write(input.join("sub/b.json"), raw_line("s1", "Jane wants it louder")).unwrap();
        let cache = fabric_core::stat_cache::StatCache::load(&dir.path().join("state"));
        let hasher = Hasher::new(dir.path(), &cache);
        let known = walkdir::WalkDir::new(&input)
            .into_iter()
            .map(Result::unwrap)
            .filter(|entry| entry.file_type().is_file())
            .map(|entry| (entry.path().to_path_buf(), hasher.file_digest(entry.path()).unwrap()))
            .collect();
        let memo = Memo {
            path: dir.path().join("memo"),
            domain: Digest::of(b"sanitize test"),
            hasher: &hasher,
            known: &known,
        };
        let files_of = |output: &Path| -> Vec<(std::ffi::OsString, String)> {
            let mut files: Vec<_> = std::fs::read_dir(output)
                .unwrap()
                .map(|entry| {
                    let entry = entry.unwrap();
                    (entry.file_name(), std::fs::read_to_string(entry.path()).unwrap())
                })
                .collect();
            files.sort();
            files
        };
        let plain = sanitize(&input, &dir.path().join("plain"), None, &KEY).unwrap();
        let expected = files_of(&dir.path().join("plain"));
        for (run, damage) in [("first", false), ("kept", false), ("damaged", true)] {
            if damage {
                // Same domain, paths and hashes; results that do not decode.
                let mut writer = memo.writer().unwrap();
                for file in memo.files_under(&input) {
                    writer.put(&file.name, &file.hash, &[7]).unwrap();
                }
                writer.commit().unwrap();
            }
            let output = dir.path().join(run);
            assert_eq!(sanitize(&input, &output, Some(&memo), &KEY).unwrap(), plain, "{run}");
            assert_eq!(files_of(&output), expected, "{run}");
        }
        // The damaged results were replaced by good ones.
        let mut reader = memo.reader();
        let file = &memo.files_under(&input)[0];
        assert!(decode(&reader.take(&file.name, &file.hash).unwrap()).is_some());
    }

    /// The verifier does not trust the redactor: a cleaner that lets one
    /// name through (as a broken redactor would) fails the whole step, and
    /// nothing is left in the output.
    #[test]
    fn a_redactor_that_passes_a_name_is_caught_by_the_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("raw"), dir.path().join("clean"));
        std::fs::create_dir_all(&input).unwrap();
        std::fs::write(
            input.join("a.jsonl"),
            raw_line("s1", "Jane Doe wants more reverb") + "\n",
        )
        .unwrap();
        sanitize(&input, &output, None, &KEY).expect("the real redactor passes");
        let written = std::fs::read_dir(&output).unwrap().next().unwrap().unwrap().path();
        assert!(
            std::fs::read_to_string(written)
                .unwrap()
                .contains("⟨person⟩ wants more reverb")
        );

        fn leaky(text: &str, key: &PseudonymKey) -> Result<Clean, String> {
            let mut cleaned = clean(text, key)?;
            cleaned.snapshot.conversation_turns[0].text = "Jane wants more reverb".into();
            Ok(cleaned)
        }
        let broken = dir.path().join("broken");
        let error = sanitize_with(&input, &broken, None, &KEY, leaky).unwrap_err();
        assert!(matches!(error, SanitizeError::Unverified(_)), "{error}");
        assert!(
            !error.to_string().contains("Jane"),
            "errors never repeat the data: {error}"
        );
        assert!(!broken.exists(), "nothing is published");
    }
}
