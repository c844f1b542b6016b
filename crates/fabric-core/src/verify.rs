//! `fabric verify`: the checks CI runs. Every failure is collected and
//! reported, not only the first.
//!
//! - every file of every release hashes to its manifest, and nothing else
//!   sits in a release directory;
//! - every manifest has a changelog entry that matches it exactly, and every
//!   changelog entry has a manifest;
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

/// Splits a changelog into its `## NAME VERSION` entries.
fn changelog_entries(text: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        if let Some(title) = line.strip_prefix("## ") {
            if let Some((key, body)) = current.take() {
                entries.insert(key, body);
            }
            current = Some((title.trim().to_string(), line.to_string()));
        } else if let Some((_, body)) = &mut current {
            body.push_str(line);
        }
    }
    if let Some((key, body)) = current {
        entries.insert(key, body);
    }
    entries
}

/// The changelog against the manifests, entry by entry (scores shown as
/// `headlines` shows them).
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
    let mut entries = changelog_entries(&text);
    for (dir, manifest) in &found {
        let key = format!("{} {}", manifest.name, manifest.version);
        let note = std::fs::read_to_string(dir.join(NOTE)).unwrap_or_default();
        let expected = release::entry(dir, manifest, &note, root, headlines);
        match entries.remove(&key) {
            None => failures.push(failure("changelog", key, "has no changelog entry")),
            Some(actual) => {
                if actual.trim_end() != expected.trim_end() {
                    let line = expected
                        .lines()
                        .zip(actual.lines().chain(std::iter::repeat("")))
                        .find(|(e, a)| e != a)
                        .map(|(e, a)| format!("`{a}` should be `{e}`"))
                        .unwrap_or_else(|| "has extra lines".into());
                    failures.push(failure(
                        "changelog",
                        key,
                        format!("entry does not match the manifest: {line}"),
                    ));
                }
            }
        }
    }
    for key in entries.keys() {
        failures.push(failure("changelog", key.clone(), "entry has no release manifest"));
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
