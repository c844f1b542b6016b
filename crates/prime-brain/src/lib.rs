//! The Prime Brain data domain: the snapshot schema, the command vocabulary,
//! the current rules as a labeler, simulated sessions, sanitizing, and
//! dataset building. Its built-in steps ([`steps`], added to a registry by
//! [`register`]) and the `fabric simulate|sanitize|dataset|schema` commands
//! call into here.

pub mod contract;
pub mod dataset;
pub mod labels;
pub mod lexicon;
pub mod phrasing;
pub mod privacy;
pub mod pseudonym;
pub mod redact;
pub mod sanitize;
pub mod schema;
pub mod sft;
pub mod simulate;
pub mod steps;
pub mod tone;
pub mod vocabulary;

/// Adds the `prime.*` steps to `registry`.
pub fn register(registry: &mut fabric_core::steps::Registry) {
    registry.register(Box::new(steps::Simulate));
    registry.register(Box::new(steps::Sanitize));
    registry.register(Box::new(steps::Dataset));
}
