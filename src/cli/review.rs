//! `fabric review export|import`: a person's tone check of a model's outputs.

use std::path::PathBuf;
use std::process::ExitCode;

use fabric_core::manifest::find_root;
use fabric_core::review::{ReviewRecord, SampleVerdict};
use fabric_onnx::review::{Sheet, sheet};

/// Arguments of `fabric review`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

/// What the model and data under review are.
#[derive(Debug, clap::Args)]
struct Under {
    /// The directory holding model.onnx.
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// The test split the samples come from.
    #[arg(long, value_name = "FILE")]
    test_dataset: PathBuf,
    /// Samples on the sheet.
    #[arg(long, default_value_t = 24)]
    samples: usize,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Write a review sheet: sampled outputs as the user would see them.
    Export {
        #[command(flatten)]
        under: Under,
        /// Where to write the sheet (JSON, for the reviewer to fill in).
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Record a filled-in sheet: every verdict, who, when. The release
    /// stage ships an approval with the model it approves.
    Import {
        /// The filled-in sheet.
        sheet: PathBuf,
        #[command(flatten)]
        under: Under,
        /// Who reviewed (required: an approval no person gave is never recorded).
        #[arg(long)]
        reviewer: String,
        /// When (RFC 3339; default: now).
        #[arg(long)]
        at: Option<String>,
        /// Where review records are kept.
        #[arg(long, value_name = "DIR", default_value = "reviews")]
        output_dir: PathBuf,
    },
}

pub fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let workspace = find_root(&std::env::current_dir()?);
    let make = |under: &Under| {
        sheet(
            workspace.as_deref(),
            &under.model_dir.join("model.onnx"),
            &under.test_dataset,
            under.samples,
        )
    };
    match args.action {
        Action::Export { under, output } => {
            let sheet = make(&under)?;
            if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&output, serde_json::to_string_pretty(&sheet)? + "\n")?;
            eprintln!(
                "wrote {} samples of {} to {}; fill in each verdict, then `fabric review import`",
                sheet.samples.len(),
                sheet.subject.file,
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Import {
            sheet: path,
            under,
            reviewer,
            at,
            output_dir,
        } => {
            let text = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let filled: Sheet = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: not a review sheet: {e}", path.display()))?;
            // The sheet must show exactly what this model says on this data.
            let expected = make(&under)?;
            anyhow::ensure!(
                filled.subject == expected.subject,
                "{} was made for another model (blake3 {}); this one is {}: export a new sheet",
                path.display(),
                filled.subject.blake3,
                expected.subject.blake3
            );
            let shown_of = |sheet: &Sheet| -> Vec<_> {
                sheet
                    .samples
                    .iter()
                    .map(|s| {
                        (
                            s.id,
                            s.sample,
                            [s.mode.clone(), s.context.clone(), s.says.clone(), s.command.clone()],
                        )
                    })
                    .collect()
            };
            let (shown, made) = (shown_of(&filled), shown_of(&expected));
            anyhow::ensure!(
                shown == made,
                "{}: the samples differ from what the model says (edited, or another test split): export a new sheet",
                path.display()
            );
            let record = ReviewRecord {
                subject: filled.subject,
                reviewer,
                at: match at {
                    Some(at) => at,
                    None => now()?,
                },
                samples: filled
                    .samples
                    .into_iter()
                    .map(|s| SampleVerdict {
                        id: s.id,
                        sample: s.sample,
                        verdict: s.verdict.trim().to_lowercase(),
                        note: s.note,
                    })
                    .collect(),
            };
            let problems = record.problems();
            anyhow::ensure!(
                problems.is_empty(),
                "{} is not complete: {}",
                path.display(),
                problems.join("; ")
            );
            std::fs::create_dir_all(&output_dir)?;
            let target = output_dir.join(record.file_name());
            std::fs::write(&target, serde_json::to_string_pretty(&record)? + "\n")?;
            let rejected = record
                .samples
                .iter()
                .filter(|s| s.verdict != fabric_core::review::APPROVE)
                .count();
            if rejected == 0 {
                eprintln!(
                    "{} approved {} by {} samples; recorded in {}",
                    record.reviewer,
                    record.subject.file,
                    record.samples.len(),
                    target.display()
                );
            } else {
                eprintln!(
                    "{} rejected {rejected} of {} samples: {} is not approved; recorded in {}",
                    record.reviewer,
                    record.samples.len(),
                    record.subject.file,
                    target.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The current time, RFC 3339 in UTC.
fn now() -> anyhow::Result<String> {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let time = chrono::DateTime::from_timestamp(seconds as i64, 0)
        .ok_or_else(|| anyhow::anyhow!("the clock is out of range"))?;
    Ok(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}
