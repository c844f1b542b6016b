//! The instruction-tuning export: the dataset's windows as chat-style JSONL
//! for tuning a hosted LLM elsewhere (the brief's fine-tune cannot run inside
//! the sealed Fabric, but its data is built, hashed and versioned here).
//!
//! Each line is one conversation in the OpenAI chat format (`messages` with
//! roles `system`, `user`, `assistant`): the doctrine, the window rendered as
//! calm, number-free context, and the ideal response (the calm phrasebook)
//! with the command JSON the doctrine allows (what the user did next, or
//! `none`). [`gemini_tuning_job`] turns it into a Vertex AI Gemini
//! supervised-tuning job.

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
        {"role": "assistant", "content": answer},
    ]})
}

/// One export line in Vertex AI's Gemini supervised-tuning format:
/// `systemInstruction` plus `contents` of `user` and `model` turns, each
/// with text `parts`. None for a line that is not a chat conversation.
pub fn to_gemini(conversation: &Value) -> Option<Value> {
    let messages = conversation.get("messages")?.as_array()?;
    let text = |message: &Value| message.get("content").and_then(Value::as_str).map(str::to_string);
    let mut system = None;
    let mut contents = Vec::new();
    for message in messages {
        let role = match message.get("role")?.as_str()? {
            "system" => {
                system = Some(text(message)?);
                continue;
            }
            "user" => "user",
            "assistant" => "model",
            _ => return None,
        };
        contents.push(json!({"role": role, "parts": [{"text": text(message)?}]}));
    }
    let mut line = json!({ "contents": contents });
    if let Some(system) = system {
        line["systemInstruction"] = json!({"role": "system", "parts": [{"text": system}]});
    }
    Some(line)
}

/// What [`gemini_tuning_job`] wrote.
pub struct TuningJob {
    /// The training data in Gemini's tuning format.
    pub data: std::path::PathBuf,
    /// The `tuningJobs.create` request body.
    pub request: std::path::PathBuf,
    /// How to submit it.
    pub readme: std::path::PathBuf,
    /// Conversations written.
    pub examples: usize,
}

/// Prepares a Vertex AI supervised-tuning job of `base_model` from the
/// instruction-tuning export `sft` into `output_dir`: the data converted to
/// Gemini's format, the request body with the epochs and learning-rate
/// multiplier, and a README with the commands that submit it. The tuning
/// itself runs on the hosted service, never here.
pub fn gemini_tuning_job(
    sft: &std::path::Path,
    output_dir: &std::path::Path,
    base_model: &str,
    epochs: usize,
    learning_rate_multiplier: f64,
) -> std::io::Result<TuningJob> {
    use std::io::{BufRead, Write};
    std::fs::create_dir_all(output_dir)?;
    let data = output_dir.join("tuning-data.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&data)?);
    let mut examples = 0;
    for (number, line) in std::io::BufReader::new(std::fs::File::open(sft)?).lines().enumerate() {
        let line = line?;
        let converted = serde_json::from_str::<Value>(&line)
            .ok()
            .as_ref()
            .and_then(to_gemini)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}:{}: not a chat conversation (`messages` with system/user/assistant roles)",
                    sft.display(),
                    number + 1
                ))
            })?;
        serde_json::to_writer(&mut out, &converted)?;
        out.write_all(b"\n")?;
        examples += 1;
    }
    out.flush()?;
    let request_body = json!({
        "baseModel": base_model,
        "tunedModelDisplayName": format!("prime-brain-{base_model}"),
        "supervisedTuningSpec": {
            "trainingDatasetUri": "gs://BUCKET/prime-brain/tuning-data.jsonl",
            "hyperParameters": {
                "epochCount": epochs,
                "learningRateMultiplier": learning_rate_multiplier,
            },
        },
    });
    let request = output_dir.join("tuning-job.json");
    std::fs::write(&request, serde_json::to_string_pretty(&request_body)? + "\n")?;
    let readme = output_dir.join("TUNING.md");
    std::fs::write(
        &readme,
        format!(
            "# Tuning {base_model} on the Prime Brain instruction set\n\n\
The tuning runs on Vertex AI, not inside Fabric. `tuning-data.jsonl` holds {examples} \
conversations in Gemini's supervised-tuning format; `tuning-job.json` is the \
`tuningJobs.create` request ({epochs} epochs, learning-rate multiplier {learning_rate_multiplier}).\n\n\
```sh\n\
gcloud storage cp tuning-data.jsonl gs://BUCKET/prime-brain/tuning-data.jsonl\n\
sed -i 's#gs://BUCKET#gs://YOUR-BUCKET#' tuning-job.json\n\
curl -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\" \\\n\
  -H 'Content-Type: application/json' -d @tuning-job.json \\\n\
  \"https://REGION-aiplatform.googleapis.com/v1/projects/PROJECT/locations/REGION/tuningJobs\"\n\
```\n\n\
Afterwards, score the tuned model's answers to the test split with \
`fabric evaluate --predictions answers.jsonl --test-dataset ... --output-report ...`.\n"
        ),
    )?;
    Ok(TuningJob {
        data,
        request,
        readme,
        examples,
    })
}
