//! Line-oriented, timestamp-free output for CI and pipes (stderr).

use std::io::Write;

use super::{Event, Outcome, Reporter};

/// Writes one line per event to stderr.
pub struct PlainReporter {
    /// Print reasons and up-to-date stages too.
    pub verbose: bool,
    /// Print only failures and warnings.
    pub quiet: bool,
    /// Print what running commands print, each line after its stage's name.
    pub stream: bool,
}

impl Reporter for PlainReporter {
    fn report(&self, event: Event) {
        let mut err = std::io::stderr().lock();
        let _ = match event {
            Event::RunStarted { .. } => Ok(()),
            Event::StageStarted { stage, reasons } if !self.quiet => {
                writeln!(err, "running {stage}: {}", reasons.join("; "))
            }
            Event::StageFinished {
                stage,
                outcome,
                elapsed,
                error,
                reasons,
            } => match outcome {
                Outcome::Failed => writeln!(err, "failed {stage}: {}", error.unwrap_or_default()),
                Outcome::UpToDate if !self.verbose => Ok(()),
                Outcome::Restored if !self.quiet => {
                    writeln!(err, "restored {stage} from the cache: {}", reasons.join("; "))
                }
                _ if self.quiet => Ok(()),
                Outcome::Ran if self.verbose => writeln!(err, "ran {stage} ({:.2}s)", elapsed.as_secs_f64()),
                Outcome::Ran => writeln!(err, "ran {stage}"),
                other => writeln!(err, "{} {stage}", other.label()),
            },
            Event::Warning { stage, message } => writeln!(err, "warning: {stage}: {message}"),
            Event::Output { stage, line } if self.stream && !self.quiet => writeln!(err, "{stage} | {line}"),
            Event::RunFinished { summary } if !self.quiet || summary.failed > 0 => writeln!(err, "{}", summary.line()),
            _ => Ok(()),
        };
    }
}
