//! What a Prime Brain release headlines: the hashes of the dataset and of
//! the instruction-tuning set (`prime.dataset`'s cards) and the model's scores from `onnx.eval`'s metrics.

use std::collections::BTreeMap;

use fabric_core::release::Headlines;
use serde_json::Value as Json;

/// The scores a release headlines, by name, with their JSON pointer under
/// the model's scores in `metrics.json`.
const SCORES: [(&str, &str); 7] = [
    ("command_accuracy", "/command_accuracy"),
    ("command_top3", "/command_top3"),
    ("macro_f1", "/macro_f1"),
    ("mode_compliance", "/mode_compliance"),
    ("tone_audit", "/tone_audit"),
    ("time_in_flow", "/flow/time_in_flow"),
    ("interventions_per_minute", "/flow/interventions_per_minute"),
];

/// The Prime Brain's [`Headlines`].
pub struct PrimeHeadlines;

impl Headlines for PrimeHeadlines {
    /// A dataset card has a `datasetHash` and a `featureLayout`; the
    /// instruction-tuning set's card a `datasetHash` and `kind`
    /// `instruction-tuning`.
    fn dataset_hash(&self, document: &Json) -> Option<String> {
        let instructions = document.get("kind").and_then(Json::as_str) == Some(prime_brain::sft::CARD_KIND);
        (instructions || document.get("featureLayout").is_some()).then_some(())?;
        document.get("datasetHash")?.as_str().map(str::to_string)
    }

    /// An evaluation report has the model's scores beside the seed rules'.
    fn scores(&self, document: &Json) -> BTreeMap<String, f64> {
        let Some(model) = document.get("model").filter(|_| document.get("seed_rules").is_some()) else {
            return BTreeMap::new();
        };
        SCORES
            .iter()
            .filter_map(|(name, pointer)| Some((name.to_string(), model.pointer(pointer)?.as_f64()?)))
            .collect()
    }

    /// Rates in percent; macro-F1 and interventions per minute as numbers.
    fn show(&self, name: &str, value: f64) -> String {
        match name {
            "interventions_per_minute" => format!("{value:.2}"),
            "macro_f1" => format!("{value:.3}"),
            _ => format!("{:.1}%", value * 100.0),
        }
    }

    fn is_model(&self, name: &str) -> bool {
        name.ends_with(".onnx")
    }
}
