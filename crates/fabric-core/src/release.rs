//! Releases: immutable, hash-verified versions under `artifacts/NAME/VERSION/`,
//! and `artifacts/CHANGELOG.md`.
//!
//! A release directory holds the shipped files, `NOTE.md` (the human-written
//! what/why/how) and `MANIFEST.toml`: each file's BLAKE3 hash and size, the
//! dataset hashes, the evaluation scores, the fingerprints of the stages that
//! produced them, their params, and the fabric version. No timestamps: the
//! same inputs publish the same bytes.
//!
//! Publishing a version that exists is a no-op when the content is the same
//! and an error when it differs: releases are immutable. The changelog is a
//! pure function of the manifests and notes (newest first, by the sequence
//! number each manifest carries), so it is regenerated, never hand-appended,
//! and `fabric verify` can check every entry against its manifest.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::hash::hash_file;
use crate::lock::LockEntry;
use crate::manifest::matrix::is_matrix_param;

/// The directory holding every release.
pub const ARTIFACTS: &str = "artifacts";
/// The generated changelog, inside [`ARTIFACTS`].
pub const CHANGELOG: &str = "CHANGELOG.md";
/// The manifest file of a release.
pub const MANIFEST: &str = "MANIFEST.toml";
/// The note file of a release.
pub const NOTE: &str = "NOTE.md";
/// What the changelog says of a release no person has reviewed.
pub const UNREVIEWED: &str = "unreviewed (no person has approved its outputs)";

/// A shipped file's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// BLAKE3 of the content.
    pub hash: Digest,
    /// Bytes.
    pub size: u64,
}

/// `MANIFEST.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Release name (`prime-brain`).
    pub name: String,
    /// Version (`v1`).
    pub version: String,
    /// Order of publication across all releases (changelog order).
    pub sequence: u64,
    /// The fabric version that published it.
    pub fabric_version: String,
    /// Shipped files by name.
    pub files: BTreeMap<String, FileRecord>,
    /// Dataset hashes, by the card file they come from.
    #[serde(default)]
    pub datasets: BTreeMap<String, String>,
    /// Headline evaluation scores of the model.
    #[serde(default)]
    pub scores: BTreeMap<String, f64>,
    /// Fingerprints of the stages that produced the files.
    #[serde(default)]
    pub stages: BTreeMap<String, Digest>,
    /// Params those stages used (canonical JSON values).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Whether a person approved a shipped file's outputs ([`crate::review`]).
    #[serde(default)]
    pub review: ReviewStatus,
}

/// A release's human review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum ReviewStatus {
    /// No person approved it.
    #[default]
    Unreviewed,
    /// A person approved every sampled output of `file`; the record ships
    /// as `REVIEW.json`.
    Approved {
        /// The reviewed file.
        file: String,
        /// Who.
        reviewer: String,
        /// When.
        at: String,
        /// Samples reviewed.
        samples: usize,
    },
}

impl Manifest {
    /// The content identity: the files, dataset hashes and scores. Provenance
    /// (stage fingerprints, params, fabric version) may differ when a step's
    /// version changes without changing its output; the recorded manifest stays.
    fn same_content(&self, other: &Manifest) -> bool {
        self.name == other.name
            && self.files == other.files
            && self.datasets == other.datasets
            && self.scores == other.scores
            && self.review == other.review
    }

    /// Reads a manifest.
    pub fn read(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message().trim()))
    }
}

/// What to publish.
pub struct Publication<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// Release name.
    pub name: &'a str,
    /// Version.
    pub version: &'a str,
    /// Files to ship (their file names become the names in the release).
    pub files: &'a [PathBuf],
    /// The note fragment, consumed on a new release.
    pub note: &'a Path,
    /// Lock entries of the producing stages.
    pub upstream: &'a BTreeMap<String, std::sync::Arc<LockEntry>>,
    /// Where review records are kept, if the release looks for one.
    pub reviews: Option<&'a Path>,
    /// What to headline from the shipped files.
    pub headlines: &'a dyn Headlines,
}

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    /// Release name.
    pub name: String,
    /// Version.
    pub version: String,
    /// BLAKE3 of `MANIFEST.toml`.
    pub manifest: Digest,
    /// False when the identical release already existed (not written: the
    /// receipt must read the same wherever the pipeline reruns).
    #[serde(skip)]
    pub new: bool,
    /// Why nothing was published: the files differ from the version already
    /// published (an experiment, or a version not bumped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_back: Option<String>,
}

