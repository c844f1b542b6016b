//! `fabric.release`: publishes the stage's deps as an immutable release.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as Json;

use super::{Step, StepContext, parse_with};
use crate::paths::RelPath;
use crate::release::{self, Headlines, Publication};

/// `with` of `fabric.release`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseWith {
    /// Release name: `artifacts/NAME/`.
    name: String,
    /// Version: `artifacts/NAME/VERSION/`.
    version: String,
    /// The what/why/how note fragment, consumed on a new release.
    #[serde(default = "default_note")]
    note: String,
    /// A dep that is not shipped but holds review records
    /// (`fabric review import`): an approval of a shipped file ships with it.
    #[serde(default)]
    reviews: Option<String>,
}

fn default_note() -> String {
    "changes/next.md".into()
}

fn parse(with: &Json) -> Result<ReleaseWith, String> {
    let parsed: ReleaseWith = parse_with(with)?;
    if !release::valid_version(&parsed.version) {
        return Err(format!("`{}` is not a release version (v1, v1.1, …)", parsed.version));
    }
    if !crate::manifest::interpolate::is_name(&parsed.name) {
        return Err(format!("`{}` is not a release name", parsed.name));
    }
    RelPath::new(&parsed.note).map_err(|e| format!("note: {e}"))?;
    if let Some(reviews) = &parsed.reviews {
        RelPath::new(reviews).map_err(|e| format!("reviews: {e}"))?;
    }
    Ok(parsed)
}

/// Publishes every dep as a file of the release; the one out is a receipt.
pub struct Release {
    headlines: Arc<dyn Headlines>,
}

impl Release {
    /// The step, headlining in each release what `headlines` finds in its files.
    pub fn new(headlines: Arc<dyn Headlines>) -> Release {
        Release { headlines }
    }
}

impl Step for Release {
    fn name(&self) -> &'static str {
        "fabric.release"
    }
    fn version(&self) -> u32 {
        3
    }
    fn summary(&self) -> &'static str {
        "deps (files to ship) → artifacts/NAME/VERSION/ with MANIFEST.toml and NOTE.md, artifacts/CHANGELOG.md; out: a receipt; with: name, version, note, reviews (a dep holding review records, not shipped)"
    }
    fn check(&self, with: &Json) -> Result<(), String> {
        parse(with).map(|_| ())
    }
    fn run(&self, context: &StepContext) -> anyhow::Result<()> {
        anyhow::ensure!(context.outs.len() == 1, "declare one out: the release receipt (JSON)");
        anyhow::ensure!(!context.deps.is_empty(), "declare the files to ship as deps");
        let with = parse(context.with).map_err(anyhow::Error::msg)?;
        let note = RelPath::new(&with.note).map_err(anyhow::Error::msg)?;
        let reviews = match &with.reviews {
            Some(dir) => Some(RelPath::new(dir).map_err(anyhow::Error::msg)?.under(context.root)),
            None => None,
        };
        if let Some(dir) = &reviews {
            anyhow::ensure!(
                context.deps.contains(dir),
                "`reviews = \"{}\"` must also be a dep, so new reviews rerun the release",
                with.reviews.as_deref().unwrap_or_default()
            );
        }
        let files: Vec<std::path::PathBuf> = context
            .deps
            .iter()
            .filter(|d| Some(*d) != reviews.as_ref())
            .cloned()
            .collect();
        let receipt = release::publish(&Publication {
            root: context.root,
            name: &with.name,
            version: &with.version,
            files: &files,
            note: &note.under(context.root),
            upstream: &context.upstream,
            reviews: reviews.as_deref(),
            headlines: self.headlines.as_ref(),
        })?;
        if let Some(reason) = &receipt.held_back {
            (context.note)(reason);
        }
        std::fs::write(&context.outs[0], serde_json::to_string_pretty(&receipt)? + "\n")?;
        Ok(())
    }
}
