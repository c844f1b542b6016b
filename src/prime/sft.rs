//! The instruction-tuning export: the dataset's windows as chat-style JSONL
//! for tuning a hosted LLM elsewhere (the brief's fine-tune cannot run inside
//! the sealed Fabric, but its data is built, hashed and versioned here).
//!
//! Each line holds three turns: a system turn with the doctrine, a user turn
//! rendering the window as calm, number-free context, and a model turn with
//! the ideal response (the calm phrasebook) and the command JSON the
//! doctrine allows (what the user did next, or `none`).

use serde_json::{Value, json};

use super::dataset::Example;
use super::labels::allowed;
use super::schema::{AlsChannel, Mode, Role, Snapshot};
use super::tone::phrase;

/// The system turn.
pub const DOCTRINE: &str = "You are Prime Brain, the quiet soul of the Studio. Speak calmly and briefly, \
through temperature and energy cues, never raw numbers. Respect the mode: in passive mode only whisper \
and issue no command unless system health is critical; in learning mode issue no intrusive command. \
Never steal control from the creator. Answer with one short line of guidance, then the command JSON \
(type \"none\" when silence is best).";

/// Replaces digits so that no raw number reaches the context.
fn numberless(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_number = false;
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push_str("some");
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

fn level(value: f64, words: [&'static str; 3]) -> &'static str {
    if value < 0.35 {
        words[0]
    } else if value < 0.7 {
        words[1]
    } else {
        words[2]
    }
}

/// The window as calm, number-free context, in `mode` (the window's own,
/// or the one an augmented example replays it under).
pub fn render(window: &[Snapshot], mode: Mode) -> String {
    let last = window.last().expect("windows are non-empty");
    let mut lines = vec![format!("Mode: {}.", mode.name())];
    let transport = &last.transport;
    lines.push(match (transport.is_playing, transport.cycle.enabled) {
        (true, true) => "The transport is playing, looping a section.".to_string(),
        (true, false) => "The transport is playing.".to_string(),
        (false, _) => "The transport is stopped.".to_string(),
    });
    let cue = |channel: AlsChannel| {
        last.als_channels
            .iter()
            .find(|r| r.channel == channel)
            .map(|r| r.normalized)
    };
    let mut feel = Vec::new();
    if let Some(v) = cue(AlsChannel::Temperature) {
        feel.push(format!("temperature {}", level(v, ["cool", "warm", "hot"])));
    }
    if let Some(v) = cue(AlsChannel::Energy) {
        feel.push(format!("energy {}", level(v, ["low", "steady", "high"])));
    }
    if let Some(v) = cue(AlsChannel::Pulse) {
        feel.push(format!("pulse {}", level(v, ["slow", "steady", "driving"])));
    }
    if let Some(v) = cue(AlsChannel::Pressure) {
        feel.push(format!("pressure {}", level(v, ["light", "building", "heavy"])));
    }
    if !feel.is_empty() {
        lines.push(format!("The room feels: {}.", feel.join(", ")));
    }
    if last.audio_metrics.cpu_load > 0.85 || last.audio_metrics.dropouts > 0 {
        lines.push("The engine is straining.".into());
    }
    for flag in &last.ai_analysis_flags {
        lines.push(
            format!(
                "Noticed ({:?}, {:?}): {}",
                flag.category,
                flag.severity,
                numberless(&flag.message)
            )
            .to_lowercase(),
        );
    }
    if let Some(memory) = &last.user_memory_summary
        && !memory.recent_actions.is_empty()
    {
        lines.push(format!(
            "Recently the creator did: {}.",
            numberless(&memory.recent_actions.join(", "))
        ));
    }
    let turns = &last.conversation_turns[last.conversation_turns.len().saturating_sub(10)..];
    for turn in turns {
        let who = match turn.role {
            Role::User => "Creator",
            Role::Prime => "Prime",
        };
        lines.push(format!("{who}: {}", numberless(&turn.text)));
    }
    lines.join("\n")
}

/// One chat-style training conversation.
pub fn conversation(window: &[Snapshot], example: &Example) -> Value {
    let command = &example.command;
    let permitted = command.kind == super::vocabulary::NONE || allowed(example.mode, &command.kind, example.critical);
    let command = if permitted {
        json!({"type": command.kind, "target": command.target})
    } else {
        json!({"type": super::vocabulary::NONE, "target": null})
    };
    let mut command = command;
    if command["target"].is_null() {
        command.as_object_mut().expect("an object").remove("target");
    }
    let answer = format!(
        "{}\n{}",
        phrase(example.guidance.channel, example.guidance.intensity),
        command
    );
    json!({"messages": [
        {"role": "system", "content": DOCTRINE},
        {"role": "user", "content": render(window, example.mode)},
        {"role": "model", "content": answer},
    ]})
}