/// True for `v1`, `v1.2`, `v1.2.3` or a name of letters, digits, `.`, `_`, `-`.
pub fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// What a release headlines from the files it ships, declared by the domain
/// that writes those files (the core knows no file format): dataset hashes
/// and scores go into `MANIFEST.toml` and the changelog. [`NoHeadlines`]
/// headlines nothing.
pub trait Headlines: Send + Sync {
    /// The dataset hash a shipped JSON document records, if it is a dataset card.
    fn dataset_hash(&self, document: &serde_json::Value) -> Option<String>;
    /// The scores a shipped JSON document holds, by name (none if it is not
    /// a score report). Names are `snake_case`: the changelog writes their
    /// `_` as spaces and `fabric verify` reads them back.
    fn scores(&self, document: &serde_json::Value) -> BTreeMap<String, f64>;
    /// How the changelog writes score `name`: a plain decimal number, with
    /// `%` when it is shown as a percentage (`fabric verify` reads it back
    /// to the digits it shows).
    fn show(&self, name: &str, value: f64) -> String;
    /// Whether the shipped file `name` is a model (named with its hash in
    /// the changelog).
    fn is_model(&self, name: &str) -> bool;
}

/// Headlines nothing: a release of files only.
pub struct NoHeadlines;

impl Headlines for NoHeadlines {
    fn dataset_hash(&self, _: &serde_json::Value) -> Option<String> {
        None
    }
    fn scores(&self, _: &serde_json::Value) -> BTreeMap<String, f64> {
        BTreeMap::new()
    }
    fn show(&self, _: &str, value: f64) -> String {
        value.to_string()
    }
    fn is_model(&self, _: &str) -> bool {
        false
    }
}

/// Builds the manifest of the files without writing anything.
fn manifest(publication: &Publication, sequence: u64) -> anyhow::Result<Manifest> {
    let mut files = BTreeMap::new();
    let mut datasets = BTreeMap::new();
    let mut scores = BTreeMap::new();
    for path in publication.files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| anyhow::anyhow!("{} has no file name", path.display()))?;
        anyhow::ensure!(
            path.is_file(),
            "release file {} is missing or not a file",
            path.display()
        );
        anyhow::ensure!(
            !files.contains_key(&name) && name != MANIFEST && name != NOTE && name != crate::review::RECORD,
            "two release files are called `{name}` (or it clashes with {MANIFEST}/{NOTE}/{})",
            crate::review::RECORD
        );
        let size = std::fs::metadata(path)?.len();
        files.insert(
            name.clone(),
            FileRecord {
                hash: hash_file(path, size)?,
                size,
            },
        );
        if name.ends_with(".json")
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(path)?)
        {
            if let Some(hash) = publication.headlines.dataset_hash(&value) {
                datasets.insert(name.clone(), hash);
            }
            scores.extend(publication.headlines.scores(&value));
        }
    }
    // Workspace params have one value however many stages read them; a
    // matrix value belongs to one expansion, whose name (in `stages`)
    // already says it.
    let mut params = BTreeMap::new();
    for entry in publication.upstream.values() {
        let workspace_params = entry.inputs.params.iter().filter(|(name, _)| !is_matrix_param(name));
        params.extend(workspace_params.map(|(name, value)| (name.clone(), value.clone())));
    }
    let mut review = ReviewStatus::Unreviewed;
    if let Some((_, record)) = approval(publication, &files)? {
        let bytes = review_bytes(&record)?;
        files.insert(
            crate::review::RECORD.to_string(),
            FileRecord {
                hash: Digest::of(&bytes),
                size: bytes.len() as u64,
            },
        );
        review = ReviewStatus::Approved {
            file: record.subject.file.clone(),
            reviewer: record.reviewer.clone(),
            at: record.at.clone(),
            samples: record.samples.len(),
        };
    }
    Ok(Manifest {
        name: publication.name.to_string(),
        version: publication.version.to_string(),
        sequence,
        fabric_version: env!("CARGO_PKG_VERSION").to_string(),
        files,
        datasets,
        scores,
        stages: publication
            .upstream
            .iter()
            .map(|(name, entry)| (name.clone(), entry.fingerprint))
            .collect(),
        params,
        review,
    })
}

