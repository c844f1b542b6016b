//! `fabric verify`: the checks CI runs. Every failure is collected and
//! reported, not only the first.
//!
//! - every file of every release hashes to its manifest, and nothing else
//!   sits in a release directory;
//! - every release has one changelog entry, newest published first, and
//!   every entry a release; each entry's claims are read back and checked
//!   against the release on disk (the manifest file's hash, the shipped
//!   models' hashes, the datasets, scores and review of the manifest, the
//!   note), not by writing the entry again;
//! - `Fabric.lock` parses, and (`--outs`) each recorded out is in the
//!   workspace or the store with the recorded hash;
//! - (`--fresh`) nothing is stale;
//! - (`--reproduce STAGE…`) the stages re-run in a scratch copy with an
//!   empty cache produce byte-identical outs;
//! - a release that says it was reviewed carries a well-formed record of a
//!   person's approval of exactly the file it ships, and (`--require-review`)
//!   the newest release of each name was reviewed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::hash::{Content, Hasher, TreeEntry};
use crate::lock::Lock;
use crate::paths::RelPath;
use crate::release::{self, CHANGELOG, MANIFEST, NOTE};
use crate::store::Store;

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// Which check: `release`, `changelog`, `lock`, `fresh`, `reproduce`.
    pub check: &'static str,
    /// What it is about (a path, a release, a stage).
    pub subject: String,
    /// What is wrong.
    pub message: String,
}

fn failure(check: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Failure {
    Failure {
        check,
        subject: subject.into(),
        message: message.into(),
    }
}

/// Release files against their manifests.
pub fn releases(root: &Path) -> (usize, Vec<Failure>) {
    let mut failures = Vec::new();
    let found = match release::releases(root) {
        Ok(found) => found,
        Err(error) => return (0, vec![failure("release", release::ARTIFACTS, format!("{error:#}"))]),
    };
    for (dir, manifest) in &found {
        let shown = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        for (name, record) in &manifest.files {
            let path = dir.join(name);
            match std::fs::metadata(&path) {
                Err(_) => failures.push(failure("release", format!("{shown}/{name}"), "missing")),
                Ok(meta) => match crate::hash::hash_file(&path, meta.len()) {
                    Ok(hash) if hash == record.hash && meta.len() == record.size => {}
                    Ok(hash) => failures.push(failure(
                        "release",
                        format!("{shown}/{name}"),
                        format!(
                            "hashes to {hash} ({} bytes); the manifest says {} ({} bytes)",
                            meta.len(),
                            record.hash,
                            record.size
                        ),
                    )),
                    Err(error) => failures.push(failure("release", format!("{shown}/{name}"), error.to_string())),
                },
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != MANIFEST && name != NOTE && !manifest.files.contains_key(&name) {
                    failures.push(failure("release", format!("{shown}/{name}"), "is not in the manifest"));
                }
            }
        }
    }
    (found.len(), failures)
}

/// Recorded reviews against the files they approve; with `require`, the
/// newest release of each name must have one.
pub fn reviews(root: &Path, require: bool) -> Vec<Failure> {
    let Ok(found) = release::releases(root) else {
        return Vec::new();
    };
    let mut failures = Vec::new();
    let mut newest = BTreeSet::new();
    for (dir, manifest) in &found {
        let shown = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
        let is_newest = newest.insert(manifest.name.clone());
        let release::ReviewStatus::Approved {
            file,
            reviewer,
            at,
            samples,
        } = &manifest.review
        else {
            if require && is_newest {
                failures.push(failure(
                    "review",
                    shown,
                    "unreviewed: no person has approved its outputs (fabric review export, then import a person's verdicts, and release again)",
                ));
            }
            continue;
        };
        let record = match crate::review::ReviewRecord::read(&dir.join(crate::review::RECORD)) {
            Ok(record) => record,
            Err(error) => {
                failures.push(failure("review", shown, format!("{error:#}")));
                continue;
            }
        };
        let mut problems = record.problems();
        if !record.approved() {
            problems.push("the record does not approve every sample".into());
        }
        match manifest.files.get(file) {
            Some(shipped) if shipped.hash == record.subject.blake3 && record.subject.file == *file => {}
            _ => problems.push(format!("the record is not about the shipped `{file}`")),
        }
        if record.reviewer != *reviewer || record.at != *at || record.samples.len() != *samples {
            problems.push("the manifest and the record disagree on who, when or how many".into());
        }
        for problem in problems {
            failures.push(failure("review", format!("{shown}/{}", crate::review::RECORD), problem));
        }
    }
    failures
}

/// One changelog entry as written: its claims (the lines between the title
/// and the first blank line) and its note (everything after).
struct Entry {
    claims: Vec<String>,
    note: String,
}

/// Splits a changelog into its `## NAME VERSION` entries, in the order written.
fn changelog_entries(text: &str) -> Vec<(String, Entry)> {
    let mut entries = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            entries.extend(current.take());
            current = Some((title.trim().to_string(), Vec::new()));
        } else if let Some((_, body)) = &mut current {
            body.push(line);
        }
    }
    entries.extend(current);
    entries
        .into_iter()
        .map(|(title, body)| {
            let start = body.iter().position(|l| !l.trim().is_empty()).unwrap_or(body.len());
            let end = body[start..]
                .iter()
                .position(|l| l.trim().is_empty())
                .map_or(body.len(), |n| start + n);
            let entry = Entry {
                claims: body[start..end].iter().map(|l| l.to_string()).collect(),
                note: body[end..].join("\n").trim().to_string(),
            };
            (title, entry)
        })
        .collect()
}

