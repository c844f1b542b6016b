//! Progress reporting. The runner emits [`Event`]s through the [`Reporter`]
//! trait and never touches the terminal; the CLI picks an implementation:
//! [`terminal::TerminalReporter`] (indicatif bars), [`plain::PlainReporter`]
//! (line log for CI and pipes) or [`json::JsonReporter`] (`--json`).

pub mod json;
pub mod plain;
pub mod terminal;

use std::time::Duration;

use serde::Serialize;

/// How a stage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Fingerprint and outs matched the lock; nothing done.
    UpToDate,
    /// Outs restored from the run cache; nothing executed.
    Restored,
    /// The command or step ran.
    Ran,
    /// The stage failed.
    Failed,
    /// Not run because a stage it needs failed.
    Skipped,
    /// Not run because the run was cancelled.
    Cancelled,
}

impl Outcome {
    /// The word shown in logs and the summary.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::UpToDate => "up to date",
            Outcome::Restored => "restored",
            Outcome::Ran => "ran",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Something that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The run begins with this many stages selected.
    RunStarted { stages: usize },
    /// A stage starts executing, and why.
    StageStarted { stage: String, reasons: Vec<String> },
    /// A stage finished.
    StageFinished {
        stage: String,
        outcome: Outcome,
        #[serde(skip)]
        elapsed: Duration,
        /// Why it was run or restored (empty when up to date).
        reasons: Vec<String>,
        /// Failure message and the tail of the log.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Something worth knowing that does not stop the run.
    Warning { stage: String, message: String },
    /// A line a running command printed (stdout or stderr).
    Output { stage: String, line: String },
    /// The run ended.
    RunFinished { summary: Summary },
}

/// Counts of outcomes.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Stages that executed.
    pub ran: usize,
    /// Stages restored from the cache.
    pub restored: usize,
    /// Stages already up to date.
    pub up_to_date: usize,
    /// Stages that failed.
    pub failed: usize,
    /// Stages not run because of a failure upstream or a cancellation.
    pub skipped: usize,
    /// Names of the failed stages.
    pub failures: Vec<String>,
    /// True when the run was interrupted.
    pub interrupted: bool,
}

impl Summary {
    /// Counts one outcome.
    pub fn add(&mut self, stage: &str, outcome: Outcome) {
        match outcome {
            Outcome::Ran => self.ran += 1,
            Outcome::Restored => self.restored += 1,
            Outcome::UpToDate => self.up_to_date += 1,
            Outcome::Failed => {
                self.failed += 1;
                self.failures.push(stage.to_string());
            }
            Outcome::Skipped | Outcome::Cancelled => self.skipped += 1,
        }
    }

    /// One line: "2 ran, 1 restored, 3 up to date".
    pub fn line(&self) -> String {
        let mut parts = vec![
            format!("{} ran", self.ran),
            format!("{} restored", self.restored),
            format!("{} up to date", self.up_to_date),
        ];
        if self.failed > 0 {
            parts.push(format!("{} failed ({})", self.failed, self.failures.join(", ")));
        }
        if self.skipped > 0 {
            parts.push(format!("{} not run", self.skipped));
        }
        if self.interrupted {
            parts.push("interrupted".into());
        }
        parts.join(", ")
    }
}

/// Receives run events. Called from several threads.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn report(&self, event: Event);
}