/// The approving review record of one of the shipped files, if the
/// publication looks for reviews and a person approved one.
fn approval(
    publication: &Publication,
    files: &BTreeMap<String, FileRecord>,
) -> anyhow::Result<Option<(PathBuf, crate::review::ReviewRecord)>> {
    let Some(dir) = publication.reviews else {
        return Ok(None);
    };
    for (name, record) in files {
        if let Some((path, review)) = crate::review::approval_for(dir, &record.hash)?
            && review.subject.file == *name
        {
            return Ok(Some((path, review)));
        }
    }
    Ok(None)
}

/// A review record as a release ships it.
fn review_bytes(record: &crate::review::ReviewRecord) -> anyhow::Result<Vec<u8>> {
    Ok((serde_json::to_string_pretty(record)? + "\n").into_bytes())
}

/// Every release under `artifacts/`: (directory, manifest), newest first.
pub fn releases(root: &Path) -> anyhow::Result<Vec<(PathBuf, Manifest)>> {
    let mut found = Vec::new();
    let artifacts = root.join(ARTIFACTS);
    let Ok(names) = std::fs::read_dir(&artifacts) else {
        return Ok(found);
    };
    for name in names.flatten().filter(|e| e.path().is_dir()) {
        for version in std::fs::read_dir(name.path())?.flatten() {
            let manifest = version.path().join(MANIFEST);
            if manifest.is_file() {
                found.push((version.path(), Manifest::read(&manifest)?));
            }
        }
    }
    found.sort_by(|a, b| b.1.sequence.cmp(&a.1.sequence).then(a.0.cmp(&b.0)));
    Ok(found)
}

/// Checks that a note says what, why and how, and has no `## ` line (in
/// the changelog that would start another release's entry).
pub fn check_note(text: &str) -> Result<(), String> {
    if let Some(line) = text.lines().position(|l| l.starts_with("## ")) {
        return Err(format!(
            "line {}: `## ` starts a release's entry in the changelog; use `### ` for the note's headings",
            line + 1
        ));
    }
    let lower = text.to_lowercase();
    let missing: Vec<&str> = ["what", "why", "how"]
        .into_iter()
        .filter(|word| {
            !lower
                .lines()
                .any(|l| l.trim_start_matches(['#', ' ', '*', '-']).starts_with(word))
        })
        .collect();
    if text.trim().is_empty() {
        Err("the note is empty".into())
    } else if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the note has no {} section (start a line with it)",
            missing.join(", ")
        ))
    }
}

