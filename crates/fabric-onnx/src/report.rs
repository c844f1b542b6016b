//! The evaluation report in Markdown: the numbers, what each one measures
//! and how a bad model fails it, the closed-loop Flow impact, the gates, and
//! a qualitative half of sampled moments as the user would see them.

use std::fmt::Write;

use super::eval::{Metrics, Scores};
use super::flow::Reactions;
use prime_brain::dataset::{CommandTarget, Example, FLOW_ENERGY, FeatureNames};
use prime_brain::vocabulary::NONE;

fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

/// A row of the headline table: its name, how to show a predictor's value,
/// and one sentence on what it measures and how a bad model fails it.
type Row = (&'static str, fn(&Scores) -> String, &'static str);

const ROWS: [Row; 16] = [
    (
        "command accuracy (top-1)",
        |s| percent(s.command_accuracy),
        "share of moments where the command is what the user did next; a constant answer scores only its class's share",
    ),
    (
        "command accuracy (top-3)",
        |s| percent(s.command_top3),
        "the same, with the three best guesses; a model that ranks at random falls to the majority's level",
    ),
    (
        "target accuracy",
        |s| percent(s.target_accuracy),
        "where the user's command had a target, share naming the same track; no target or the wrong track fails it",
    ),
    (
        "argument accuracy",
        |s| percent(s.argument_accuracy),
        "where the user's command carried arguments (buffer size, amount, tempo) and its type was named right, share with the same arguments; a wrong size, amount or tempo fails it",
    ),
    (
        "command macro-F1",
        |s| format!("{:.3}", s.macro_f1),
        "F1 averaged over command classes; always answering `none` scores near zero on every real command",
    ),
    (
        "command JSON validity",
        |s| percent(s.command_json_validity),
        "share of commands the Studio can execute as they are: in the vocabulary, with a valid target and every argument it requires; unknown types, a missing argument or malformed JSON fail it",
    ),
    (
        "mode compliance",
        |s| percent(s.mode_compliance),
        "share of answers the mode allows (passive: nothing unless health is critical; learning: nothing intrusive); acting in passive mode fails it",
    ),
    (
        "intensity accuracy",
        |s| percent(s.intensity_accuracy),
        "share of answers at the intensity the doctrine asks for (a call for critical health; a whisper in passive mode, in flow or with nothing to suggest; else a nudge)",
    ),
    (
        "intensity compliance",
        |s| percent(s.intensity_compliance),
        "share of answers no louder than the mode allows; a call without critical health, or a nudge in passive mode, fails it",
    ),
    (
        "tone audit",
        |s| percent(s.tone_audit),
        "share of texts that are calm, short, number-free, jargon-free and speak through a cue; harsh, blaming, urgent or shouting text fails it",
    ),
    (
        "ALS/Bloom alignment",
        |s| percent(s.als_alignment),
        "where the user acted, share of guidance on that action's channel; the wrong channel fails it",
    ),
    (
        "suggestions accepted",
        |s| s.flow.overall.accepted.to_string(),
        "closed loop: suggestions the simulated user took (what they did within a few steps); silence accepts nothing",
    ),
    (
        "suggestions dismissed",
        |s| s.flow.overall.dismissed.to_string(),
        "closed loop: unwanted or repeated suggestions",
    ),
    (
        "flow breaks",
        |s| s.flow.overall.flow_breaks.to_string(),
        "closed loop: interventions that pulled a user out of flow, or that the mode forbids",
    ),
    (
        "time kept in flow",
        |s| percent(s.flow.time_in_flow),
        "closed loop: share of in-flow moments no break took away; interrupting a playing user fails it",
    ),
    (
        "interventions per minute",
        |s| format!("{:.2}", s.flow.interventions_per_minute),
        "how often a command is suggested; a nagging model fails the cap",
    ),
];

