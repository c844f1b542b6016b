//! The privacy verifier: checks sanitized records by their shape, with a
//! method independent of the redactor.
//!
//! It reads records as plain JSON (not through the schema types, so a field
//! the redactor forgot is still seen) and walks every key and value:
//!
//! - `snapshotId` and `sessionId` must have the pseudonym shapes
//!   ([`super::pseudonym`]);
//! - times, the musical key, the time signature, command types and targets
//!   must match their closed formats;
//! - every other string, and every key inside command arguments and
//!   preferences, is free text: it may hold only vocabulary words
//!   ([`lexicon::is_word`]), placeholders, ASCII punctuation and spaces — no
//!   digit in any script, no other character;
//! - every number must be below 1,000,000 in magnitude (a phone, card or
//!   account number cannot hide in a numeric field);
//! - keys elsewhere must be field names of the v1 schema.
//!
//! It never asks the detectors what personal data looks like: a name the
//! redactor let through fails here because it is not a vocabulary word.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use rayon::prelude::*;
use serde_json::Value;

use super::lexicon::{self, Placeholder};
use super::{pseudonym, schema, vocabulary};

/// Numbers must stay below this magnitude.
pub const NUMBER_LIMIT: f64 = 1_000_000.0;

/// Something in a record that is not known to be safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct Unsafe {
    /// Where, as a JSON path (`conversationTurns[0].text`).
    pub path: String,
    /// What is wrong (never the offending text itself, which may be personal).
    pub problem: String,
}

/// Why a sanitized directory failed verification.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A record holds something unsafe.
    #[error("{file}:{line}: {problem}")]
    Unsafe {
        /// The file.
        file: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What and where in the record.
        problem: Unsafe,
    },
    /// A line is not JSON, or reading failed.
    #[error("{file}: {message}")]
    Unreadable {
        /// The file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Field names of the v1 schema, from its generated JSON Schema.
static FIELD_NAMES: LazyLock<HashSet<String>> = LazyLock::new(|| {
    fn collect(value: &Value, names: &mut HashSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(properties)) = map.get("properties") {
                    names.extend(properties.keys().cloned());
                }
                map.values().for_each(|v| collect(v, names));
            }
            Value::Array(items) => items.iter().for_each(|v| collect(v, names)),
            _ => {}
        }
    }
    let mut names = HashSet::new();
    let schema: Value = serde_json::from_str(&schema::json_schema()).expect("the schema is JSON");
    collect(&schema, &mut names);
    names
});

/// Distinct texts found safe, remembered per thread (records repeat their
/// conversation windows and actions); cleared when full.
const SAFE_MEMO_LIMIT: usize = 65_536;

thread_local! {
    static SAFE: std::cell::RefCell<HashSet<String>> = std::cell::RefCell::new(HashSet::new());
}

/// Checks that `text` is free text built only from the vocabulary,
/// placeholders, ASCII punctuation and spaces.
pub fn check_text(text: &str) -> Result<(), String> {
    if text.is_empty() || SAFE.with(|safe| safe.borrow().contains(text)) {
        return Ok(());
    }
    check_text_uncached(text)?;
    SAFE.with(|safe| {
        let mut safe = safe.borrow_mut();
        if safe.len() >= SAFE_MEMO_LIMIT {
            safe.clear();
        }
        safe.insert(text.to_string());
    });
    Ok(())
}

fn check_text_uncached(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some(placeholder) = Placeholder::at_start(rest) {
            rest = &rest[placeholder.text().len()..];
        } else if c.is_alphabetic() {
            // Every run of letters, whatever separates it (an apostrophe
            // too: "don't" is checked as "don" and "t").
            let end = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
            let word = &rest[..end];
            if !lexicon::is_word(word) {
                return Err(format!(
                    "a word outside the vocabulary ({} letters)",
                    word.chars().count()
                ));
            }
            rest = &rest[end..];
        } else if c.is_numeric() {
            return Err("a digit in free text".into());
        } else if c == ' ' || c.is_ascii_punctuation() {
            rest = &rest[1..];
        } else {
            return Err(format!("a character free text may not hold (U+{:04X})", c as u32));
        }
    }
    Ok(())
}