/// Publishes a release (or confirms the identical one exists) and regenerates the changelog.
pub fn publish(publication: &Publication) -> anyhow::Result<Receipt> {
    anyhow::ensure!(
        valid_version(publication.version),
        "`{}` is not a release version; use v1, v1.1, … or a name of letters, digits, `.`, `_`, `-`",
        publication.version
    );
    anyhow::ensure!(
        crate::manifest::interpolate::is_name(publication.name),
        "`{}` is not a release name",
        publication.name
    );
    let root = publication.root;
    let dir = root.join(ARTIFACTS).join(publication.name).join(publication.version);
    let existing = releases(root)?;
    if dir.join(MANIFEST).is_file() {
        let recorded = Manifest::read(&dir.join(MANIFEST))?;
        let current = manifest(publication, recorded.sequence)?;
        if !recorded.same_content(&current) {
            let differing: Vec<&String> = current
                .files
                .iter()
                .filter(|(name, record)| recorded.files.get(*name) != Some(record))
                .map(|(name, _)| name)
                .collect();
            // Releases are immutable: other content is held back, not
            // published and not an error (`-P` experiments end here too).
            return Ok(Receipt {
                name: publication.name.into(),
                version: publication.version.into(),
                manifest: Digest::of(&std::fs::read(dir.join(MANIFEST))?),
                new: false,
                held_back: Some(format!(
                    "not published: {}/{} already holds other content ({}); releases are immutable. To publish these files, set a new version (e.g. `-P release=...`) and write {}",
                    publication.name,
                    publication.version,
                    if differing.is_empty() {
                        "provenance".to_string()
                    } else {
                        differing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    },
                    publication
                        .note
                        .strip_prefix(root)
                        .unwrap_or(publication.note)
                        .display()
                )),
            });
        }
        write_changelog(root, publication.headlines)?;
        return Ok(Receipt {
            name: publication.name.into(),
            version: publication.version.into(),
            manifest: Digest::of(&std::fs::read(dir.join(MANIFEST))?),
            new: false,
            held_back: None,
        });
    }
    let note = std::fs::read_to_string(publication.note).map_err(|_| {
        anyhow::anyhow!(
            "a release needs a note: write what changed, why and how in {} (it is consumed on release)",
            publication.note.display()
        )
    })?;
    check_note(&note).map_err(|problem| anyhow::anyhow!("{}: {problem}", publication.note.display()))?;
    let sequence = existing.iter().map(|(_, m)| m.sequence).max().unwrap_or(0) + 1;
    let manifest = manifest(publication, sequence)?;

    let parent = dir.parent().expect("a release dir has a parent");
    std::fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new().prefix(".release-").tempdir_in(parent)?;
    for path in publication.files {
        let name = path.file_name().expect("checked in manifest()");
        std::fs::copy(path, staging.path().join(name))?;
    }
    if let Some((_, record)) = approval(publication, &manifest.files)? {
        std::fs::write(staging.path().join(crate::review::RECORD), review_bytes(&record)?)?;
    }
    std::fs::write(staging.path().join(NOTE), note.trim_end().to_string() + "\n")?;
    let text = toml::to_string(&manifest)?;
    std::fs::write(staging.path().join(MANIFEST), &text)?;
    for entry in std::fs::read_dir(staging.path())? {
        std::fs::File::open(entry?.path())?.sync_all()?;
    }
    std::fs::rename(staging.keep(), &dir)?;
    write_changelog(root, publication.headlines)?;
    std::fs::remove_file(publication.note)?;
    Ok(Receipt {
        name: publication.name.into(),
        version: publication.version.into(),
        manifest: Digest::of(text.as_bytes()),
        new: true,
        held_back: None,
    })
}

/// The changelog entry of one release.
fn entry(dir: &Path, manifest: &Manifest, note: &str, root: &Path, headlines: &dyn Headlines) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {} {}\n", manifest.name, manifest.version);
    let relative = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
    let manifest_hash = std::fs::read(dir.join(MANIFEST))
        .map(|b| Digest::of(&b).to_string())
        .unwrap_or_default();
    let _ = writeln!(out, "- manifest: `{relative}/{MANIFEST}` blake3 `{manifest_hash}`");
    for (name, record) in manifest.files.iter().filter(|(n, _)| headlines.is_model(n)) {
        let _ = writeln!(out, "- model: `{name}` blake3 `{}`", record.hash);
    }
    for (card, hash) in &manifest.datasets {
        let _ = writeln!(out, "- dataset: `{card}` hash `{hash}`");
    }
    if !manifest.scores.is_empty() {
        let shown: Vec<String> = manifest
            .scores
            .iter()
            .map(|(name, value)| format!("{} {}", name.replace('_', " "), headlines.show(name, *value)))
            .collect();
        let _ = writeln!(out, "- scores: {}", shown.join(", "));
    }
    let _ = match &manifest.review {
        ReviewStatus::Unreviewed => writeln!(out, "- review: {UNREVIEWED}"),
        ReviewStatus::Approved {
            file,
            reviewer,
            at,
            samples,
        } => writeln!(
            out,
            "- review: `{file}` approved by {reviewer} on {at} ({samples} samples, `{}`)",
            crate::review::RECORD
        ),
    };
    let _ = writeln!(out, "\n{}\n", note.trim_end());
    out
}