/// The report: headline table with explanations, Flow impact per mode,
/// mode compliance per mode, tone issues, gates, charts and sampled moments.
pub fn markdown(metrics: &Metrics, candidate: &str, failed: &[String], charts: &(String, String)) -> String {
    let mut out = String::new();
    let predictors = [
        (candidate, &metrics.model),
        ("seed rules", &metrics.seed_rules),
        ("majority", &metrics.majority),
        ("oracle", &metrics.oracle),
    ];
    let header = format!(
        "| {} |\n|{}",
        predictors.map(|(name, _)| name).join(" | "),
        " --- |".repeat(predictors.len() + 1)
    );
    let row = |first: &str, cell: &dyn Fn(&Scores) -> String| {
        let cells: Vec<String> = predictors.iter().map(|(_, s)| cell(s)).collect();
        format!("| {first} | {} |", cells.join(" | "))
    };
    let _ = writeln!(out, "# Prime Brain evaluation\n");
    let _ = writeln!(
        out,
        "{} held-out test examples; ground truth is what the user did next. The majority baseline always answers `{}`; the oracle knows each simulated user's hidden style (the ceiling: what no predictor can foresee, it misses too).\n",
        metrics.examples, metrics.majority_class
    );
    let _ = writeln!(out, "| metric {header}");
    for (name, value, _) in ROWS {
        let _ = writeln!(out, "{}", row(name, &value));
    }
    let _ = writeln!(
        out,
        "\nThe {candidate} closes {} of the macro-F1 gap from the majority baseline to the oracle.",
        percent(metrics.oracle_gap_closed)
    );
    let _ = writeln!(out, "\nWhat each metric measures, and how a bad model fails it:\n");
    for (name, _, meaning) in ROWS {
        let _ = writeln!(out, "- **{name}**: {meaning}.");
    }

    let _ = writeln!(out, "\n## Flow impact by mode (closed loop)\n");
    let _ = writeln!(
        out,
        "Accepted / dismissed / flow breaks. The held-out sessions are replayed with each predictor in the loop; a user in flow (playing, energy at least {FLOW_ENERGY}) whose flow is broken stays out of it for about half a minute.\n"
    );
    let _ = writeln!(out, "| mode {header}");
    let modes: std::collections::BTreeSet<&String> =
        predictors.iter().flat_map(|(_, s)| s.flow.by_mode.keys()).collect();
    for mode in modes {
        let cell = |s: &Scores| reactions(&s.flow.by_mode.get(mode).cloned().unwrap_or_default());
        let _ = writeln!(out, "{}", row(mode, &cell));
    }

    let _ = writeln!(out, "\n## Mode compliance by mode\n");
    let _ = writeln!(out, "| mode {header}");
    for mode in metrics.model.mode_compliance_by_mode.keys() {
        let cell = |s: &Scores| percent(s.mode_compliance_by_mode.get(mode).copied().unwrap_or(1.0));
        let _ = writeln!(out, "{}", row(mode, &cell));
    }

    let _ = writeln!(out, "\n## Tone issues\n");
    for (name, scores) in predictors {
        let issues: Vec<String> = scores
            .tone_issues
            .iter()
            .map(|(issue, n)| format!("{issue} {n}"))
            .collect();
        let found = if issues.is_empty() {
            "none".to_string()
        } else {
            issues.join(", ")
        };
        let _ = writeln!(out, "- {name}: {found}");
    }

    let _ = writeln!(out, "\n## Regression gates\n");
    for (gate, ok) in &metrics.gates {
        let _ = writeln!(out, "- {gate}: {}", if *ok { "passed" } else { "FAILED" });
    }
    if !failed.is_empty() {
        let _ = writeln!(out, "\nThis model must not be released: {} failed.", failed.join(", "));
    }

    let _ = writeln!(out, "\n## Moments, as the user would see them\n");
    for sample in &metrics.samples {
        let _ = writeln!(out, "**{} mode** — {}\n", sample.mode.name(), sample.context);
        let _ = writeln!(
            out,
            "- {candidate}: “{}” {}",
            sample.candidate.0,
            command(&sample.candidate.1)
        );
        let _ = writeln!(
            out,
            "- seed rules: “{}” {}",
            sample.seed_rules.0,
            command(&sample.seed_rules.1)
        );
        let _ = writeln!(out, "- the user then: {}\n", action(&sample.user));
    }

    let _ = writeln!(out, "## Charts\n");
    let _ = writeln!(out, "![training loss]({})\n", charts.0);
    let _ = writeln!(out, "![confusion matrix]({})", charts.1);
    out
}

fn reactions(r: &Reactions) -> String {
    format!("{} / {} / {}", r.accepted, r.dismissed, r.flow_breaks)
}

fn command(c: &CommandTarget) -> String {
    format!("and {}", describe_command(c))
}

/// A suggested command in words: "suggests `mix.eqCut` on bass", "stays silent".
pub fn describe_command(c: &CommandTarget) -> String {
    match (&c.target, c.kind.as_str()) {
        (_, NONE) => "stays silent".into(),
        (Some(target), kind) => format!("suggests `{kind}` on {target}"),
        (None, kind) => format!("suggests `{kind}`"),
    }
}

fn action(c: &CommandTarget) -> String {
    match (&c.target, c.kind.as_str()) {
        (_, NONE) => "did nothing".into(),
        (Some(target), kind) => format!("did `{kind}` on {target}"),
        (None, kind) => format!("did `{kind}`"),
    }
}

/// The situation of an example in words: transport, energy, load, health.
pub fn context(e: &Example) -> String {
    let names = FeatureNames::default();
    let feature = |name: &str| f64::from(names.get(&e.features, name));
    let energy = match e.moment.energy {
        x if x >= FLOW_ENERGY => "high",
        x if x >= 0.3 => "steady",
        _ => "low",
    };
    let mut words = vec![
        if e.moment.playing {
            "the track is playing".to_string()
        } else {
            "the transport is stopped".to_string()
        },
        format!("energy is {energy}"),
    ];
    if feature("health.cpuLoad.last") > 0.85 {
        words.push("the engine is working hard".into());
    }
    if feature("harmonic.tension") > 0.6 {
        words.push("the harmony is tense".into());
    }
    if e.critical {
        words.push("a critical health flag is up".into());
    }
    words.join(", ")
}
