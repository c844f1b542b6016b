//! The privacy verifier: checks sanitized records by their shape, with a
//! method independent of the redactor.
//!
//! It reads records as plain JSON (not through the schema types, so a field
//! the redactor forgot is still seen), checking every key and value as it
//! parses them:
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

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::de;

use fabric_core::digest::Digest;
use fabric_core::memo::{FieldWriter, Fields, MemoReader, MemoWriter};

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

/// Checks a value as it is parsed, without building a tree: `at` is where
/// it sits, `free_keys` whether its keys are free text (inside command
/// arguments and preferences) or schema field names. The first problem is
/// left in `problem` (serde's error only says where parsing stopped).
struct Check<'a, 'p> {
    at: &'a Location<'a>,
    free_keys: bool,
    problem: &'p RefCell<Option<Unsafe>>,
}

impl Check<'_, '_> {
    fn report<E: de::Error>(&self, result: Result<(), Unsafe>) -> Result<(), E> {
        result.map_err(|unsafe_value| {
            *self.problem.borrow_mut() = Some(unsafe_value);
            E::custom("unsafe")
        })
    }

    fn number<E: de::Error>(&self, magnitude: f64) -> Result<(), E> {
        let result = if magnitude.is_finite() && magnitude < NUMBER_LIMIT {
            Ok(())
        } else {
            fail(self.at, "a number of a million or more")
        };
        self.report(result)
    }
}

impl<'de> de::DeserializeSeed<'de> for Check<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> de::Visitor<'de> for Check<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a sanitized snapshot")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.number(n.unsigned_abs() as f64)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.number(n as f64)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<(), E> {
        self.number(n.abs())
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        let result = if self.free_keys {
            check_text(text).or_else(|problem| fail(self.at, problem))
        } else {
            check_string(self.at, text)
        };
        self.report(result)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for i in 0.. {
            let at = Location::Index(self.at, i);
            let item = Check {
                at: &at,
                free_keys: self.free_keys,
                problem: self.problem,
            };
            if seq.next_element_seed(item)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(Key)? {
            let at = Location::Key(self.at, &key);
            let key_ok = if self.free_keys {
                check_text(&key).or_else(|problem| fail(&at, format!("key: {problem}")))
            } else if super::contract::is_field_name(key.as_ref()) {
                Ok(())
            } else {
                fail(&at, "not a field of the schema")
            };
            self.report(key_ok)?;
            map.next_value_seed(Check {
                at: &at,
                free_keys: self.free_keys || matches!(key.as_ref(), "args" | "preferences"),
                problem: self.problem,
            })?;
        }
        Ok(())
    }
}

/// A map key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> de::DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Cow<'de, str>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> de::Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(key.to_string()))
    }
}

/// Checks one line of sanitized JSONL: a JSON object whose every key and
/// value is known to be safe.
pub fn check_line(line: &str) -> Result<(), Unsafe> {
    if !line.trim_start().starts_with('{') {
        return fail(&Location::Root, "a record must be a JSON object");
    }
    let problem = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(line);
    let check = Check {
        at: &Location::Root,
        free_keys: false,
        problem: &problem,
    };
    let parsed = de::DeserializeSeed::deserialize(check, &mut deserializer).and_then(|()| deserializer.end());
    match (parsed, problem.into_inner()) {
        (_, Some(problem)) => Err(problem),
        (Err(_), None) => fail(&Location::Root, "not a JSON record"),
        (Ok(()), None) => Ok(()),
    }
}

/// Checks a sanitized snapshot as it would be written.
pub fn check_snapshot(snapshot: &schema::Snapshot) -> Result<(), Unsafe> {
    check_line(&serde_json::to_string(snapshot).expect("a snapshot serializes"))
}

/// What [`verify_dir`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Records in the files (those passed earlier included).
    pub records: usize,
    /// Files parsed and checked this time.
    pub parsed: usize,
}