/// Where a value sits in a record; rendered as a JSON path only when a
/// problem is reported.
#[derive(Clone, Copy)]
enum Location<'a> {
    Root,
    Key(&'a Location<'a>, &'a str),
    Index(&'a Location<'a>, usize),
}

impl Location<'_> {
    fn render(&self) -> String {
        match self {
            Location::Root => String::new(),
            Location::Key(Location::Root, key) => key.to_string(),
            Location::Key(parent, key) => format!("{}.{key}", parent.render()),
            Location::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }

    /// The field name this value belongs to (array elements: their array's).
    fn field(&self) -> &str {
        match self {
            Location::Root => "",
            Location::Key(_, key) => key,
            Location::Index(parent, _) => parent.field(),
        }
    }

    fn parent(&self) -> &Location<'_> {
        match self {
            Location::Root => self,
            Location::Key(parent, _) | Location::Index(parent, _) => parent,
        }
    }
}

fn fail(at: &Location, problem: impl Into<String>) -> Result<(), Unsafe> {
    Err(Unsafe {
        path: at.render(),
        problem: problem.into(),
    })
}

/// How a string at a schema field must look.
fn check_string(at: &Location, text: &str) -> Result<(), Unsafe> {
    let shaped = |ok: bool, what: &str| if ok { Ok(()) } else { fail(at, format!("not {what}")) };
    match at.field() {
        "snapshotId" => shaped(pseudonym::is_snapshot_pseudonym(text), "a snapshot pseudonym"),
        "sessionId" => shaped(pseudonym::is_session_pseudonym(text), "a session pseudonym"),
        "capturedAt" | "at" => shaped(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "an RFC 3339 time"),
        "key" if at.parent().field() == "harmonicState" => shaped(
            matches!(text.as_bytes(), [b'A'..=b'G'] | [b'A'..=b'G', b'#' | b'b']),
            "a musical key",
        ),
        "timeSignature" => shaped(
            text.split_once('/').is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
            }),
            "a time signature",
        ),
        "type" => shaped(vocabulary::command(text).is_some(), "a command of the vocabulary"),
        "target" => shaped(vocabulary::is_archetype(text), "a track archetype"),
        _ => check_text(text).or_else(|problem| fail(at, problem)),
    }
}

/// Walks `value` at `at`; `free_keys` says whether its keys are free text
/// (inside command arguments and preferences) or schema field names.
fn walk(value: &Value, at: &Location, free_keys: bool) -> Result<(), Unsafe> {
    match value {
        Value::String(text) if free_keys => check_text(text).or_else(|problem| fail(at, problem)),
        Value::String(text) => check_string(at, text),
        Value::Number(number) => {
            let magnitude = number.as_f64().map_or(f64::INFINITY, f64::abs);
            if magnitude.is_finite() && magnitude < NUMBER_LIMIT {
                Ok(())
            } else {
                fail(at, "a number of a million or more")
            }
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| walk(item, &Location::Index(at, i), free_keys)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let inner = Location::Key(at, key);
            if free_keys {
                check_text(key).or_else(|problem| fail(&inner, format!("key: {problem}")))?;
            } else if !FIELD_NAMES.contains(key) {
                return fail(&inner, "not a field of the schema");
            }
            walk(
                item,
                &inner,
                free_keys || matches!(key.as_str(), "args" | "preferences"),
            )
        }),
        Value::Bool(_) | Value::Null => Ok(()),
    }
}

/// Checks one sanitized record.
pub fn check_record(record: &Value) -> Result<(), Unsafe> {
    if !record.is_object() {
        return fail(&Location::Root, "a record must be a JSON object");
    }
    walk(record, &Location::Root, false)
}

