//! The evaluation report in Markdown.

use std::fmt::Write;

use super::eval::{Metrics, Scores};

fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

/// A row of the headline table: its name and how to show a predictor's value.
type Row = (&'static str, fn(&Scores) -> String);

/// The report: headline table, per-mode compliance, gates, charts.
pub fn markdown(metrics: &Metrics, candidate: &str, failed: &[String], charts: &(String, String)) -> String {
    let rows: [Row; 10] = [
        ("command accuracy (top-1)", |s| percent(s.command_accuracy)),
        ("command accuracy (top-3)", |s| percent(s.command_top3)),
        ("target accuracy", |s| percent(s.target_accuracy)),
        ("command macro-F1", |s| format!("{:.3}", s.macro_f1)),
        ("command JSON validity", |s| percent(s.command_json_validity)),
        ("mode compliance", |s| percent(s.mode_compliance)),
        ("tone audit", |s| percent(s.tone_audit)),
        ("ALS/Bloom alignment", |s| percent(s.als_alignment)),
        ("interventions per minute", |s| {
            format!("{:.2}", s.interventions_per_minute)
        }),
        ("interventions in flow", |s| s.interventions_in_flow.to_string()),
    ];
    let mut out = String::new();
    let _ = writeln!(out, "# Prime Brain evaluation\n");
    let _ = writeln!(
        out,
        "{} held-out test examples; ground truth is what the user did next. The majority baseline always answers `{}`.\n",
        metrics.examples, metrics.majority_class
    );
    let _ = writeln!(out, "| metric | {candidate} | seed rules | majority |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (name, value) in rows {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} |",
            value(&metrics.model),
            value(&metrics.seed_rules),
            value(&metrics.majority)
        );
    }
    let _ = writeln!(out, "\n## Mode compliance by mode\n");
    let _ = writeln!(out, "| mode | {candidate} | seed rules | majority |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    for (mode, value) in &metrics.model.mode_compliance_by_mode {
        let seed = metrics
            .seed_rules
            .mode_compliance_by_mode
            .get(mode)
            .copied()
            .unwrap_or(1.0);
        let majority = metrics
            .majority
            .mode_compliance_by_mode
            .get(mode)
            .copied()
            .unwrap_or(1.0);
        let _ = writeln!(
            out,
            "| {mode} | {} | {} | {} |",
            percent(*value),
            percent(seed),
            percent(majority)
        );
    }
    let _ = writeln!(out, "\n## Regression gates\n");
    for (gate, ok) in &metrics.gates {
        let _ = writeln!(out, "- {gate}: {}", if *ok { "passed" } else { "FAILED" });
    }
    if !failed.is_empty() {
        let _ = writeln!(out, "\nThis model must not be released: {} failed.", failed.join(", "));
    }
    let _ = writeln!(out, "\n## Charts\n");
    let _ = writeln!(out, "![training loss]({})\n", charts.0);
    let _ = writeln!(out, "![confusion matrix]({})", charts.1);
    out
}