/// `` `A`MIDDLE`B` `` → `(A, B)`.
fn two_quoted<'a>(text: &'a str, middle: &str) -> Option<(&'a str, &'a str)> {
    let (a, rest) = text.strip_prefix('`')?.split_once('`')?;
    let b = rest.strip_prefix(middle)?.strip_prefix('`')?.strip_suffix('`')?;
    (!b.contains('`')).then_some((a, b))
}

/// Whether `shown` (as the changelog prints a score: `0.287`, `89.1%`,
/// `1`) is `value` to the digits it shows: a plain decimal number, `%` for a
/// percentage; with no decimals it must be exact.
fn shows(shown: &str, value: f64) -> bool {
    let (number, scale) = match shown.strip_suffix('%') {
        Some(number) => (number, 100.0),
        None => (shown, 1.0),
    };
    let Ok(read) = number.parse::<f64>() else {
        return false;
    };
    if !value.is_finite() {
        return read == value * scale || (read.is_nan() && value.is_nan());
    }
    let digits = number.strip_prefix('-').unwrap_or(number);
    let (whole, decimals) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !plain(whole) || !plain(decimals) || digits.ends_with('.') {
        return false;
    }
    let half_a_digit = if decimals.is_empty() {
        0.0
    } else {
        0.5 * 10f64.powi(-(decimals.len() as i32))
    };
    (read - value * scale).abs() <= half_a_digit * (1.0 + 1e-9)
}

