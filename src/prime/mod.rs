//! The Prime Brain data domain: the snapshot schema, the command vocabulary,
//! the current rules as a labeler, simulated sessions, sanitizing, and
//! dataset building. The built-in steps in [`crate::steps::prime`] and the
//! `fabric simulate|sanitize|dataset|schema` commands call into here.

pub mod contract;
pub mod dataset;
pub mod labels;
pub mod lexicon;
pub mod privacy;
pub mod pseudonym;
pub mod redact;
pub mod sanitize;
pub mod schema;
pub mod sft;
pub mod simulate;
pub mod tone;
pub mod vocabulary;