/// Checks a sanitized snapshot as it would be written.
pub fn check_snapshot(snapshot: &schema::Snapshot) -> Result<(), Unsafe> {
    check_record(&serde_json::to_value(snapshot).expect("a snapshot serializes"))
}

/// Checks one line of sanitized JSONL.
pub fn check_line(line: &str) -> Result<(), Unsafe> {
    match serde_json::from_str::<Value>(line) {
        Ok(record) => check_record(&record),
        Err(_) => fail(&Location::Root, "not a JSON record"),
    }
}

/// Re-reads every `*.jsonl` file under `dir` and checks every record, in
/// parallel. Returns the number of records checked.
pub fn verify_dir(dir: &Path) -> Result<usize, VerifyError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry.map_err(|e| VerifyError::Unreadable {
            file: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    files
        .par_iter()
        .map(|file| {
            let unreadable = |message: String| VerifyError::Unreadable {
                file: file.clone(),
                message,
            };
            if file.extension().is_none_or(|e| e != "jsonl") {
                return Err(unreadable("not a sanitized session file (*.jsonl)".into()));
            }
            let text = std::fs::read_to_string(file).map_err(|e| unreadable(e.to_string()))?;
            let mut records = 0;
            for (n, line) in text.lines().enumerate() {
                check_line(line).map_err(|problem| VerifyError::Unsafe {
                    file: file.clone(),
                    line: n + 1,
                    problem,
                })?;
                records += 1;
            }
            Ok(records)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_is_vocabulary_placeholders_and_punctuation() {
        for safe in [
            "⟨person⟩'s lead vocal is too loud.",
            "Keep the tempo - it's calm",
            "",
            "mix.eqCut",
        ] {
            assert_eq!(check_text(safe), Ok(()), "{safe}");
        }
        for unsafe_text in [
            "jane's vocal",
            "JANE",
            "张伟",
            "take 3",
            "take ３",
            "⟨someone⟩",
            "a\ttab",
            "tempo\u{200b}",
        ] {
            assert!(check_text(unsafe_text).is_err(), "{unsafe_text}");
        }
    }

    #[test]
    fn records_are_checked_everywhere_by_shape() {
        let good = serde_json::json!({
            "snapshotId": "3f8e2a1c-5d4b-4e6f-8a9b-0c1d2e3f4a5b",
            "sessionId": "0123456789abcdef0123456789abcdef",
            "capturedAt": "2026-11-24T10:00:00Z",
            "transport": {"timeSignature": "4/4", "tempo": 120.0},
            "harmonicState": {"key": "F#", "scale": "minor"},
            "issuedCommands": [{"type": "mix.eqCut", "target": "bass",
                                "args": {"amount": 3, "note": {"deep": ["gentle cut"]}}}],
        });
        assert_eq!(check_record(&good), Ok(()));
        let mut cases = Vec::new();
        let mut bad = |pointer: &str, value: Value| {
            let mut record = good.clone();
            *record.pointer_mut(pointer).unwrap() = value;
            cases.push(record);
        };
        bad("/sessionId", "jane-doe-macbook".into());
        bad("/snapshotId", "not-a-uuid".into());
        bad("/issuedCommands/0/args/note/deep/0", "/Users/jane/a.wav".into());
        bad(
            "/issuedCommands/0/args/amount",
            serde_json::json!(4_111_111_111_111_111u64),
        );
        bad("/issuedCommands/0/target", "Jane vox".into());
        bad("/harmonicState/scale", "Priya".into());
        bad(
            "/issuedCommands/0/args",
            serde_json::json!({"jane.doe@gmail.com": "ok"}),
        );
        bad("/transport", serde_json::json!({"smuggled": "ok"}));
        for record in cases {
            assert!(check_record(&record).is_err(), "{record}");
        }
    }
}