/// What an entry claims that its release contradicts. Each claim is read
/// back from the text and checked against the release as it is on disk —
/// the manifest file's own hash, the shipped models' hashes, the manifest's
/// datasets, scores and review, the note — not by writing the entry again.
fn entry_problems(
    root: &Path,
    dir: &Path,
    manifest: &release::Manifest,
    entry: &Entry,
    headlines: &dyn release::Headlines,
) -> Vec<String> {
    let mut problems = Vec::new();
    let relative = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
    let manifest_path = format!("{relative}/{MANIFEST}");
    let (mut named_manifest, mut named_review) = (0, 0);
    let mut models = BTreeSet::new();
    let mut datasets = BTreeMap::new();
    let mut scores: Option<BTreeMap<String, String>> = None;
    for claim in &entry.claims {
        if let Some(rest) = claim.strip_prefix("- manifest: ") {
            named_manifest += 1;
            match two_quoted(rest, " blake3 ") {
                Some((path, _)) if path != manifest_path => {
                    problems.push(format!("it names `{path}`, not this release's `{manifest_path}`"))
                }
                Some((_, claimed)) => match std::fs::read(dir.join(MANIFEST)) {
                    Ok(bytes) if blake3::hash(&bytes).to_hex().as_str() == claimed => {}
                    Ok(bytes) => problems.push(format!(
                        "it says {MANIFEST} hashes to {claimed}; it hashes to {}",
                        blake3::hash(&bytes).to_hex()
                    )),
                    Err(error) => problems.push(format!("{manifest_path}: {error}")),
                },
                None => problems.push(format!(
                    "cannot read `{claim}` (the form is - manifest: `PATH` blake3 `HASH`)"
                )),
            }
        } else if let Some(rest) = claim.strip_prefix("- model: ") {
            let Some((name, claimed)) = two_quoted(rest, " blake3 ") else {
                problems.push(format!(
                    "cannot read `{claim}` (the form is - model: `FILE` blake3 `HASH`)"
                ));
                continue;
            };
            if !models.insert(name.to_string()) {
                problems.push(format!("it names the model `{name}` twice"));
            } else if !manifest.files.contains_key(name) || !headlines.is_model(name) {
                problems.push(format!("it names `{name}`, which is not a model the release ships"));
            } else {
                let path = dir.join(name);
                match std::fs::metadata(&path).and_then(|meta| crate::hash::hash_file(&path, meta.len())) {
                    Ok(hash) if hash.to_string() == claimed => {}
                    Ok(hash) => problems.push(format!(
                        "it says `{name}` hashes to {claimed}; the shipped file hashes to {hash}"
                    )),
                    Err(error) => problems.push(format!("`{name}`: {error}")),
                }
            }
        } else if let Some(rest) = claim.strip_prefix("- dataset: ") {
            match two_quoted(rest, " hash ") {
                Some((card, hash)) if datasets.insert(card.to_string(), hash.to_string()).is_some() => {
                    problems.push(format!("it names the dataset card `{card}` twice"))
                }
                Some(_) => {}
                None => problems.push(format!(
                    "cannot read `{claim}` (the form is - dataset: `CARD` hash `HASH`)"
                )),
            }
        } else if let Some(rest) = claim.strip_prefix("- scores: ") {
            if scores.is_some() {
                problems.push("it gives the scores twice".into());
            }
            let mut read = BTreeMap::new();
            for item in rest.split(", ") {
                match item.rsplit_once(' ') {
                    Some((words, shown)) => {
                        if read.insert(words.replace(' ', "_"), shown.to_string()).is_some() {
                            problems.push(format!("it gives the score `{words}` twice"));
                        }
                    }
                    None => problems.push(format!("cannot read the score `{item}` (the form is NAME VALUE)")),
                }
            }
            scores = Some(read);
        } else if let Some(rest) = claim.strip_prefix("- review: ") {
            named_review += 1;
            if let Some(problem) = review_problem(rest, &manifest.review) {
                problems.push(problem);
            }
        } else {
            problems.push(format!(
                "`{claim}` is not a changelog claim (manifest, model, dataset, scores, review)"
            ));
        }
    }
    if named_manifest != 1 {
        problems.push(format!("it has {named_manifest} manifest lines, not one"));
    }
    if named_review != 1 {
        problems.push(format!("it has {named_review} review lines, not one"));
    }
    for name in manifest.files.keys().filter(|name| headlines.is_model(name)) {
        if !models.contains(name) {
            problems.push(format!("it does not name the shipped model `{name}`"));
        }
    }
    if datasets != manifest.datasets {
        problems.push(format!(
            "its datasets {datasets:?} are not the manifest's {:?}",
            manifest.datasets
        ));
    }
    let scores = scores.unwrap_or_default();
    for (name, value) in &manifest.scores {
        match scores.get(name) {
            None => problems.push(format!(
                "it does not give the score `{}` ({value})",
                name.replace('_', " ")
            )),
            Some(shown) if !shows(shown, *value) => problems.push(format!(
                "it gives `{}` as {shown}; the manifest says {value}",
                name.replace('_', " ")
            )),
            Some(_) => {}
        }
    }
    for name in scores.keys().filter(|name| !manifest.scores.contains_key(*name)) {
        problems.push(format!(
            "it gives a score `{}` the manifest does not have",
            name.replace('_', " ")
        ));
    }
    let note = std::fs::read_to_string(dir.join(NOTE)).unwrap_or_default();
    if !note.trim().lines().eq(entry.note.lines()) {
        let differs = note
            .trim()
            .lines()
            .zip(entry.note.lines().chain(std::iter::repeat("")))
            .find(|(n, e)| n != e)
            .map(|(n, e)| format!(": `{e}` should be `{n}`"))
            .unwrap_or_else(|| ": it has other lines after it".into());
        problems.push(format!("its note is not the release's {NOTE}{differs}"));
    }
    problems
}