/// The whole changelog, newest release first.
pub fn changelog(root: &Path, headlines: &dyn Headlines) -> anyhow::Result<String> {
    let mut out = String::from(
        "# Changelog\n\nOne entry per release, newest first, generated by `fabric.release` from each release's \
MANIFEST.toml and NOTE.md. `fabric verify` checks that they agree.\n\n",
    );
    for (dir, manifest) in releases(root)? {
        let note = std::fs::read_to_string(dir.join(NOTE)).unwrap_or_default();
        out.push_str(&entry(&dir, &manifest, &note, root, headlines));
    }
    Ok(out)
}

fn write_changelog(root: &Path, headlines: &dyn Headlines) -> anyhow::Result<()> {
    let text = changelog(root, headlines)?;
    crate::atomic::write(&root.join(ARTIFACTS).join(CHANGELOG), |file| {
        file.write_all(text.as_bytes())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headlines from a made-up format: `{"card": HASH}` is a dataset card,
    /// `{"score": X}` a report, `*.bin` a model.
    struct Made;

    impl Headlines for Made {
        fn dataset_hash(&self, document: &serde_json::Value) -> Option<String> {
            document.get("card")?.as_str().map(str::to_string)
        }
        fn scores(&self, document: &serde_json::Value) -> BTreeMap<String, f64> {
            document
                .get("score")
                .and_then(|v| v.as_f64())
                .map(|x| ("the_score".to_string(), x))
                .into_iter()
                .collect()
        }
        fn show(&self, _: &str, value: f64) -> String {
            format!("{value:.2}")
        }
        fn is_model(&self, name: &str) -> bool {
            name.ends_with(".bin")
        }
    }

    /// Publishes the same four files as `version` with `headlines`; returns
    /// the manifest and the changelog.
    fn publish_with(root: &Path, version: &str, headlines: &dyn Headlines) -> (Manifest, String) {
        let files: Vec<PathBuf> = [
            ("card.json", r#"{"card": "c0ffee"}"#),
            ("report.json", r#"{"score": 0.5}"#),
            ("model.bin", "weights"),
            ("other.json", r#"{"unrelated": 1}"#),
        ]
        .iter()
        .map(|(name, text)| {
            let path = root.join("build").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
        let note = root.join("next.md");
        std::fs::write(&note, "What: a test.\nWhy: to see.\nHow: by hand.\n").unwrap();
        publish(&Publication {
            root,
            name: "thing",
            version,
            files: &files,
            note: &note,
            upstream: &BTreeMap::new(),
            reviews: None,
            headlines,
        })
        .unwrap();
        let manifest = Manifest::read(&root.join(ARTIFACTS).join("thing").join(version).join(MANIFEST)).unwrap();
        (manifest, changelog(root, headlines).unwrap())
    }

    #[test]
    fn a_release_headlines_what_the_pipeline_declares_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, text) = publish_with(dir.path(), "v1", &Made);
        assert_eq!(
            manifest.datasets,
            BTreeMap::from([("card.json".into(), "c0ffee".into())])
        );
        assert_eq!(manifest.scores, BTreeMap::from([("the_score".into(), 0.5)]));
        assert!(text.contains("- model: `model.bin` blake3"), "{text}");
        assert!(text.contains("- dataset: `card.json` hash `c0ffee`"), "{text}");
        assert!(text.contains("- scores: the score 0.50"), "{text}");

        let (plain, text) = publish_with(dir.path(), "v2", &NoHeadlines);
        assert!(plain.datasets.is_empty() && plain.scores.is_empty());
        let v2 = text.split("## thing v1").next().unwrap();
        assert!(
            !v2.contains("- model:") && !v2.contains("- dataset:") && !v2.contains("- scores:"),
            "{v2}"
        );
        assert_eq!(plain.files, manifest.files, "the files ship either way");
    }
}
