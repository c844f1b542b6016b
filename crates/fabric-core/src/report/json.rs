//! `--json`: one JSON object per event on stdout.

use std::io::Write;

use super::{Event, Reporter};

/// Writes events as JSON lines to stdout.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn report(&self, event: Event) {
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }
}
