//! Terminal output: one spinner per running stage, an overall bar, and a
//! summary table at the end. The only module that touches indicatif.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{Event, Outcome, Reporter};

/// Progress bars on stderr.
pub struct TerminalReporter {
    bars: MultiProgress,
    state: Mutex<State>,
    verbose: bool,
    stream: bool,
}

#[derive(Default)]
struct State {
    overall: Option<ProgressBar>,
    running: BTreeMap<String, ProgressBar>,
    finished: Vec<(String, Outcome, Duration)>,
}

impl TerminalReporter {
    /// A reporter drawing on stderr.
    pub fn new(verbose: bool, stream: bool) -> TerminalReporter {
        TerminalReporter {
            bars: MultiProgress::new(),
            state: Mutex::new(State::default()),
            verbose,
            stream,
        }
    }
}

impl Reporter for TerminalReporter {
    fn report(&self, event: Event) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::RunStarted { stages } => {
                let bar = self.bars.add(ProgressBar::new(stages as u64));
                bar.set_style(
                    ProgressStyle::with_template("{prefix:>10.bold} [{bar:30}] {pos}/{len} stages {elapsed}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_prefix("fabric");
                state.overall = Some(bar);
            }
            Event::StageStarted { stage, reasons } => {
                let spinner = self.bars.insert_from_back(1, ProgressBar::new_spinner());
                spinner.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold} {msg} {elapsed}")
                        .expect("valid template"),
                );
                spinner.set_prefix(stage.clone());
                spinner.set_message(reasons.first().cloned().unwrap_or_default());
                spinner.enable_steady_tick(Duration::from_millis(100));
                state.running.insert(stage, spinner);
            }
            Event::StageFinished {
                stage,
                outcome,
                elapsed,
                error,
                reasons,
            } => {
                if let Some(spinner) = state.running.remove(&stage) {
                    spinner.finish_and_clear();
                    self.bars.remove(&spinner);
                }
                if let Some(overall) = &state.overall {
                    overall.inc(1);
                }
                let line = match (outcome, &error) {
                    (Outcome::Failed, Some(error)) => Some(format!("✗ {stage} failed: {error}")),
                    (Outcome::Ran, _) => Some(format!("✓ {stage} ran in {:.2}s", elapsed.as_secs_f64())),
                    (Outcome::Restored, _) => Some(format!("↺ {stage} restored from the cache")),
                    (Outcome::UpToDate, _) if self.verbose => Some(format!("· {stage} up to date")),
                    _ => None,
                };
                if let Some(line) = line {
                    let _ = self.bars.println(line);
                }
                if self.verbose && !reasons.is_empty() {
                    let _ = self.bars.println(format!("    because {}", reasons.join("; ")));
                }
                state.finished.push((stage, outcome, elapsed));
            }
            Event::Warning { stage, message } => {
                let _ = self.bars.println(format!("! {stage}: {message}"));
            }
            Event::Output { stage, line } => {
                if self.stream {
                    let _ = self.bars.println(format!("  {stage} | {line}"));
                }
            }
            Event::RunFinished { summary } => {
                if let Some(overall) = state.overall.take() {
                    overall.finish_and_clear();
                }
                let _ = self.bars.clear();
                let mut table = String::from("\n  stage                          result        time\n");
                for (stage, outcome, elapsed) in &state.finished {
                    table.push_str(&format!(
                        "  {stage:<30} {:<12} {:>6.2}s\n",
                        outcome.label(),
                        elapsed.as_secs_f64()
                    ));
                }
                table.push_str(&format!("\n  {}", summary.line()));
                eprintln!("{table}");
            }
        }
    }
}