/// Re-reads every `*.jsonl` file under `dir` and checks every record, in
/// parallel.
///
/// With `passed` (a memo file), a file whose exact bytes this build of
/// fabric passed before is not parsed again: its bytes are hashed, and the
/// memo names the hashes that passed. A file with other bytes is checked in
/// full. The memo is rewritten with what passed when everything did.
pub fn verify_dir(dir: &Path, passed: Option<&Path>) -> Result<Verified, VerifyError> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| VerifyError::Unreadable {
            file: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        if entry.file_type().is_file() {
            files.push(entry.into_path());
        }
    }
    let unreadable = |file: &Path, message: String| VerifyError::Unreadable {
        file: file.to_path_buf(),
        message,
    };
    for file in &files {
        if file.extension().is_none_or(|e| e != "jsonl") {
            return Err(unreadable(file, "not a sanitized session file (*.jsonl)".into()));
        }
    }
    let names: Vec<String> = files
        .iter()
        .map(|file| file.strip_prefix(dir).unwrap_or(file).to_string_lossy().into_owned())
        .collect();
    let domain = fabric_core::digest::KeyEncoder::new("fabric-privacy-passed-v1")
        .binary()
        .finish();
    let hashes: Vec<Option<Digest>> = match passed {
        Some(_) => files
            .par_iter()
            .map(|file| {
                let size = std::fs::metadata(file)
                    .map_err(|e| unreadable(file, e.to_string()))?
                    .len();
                let hash = fabric_core::hash::hash_file(file, size).map_err(|e| unreadable(file, e.to_string()))?;
                Ok(Some(hash))
            })
            .collect::<Result<_, VerifyError>>()?,
        None => vec![None; files.len()],
    };
    let mut memo = passed.map(|path| MemoReader::open(path, &domain));
    let known: Vec<Option<usize>> = names
        .iter()
        .zip(&hashes)
        .map(|(name, hash)| {
            let bytes = memo.as_mut()?.take(name, hash.as_ref()?)?;
            Some(Fields::new(&bytes).number()? as usize)
        })
        .collect();
    let counts = files
        .par_iter()
        .zip(known)
        .map(|(file, known)| match known {
            Some(records) => Ok((records, 0)),
            None => check_file(file).map(|records| (records, 1)),
        })
        .collect::<Result<Vec<(usize, usize)>, VerifyError>>()?;
    if let Some(path) = passed {
        // An accelerator: a memo that cannot be written is only missed next time.
        let _ = remember_passed(path, &domain, &names, &hashes, &counts);
    }
    Ok(Verified {
        records: counts.iter().map(|c| c.0).sum(),
        parsed: counts.iter().map(|c| c.1).sum(),
    })
}

/// Checks every record of one sanitized session file; how many it holds.
fn check_file(file: &Path) -> Result<usize, VerifyError> {
    let text = std::fs::read_to_string(file).map_err(|e| VerifyError::Unreadable {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut records = 0;
    for (n, line) in text.lines().enumerate() {
        check_line(line).map_err(|problem| VerifyError::Unsafe {
            file: file.to_path_buf(),
            line: n + 1,
            problem,
        })?;
        records += 1;
    }
    Ok(records)
}

/// Writes the memo of the files that passed: name, content hash, records.
fn remember_passed(
    path: &Path,
    domain: &Digest,
    names: &[String],
    hashes: &[Option<Digest>],
    counts: &[(usize, usize)],
) -> std::io::Result<()> {
    let mut writer = MemoWriter::create(path, domain)?;
    for ((name, hash), (records, _)) in names.iter().zip(hashes).zip(counts) {
        if let Some(hash) = hash {
            let mut fields = FieldWriter::default();
            fields.number(*records as u64);
            writer.put(name, hash, &fields.finish())?;
        }
    }
    writer.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
        assert_eq!(check_line(&good.to_string()), Ok(()));
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
            assert!(check_line(&record.to_string()).is_err(), "{record}");
        }
        for line in ["[1]", "\"text\"", "{\"mode\": \"active\"} trailing", "{\"mode\": "] {
            assert!(check_line(line).is_err(), "{line}");
        }
    }

    #[test]
    fn a_file_passed_before_is_not_parsed_again_and_changed_bytes_are() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let memo = dir.path().join("passed");
        let good = r#"{"sessionId":"0123456789abcdef0123456789abcdef","harmonicState":{"key":"F#","scale":"minor"}}"#;
        std::fs::write(out.join("a.jsonl"), format!("{good}\n{good}\n")).unwrap();
        std::fs::write(out.join("b.jsonl"), format!("{good}\n")).unwrap();
        let first = verify_dir(&out, Some(&memo)).unwrap();
        assert_eq!(first, Verified { records: 3, parsed: 2 });
        let again = verify_dir(&out, Some(&memo)).unwrap();
        assert_eq!(
            again,
            Verified { records: 3, parsed: 0 },
            "passed bytes are not parsed again"
        );
        // Other bytes under a name that passed: checked, and a leak caught.
        let leak = good.replace("minor", "Priya");
        std::fs::write(out.join("b.jsonl"), format!("{leak}\n")).unwrap();
        assert!(matches!(
            verify_dir(&out, Some(&memo)),
            Err(VerifyError::Unsafe { line: 1, .. })
        ));
        assert!(verify_dir(&out, None).is_err(), "and without a memo");
        std::fs::write(out.join("b.jsonl"), format!("{good}\n{good}\n")).unwrap();
        assert_eq!(
            verify_dir(&out, Some(&memo)).unwrap(),
            Verified { records: 4, parsed: 1 }
        );
    }
}