/// A `- review:` claim read back: `None` if it cannot be read, `Some(None)`
/// for unreviewed, else the file, reviewer, date and sample count it names.
fn read_review(claim: &str) -> Option<Option<(&str, &str, &str, usize)>> {
    if claim == release::UNREVIEWED {
        return Some(None);
    }
    let (file, rest) = claim.strip_prefix('`')?.split_once("` approved by ")?;
    let rest = rest.strip_suffix(&format!(" samples, `{}`)", crate::review::RECORD))?;
    let (who_when, samples) = rest.rsplit_once(" (")?;
    let (reviewer, at) = who_when.rsplit_once(" on ")?;
    Some(Some((file, reviewer, at, samples.parse().ok()?)))
}

/// What a `- review:` claim gets wrong about the manifest's review status.
fn review_problem(claim: &str, review: &release::ReviewStatus) -> Option<String> {
    let read = read_review(claim);
    match (read, review) {
        (None, _) => Some(format!(
            "cannot read `- review: {claim}` (the form is {} or `FILE` approved by WHO on WHEN (N samples, `REVIEW.json`))",
            release::UNREVIEWED
        )),
        (Some(None), release::ReviewStatus::Unreviewed) => None,
        (
            Some(Some((f, r, a, s))),
            release::ReviewStatus::Approved {
                file,
                reviewer,
                at,
                samples,
            },
        ) if f == file && r == reviewer && a == at && s == *samples => None,
        (Some(_), release::ReviewStatus::Unreviewed) => {
            Some("it says a person reviewed it; the manifest says unreviewed".into())
        }
        (
            Some(_),
            release::ReviewStatus::Approved {
                file,
                reviewer,
                at,
                samples,
            },
        ) => Some(format!(
            "its review is not the manifest's: `{file}` approved by {reviewer} on {at} ({samples} samples)"
        )),
    }
}

/// The changelog against the releases: each release has exactly one entry,
/// newest published first, whose every claim holds (see [`entry_problems`]),
/// and each entry has a release.
pub fn changelog(root: &Path, headlines: &dyn release::Headlines) -> Vec<Failure> {
    let mut failures = Vec::new();
    let found = match release::releases(root) {
        Ok(found) => found,
        Err(_) => return failures,
    };
    let path = root.join(release::ARTIFACTS).join(CHANGELOG);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(_) if found.is_empty() => return failures,
        Err(_) => {
            return vec![failure(
                "changelog",
                format!("{}/{CHANGELOG}", release::ARTIFACTS),
                "missing",
            )];
        }
    };
    let releases: BTreeMap<String, (&std::path::PathBuf, &release::Manifest)> = found
        .iter()
        .map(|(dir, manifest)| (format!("{} {}", manifest.name, manifest.version), (dir, manifest)))
        .collect();
    let mut seen = BTreeSet::new();
    let mut previous: Option<(String, u64)> = None;
    for (key, entry) in changelog_entries(&text) {
        let Some((dir, manifest)) = releases.get(&key) else {
            failures.push(failure("changelog", key, "entry has no release manifest"));
            continue;
        };
        if !seen.insert(key.clone()) {
            failures.push(failure("changelog", key, "has two entries"));
            continue;
        }
        if let Some((listed_before, sequence)) = &previous
            && manifest.sequence > *sequence
        {
            failures.push(failure(
                "changelog",
                key.clone(),
                format!("is listed after `{listed_before}`, which was published before it (newest first)"),
            ));
        }
        previous = Some((key.clone(), manifest.sequence));
        for problem in entry_problems(root, dir, manifest, &entry, headlines) {
            failures.push(failure(
                "changelog",
                key.clone(),
                format!("entry does not match the release: {problem}"),
            ));
        }
    }
    for key in releases.keys().filter(|key| !seen.contains(*key)) {
        failures.push(failure("changelog", key.clone(), "has no changelog entry"));
    }
    failures
}

