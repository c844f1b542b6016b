//! Review sheets of a model's outputs: sampled moments of the test split,
//! rendered as the user would see them, for a person to approve or reject
//! ([`fabric_core::review`] records the verdicts).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::eval::model_predictions;
use super::report::{context, describe_command};
use fabric_core::digest::Digest;
use fabric_core::review::{Subject, sample_hash};
use prime_brain::schema::Mode;

/// One sample on a sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SheetSample {
    /// Its number.
    pub id: usize,
    /// The mode.
    pub mode: String,
    /// The situation, in words.
    pub context: String,
    /// What the model says.
    pub says: String,
    /// What the model suggests.
    pub command: String,
    /// BLAKE3 of the four fields above.
    pub sample: Digest,
    /// For the reviewer: `approve` or `reject`.
    #[serde(default)]
    pub verdict: String,
    /// For the reviewer: anything worth saying.
    #[serde(default)]
    pub note: String,
}

/// A review sheet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sheet {
    /// How to fill it in.
    pub instructions: String,
    /// The model reviewed.
    pub subject: Subject,
    /// The samples.
    pub samples: Vec<SheetSample>,
}

/// The sheet for the model at `model` over the test split `test`: up to
/// `count` distinct moments, spread evenly over each mode's examples (the
/// same moments every time for the same model and data).
pub fn sheet(workspace: Option<&Path>, model: &Path, test: &Path, count: usize) -> anyhow::Result<Sheet> {
    let bytes = std::fs::read(model).map_err(|e| anyhow::anyhow!("{}: {e}", model.display()))?;
    let examples = super::train::read_examples(test)?;
    let predictions = model_predictions(workspace, &bytes, &examples)?;
    let per_mode = count.div_ceil(Mode::ALL.len()).max(1);
    let mut samples = Vec::new();
    for mode in Mode::ALL {
        let in_mode: Vec<usize> = (0..examples.len()).filter(|&i| examples[i].mode == mode).collect();
        let step = (in_mode.len() / per_mode).max(1);
        let mut taken = 0;
        for &i in in_mode.iter().step_by(step) {
            let (e, p) = (&examples[i], &predictions[i]);
            let fields = [
                mode.name().to_string(),
                context(e),
                p.response.clone(),
                describe_command(&p.command),
            ];
            let sample = sample_hash(&fields.each_ref().map(String::as_str));
            // A moment that reads like one already on the sheet adds nothing.
            if taken == per_mode || samples.iter().any(|s: &SheetSample| s.sample == sample) {
                continue;
            }
            taken += 1;
            samples.push(SheetSample {
                id: samples.len() + 1,
                sample,
                mode: fields[0].clone(),
                context: fields[1].clone(),
                says: fields[2].clone(),
                command: fields[3].clone(),
                verdict: String::new(),
                note: String::new(),
            });
        }
    }
    Ok(Sheet {
        instructions: format!(
            "Read each sample as the user would see it. Set `verdict` to `{}` when the words and the suggestion are calm, kind and right for the moment, else `{}`; add a `note` if you like. Then run `fabric review import` with this file and your name.",
            fabric_core::review::APPROVE,
            fabric_core::review::REJECT
        ),
        subject: Subject {
            file: model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            blake3: Digest::of(&bytes),
        },
        samples,
    })
}
