//! Human reviews: a person's verdicts on sampled outputs of one file (a
//! model), recorded with who and when, and bound to that file by its BLAKE3.
//!
//! A review sheet lists samples, each with the hash of what was shown; the
//! person fills in a verdict per sample (`approve` or `reject`, and a note).
//! Importing it makes a [`ReviewRecord`]; a release whose shipped file has
//! an approving record carries it (`REVIEW.json`) and says so in its
//! manifest; `fabric verify` checks the record against the file. Nothing
//! here ever fills in a verdict: an approval exists only if a person gave it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The file a review is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// Its file name (`model.onnx`).
    pub file: String,
    /// BLAKE3 of its content.
    pub blake3: Digest,
}

/// One sample on a sheet: what was shown, and the person's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleVerdict {
    /// Its number on the sheet.
    pub id: usize,
    /// BLAKE3 of what was shown (see [`sample_hash`]).
    pub sample: Digest,
    /// `approve` or `reject` (empty until the person decides).
    pub verdict: String,
    /// The person's note, if any.
    #[serde(default)]
    pub note: String,
}

/// A completed review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRecord {
    /// The reviewed file.
    pub subject: Subject,
    /// Who reviewed.
    pub reviewer: String,
    /// When (RFC 3339).
    pub at: String,
    /// Every sample's verdict.
    pub samples: Vec<SampleVerdict>,
}

/// The file name a review record has inside a release.
pub const RECORD: &str = "REVIEW.json";

/// The verdict that approves a sample.
pub const APPROVE: &str = "approve";
/// The verdict that rejects one.
pub const REJECT: &str = "reject";

/// The hash that binds a sample to what was shown: its fields, in order.
pub fn sample_hash(fields: &[&str]) -> Digest {
    let mut key = crate::digest::KeyEncoder::new("fabric-review-sample-v1");
    for field in fields {
        key.text(b'f', field);
    }
    key.finish()
}

impl ReviewRecord {
    /// True when every sample is approved (and there is at least one).
    pub fn approved(&self) -> bool {
        !self.samples.is_empty() && self.samples.iter().all(|s| s.verdict == APPROVE)
    }

    /// Problems with the record itself: no reviewer, a bad time, a sample
    /// without a valid verdict.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.reviewer.trim().is_empty() {
            problems.push("no reviewer is named".to_string());
        }
        if chrono::DateTime::parse_from_rfc3339(&self.at).is_err() {
            problems.push(format!("`{}` is not an RFC 3339 time", self.at));
        }
        if self.samples.is_empty() {
            problems.push("no samples were reviewed".into());
        }
        for sample in &self.samples {
            if sample.verdict != APPROVE && sample.verdict != REJECT {
                problems.push(format!(
                    "sample {}: verdict `{}` is neither `{APPROVE}` nor `{REJECT}`",
                    sample.id, sample.verdict
                ));
            }
        }
        problems
    }

    /// Reads a record.
    pub fn read(path: &Path) -> anyhow::Result<ReviewRecord> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a review record: {e}", path.display()))
    }

    /// The record's file name in a reviews directory.
    pub fn file_name(&self) -> String {
        format!("{}.json", &self.subject.blake3.to_string()[..16])
    }
}

/// The approving, well-formed record under `dir` for a file with this hash,
/// if any (with its path).
pub fn approval_for(dir: &Path, hash: &Digest) -> anyhow::Result<Option<(PathBuf, ReviewRecord)>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let record = ReviewRecord::read(&path)?;
        if record.subject.blake3 == *hash && record.problems().is_empty() && record.approved() {
            return Ok(Some((path, record)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(verdicts: &[&str]) -> ReviewRecord {
        ReviewRecord {
            subject: Subject {
                file: "model.onnx".into(),
                blake3: Digest::of(b"model"),
            },
            reviewer: "Ada".into(),
            at: "2026-12-02T10:00:00Z".into(),
            samples: verdicts
                .iter()
                .enumerate()
                .map(|(id, verdict)| SampleVerdict {
                    id,
                    sample: sample_hash(&["text"]),
                    verdict: verdict.to_string(),
                    note: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn only_a_complete_approval_approves() {
        assert!(record(&["approve", "approve"]).approved());
        assert!(!record(&["approve", "reject"]).approved());
        assert!(!record(&[]).approved());
        assert_eq!(record(&["approve", ""]).problems().len(), 1);
        let mut anonymous = record(&["approve"]);
        anonymous.reviewer = " ".into();
        anonymous.at = "yesterday".into();
        assert_eq!(anonymous.problems().len(), 2);
    }
}