/// Each recorded out is in the workspace or the store with its hash.
pub fn lock_outs(lock: &Lock, store: &Store, hasher: &Hasher) -> Vec<Failure> {
    let mut failures = Vec::new();
    for (stage, entry) in &lock.stage {
        for (path, record) in &entry.outs {
            let Ok(relative) = RelPath::new(path) else {
                failures.push(failure("lock", format!("{stage}: {path}"), "is not a workspace path"));
                continue;
            };
            let in_workspace = hasher.hash(&relative).ok().and_then(|c| c.digest()) == Some(record.hash);
            let in_store = store.holds([record]);
            if !in_workspace && !in_store {
                failures.push(failure(
                    "lock",
                    format!("{stage}: {path}"),
                    format!(
                        "neither the workspace nor the store holds the recorded content {}",
                        record.hash.short()
                    ),
                ));
            }
        }
    }
    failures
}

/// Files that differ between two versions of an out.
pub fn differing_files(a: &Content, b: &Content) -> Vec<String> {
    match (a, b) {
        (Content::Dir { tree: left, .. }, Content::Dir { tree: right, .. }) => {
            let index = |tree: &crate::hash::Tree| -> BTreeMap<String, TreeEntry> {
                tree.entries.iter().map(|e| (e.path().to_string(), e.clone())).collect()
            };
            let (left, right) = (index(left), index(right));
            let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
            names
                .into_iter()
                .filter(|n| left.get(*n) != right.get(*n))
                .cloned()
                .collect()
        }
        _ if a.digest() == b.digest() => Vec::new(),
        _ => vec![String::new()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_score_holds_to_the_digits_it_shows_and_no_further() {
        assert!(shows("89.1%", 0.891));
        assert!(shows("89.1%", 0.89149));
        assert!(!shows("89.1%", 0.8916), "rounds to 89.2%");
        assert!(shows("0.287", 0.2874));
        assert!(!shows("0.287", 0.2876));
        assert!(shows("1.24", 1.2449));
        assert!(!shows("3", 0.03), "not a percentage: 3, not 3%");
        assert!(!shows("n/a", 0.5));
        assert!(!shows("1", 0.75), "no decimals: exact");
        assert!(shows("1", 1.0));
        assert!(shows("75%", 0.75));
        assert!(!shows("7.5e-1", 0.75));
        assert!(!shows("+0.75", 0.75));
        assert!(!shows(".75", 0.75));
        assert!(shows("NaN%", f64::NAN));
        assert!(!shows("NaN", 0.5));
    }

    #[test]
    fn entries_are_split_into_claims_and_note() {
        let text = "# Changelog\n\nPreamble.\n\n## a v2\n\n- manifest: x\n- scores: y 1\n\n### What\nIt.\n\n## a v1\n\n- review: unreviewed\n";
        let entries = changelog_entries(text);
        let titles: Vec<&str> = entries.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["a v2", "a v1"]);
        assert_eq!(entries[0].1.claims, ["- manifest: x", "- scores: y 1"]);
        assert_eq!(entries[0].1.note, "### What\nIt.");
        assert_eq!(entries[1].1.claims, ["- review: unreviewed"]);
        assert_eq!(entries[1].1.note, "");
    }
}
