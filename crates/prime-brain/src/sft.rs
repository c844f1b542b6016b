//! The instruction-tuning set: the dataset's windows as chat-style JSONL
//! for tuning a hosted LLM elsewhere (the brief's fine-tune cannot run inside
//! the sealed Fabric, but its data is built, audited, hashed and versioned
//! here).
//!
//! Each line is one conversation in the OpenAI chat format (`messages` with
//! roles `system`, `user`, `assistant`): the doctrine, the window rendered as
//! calm, number-free context with at most [`HISTORY_TURNS`] turns of the
//! Studio conversation, and the ideal answer — a calm text from the
//! [`phrasing`](super::phrasing) grammar, then the command JSON the doctrine
//! allows (what the user did next, or `none`). [`to_gemini`] gives the same
//! line in Gemini's tuning format; [`gemini_tuning_job`] prepares a Vertex AI
//! tuning job from the set.
//!
//! [`audit`] reads a written set back and refuses it unless every line has
//! the chat shape, at most [`HISTORY_TURNS`] turns, a text that passes the
//! tone audit, and a text that asks for exactly the command the JSON gives
//! (read by its own lexicon, [`read_answer`], not by the grammar that wrote
//! it); its [`InstructionCard`] hashes the set for releases.

use serde_json::{Value, json};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::dataset::{CommandTarget, Example};
use super::labels::allowed;
use super::schema::{AlsChannel, Mode, Role, Snapshot};
use super::tone::{tone_issues, tone_ok};
use super::vocabulary::{ARCHETYPES, NONE};
use fabric_core::digest::KeyEncoder;

/// Most turns of the Studio conversation a context carries (the brief:
/// history windows of at most 10 turns, against stale context).
pub const HISTORY_TURNS: usize = 10;

/// How a context names the speakers of its conversation turns.
const SPEAKERS: [&str; 2] = ["Creator: ", "Prime: "];

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
    let turns = &last.conversation_turns[last.conversation_turns.len().saturating_sub(HISTORY_TURNS)..];
    for turn in turns {
        let who = match turn.role {
            Role::User => SPEAKERS[0],
            Role::Prime => SPEAKERS[1],
        };
        lines.push(format!("{who}{}", numberless(&turn.text)));
    }
    lines.join("\n")
}

/// One chat-style training conversation. Its command is what the user did
/// next, unless the doctrine forbids it in the mode or the data does not
/// give it in full (an accepted Bloom suggestion carries no arguments):
/// then silence, rather than a command taught half-made.
pub fn conversation(window: &[Snapshot], example: &Example) -> Value {
    let command = &example.command;
    let permitted = command.kind == NONE || allowed(example.mode, &command.kind, example.critical);
    let command = if permitted && command.executable() {
        command.clone()
    } else {
        CommandTarget::none()
    };
    let json = serde_json::to_value(&command).expect("a command serializes");
    let mut seed = KeyEncoder::new("fabric-sft-phrasing-v1");
    seed.text(b's', &example.session)
        .bytes(b'w', &(example.window_end as u64).to_le_bytes())
        .text(b'm', example.mode.name());
    let seed = u64::from_le_bytes(seed.finish().0[..8].try_into().expect("8 bytes"));
    let guidance = &example.guidance;
    let text = super::phrasing::answer(guidance.channel, guidance.intensity, &command, seed);
    json!({"messages": [
        {"role": "system", "content": DOCTRINE},
        {"role": "user", "content": render(window, example.mode)},
        {"role": "assistant", "content": format!("{text}\n{json}")},
    ]})
}

/// What an answer's text asks for, read back from its words.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The command types its action words name.
    pub commands: BTreeSet<&'static str>,
    /// The track archetypes it names.
    pub tracks: BTreeSet<&'static str>,
    /// How strongly it asks (`amount` values).
    pub amounts: BTreeSet<&'static str>,
}

/// The words that ask for each command type. The reader's own lexicon:
/// it does not look at the grammar, so a grammar that drifted from its
/// commands is caught.
const ASKS_FOR: [(&str, &str); 14] = [
    ("transport.play", r"play|plays|playing|roll|start"),
    ("transport.stop", r"pause\w*|stop\w*|halt\w*"),
    ("transport.toggleCycle", r"cycl\w*"),
    ("transport.setTempo", r"tempo|tempi|pace|bpm"),
    ("track.mute", r"mute|muted|muting"),
    ("track.solo", r"solo\w*|alone|on its own"),
    ("track.freeze", r"freez\w*|froze\w*|print|printed|printing"),
    ("engine.setBufferSize", r"engine\w*|buffer\w*"),
    ("mix.eqCut", r"cut|cuts|cutting|carv\w*|trim\w*"),
    ("mix.compress", r"glue\w*|tam(?:e|ed|ing)|squeez\w*|compress\w*"),
    ("mix.addReverb", r"reverb\w*|air|space"),
    ("mix.balanceLevels", r"(?:re)?balanc\w*|levels?"),
    ("arrange.loopSection", r"loop\w*"),
    ("arrange.duplicateSection", r"repeat\w*|duplicat\w*"),
];

/// The words that name each track archetype.
const NAMES_TRACK: [(&str, &str); 9] = [
    ("drums", r"drums?"),
    ("bass", r"bass"),
    ("keys", r"keys"),
    ("vocals", r"vocals?|vox"),
    ("guitar", r"guitars?"),
    ("synth", r"synths?"),
    ("fx", r"fx|effects"),
    ("bus", r"bus|group"),
    ("master", r"master"),
];

/// The words that say how strongly, by `amount` value.
const SAYS_AMOUNT: [(&str, &str); 3] = [
    ("gentle", r"gentl\w*|light|lightly|soft|softly|a little|a touch"),
    ("moderate", r"moderat\w*|a fair bit|somewhat"),
    ("strong", r"firm\w*|deep\w*|generous\w*|strong\w*"),
];

/// Each lexicon as whole-word patterns.
static READERS: LazyLock<[Vec<(&'static str, Regex)>; 3]> = LazyLock::new(|| {
    let compile = |lexicon: &[(&'static str, &str)]| {
        lexicon
            .iter()
            .map(|(name, words)| {
                (
                    *name,
                    Regex::new(&format!(r"(?i)\b(?:{words})\b")).expect("valid regex"),
                )
            })
            .collect()
    };
    [compile(&ASKS_FOR), compile(&NAMES_TRACK), compile(&SAYS_AMOUNT)]
});

/// What `text` asks for: every command type whose words it uses, every
/// track it names, every amount it says.
pub fn read_answer(text: &str) -> Reading {
    let [commands, tracks, amounts] = &*READERS;
    let heard = |lexicon: &[(&'static str, Regex)]| {
        lexicon
            .iter()
            .filter(|(_, words)| words.is_match(text))
            .map(|(name, _)| *name)
            .collect()
    };
    Reading {
        commands: heard(commands),
        tracks: heard(tracks),
        amounts: heard(amounts),
    }
}

/// The `kind` of an [`InstructionCard`], by which a release knows it.
pub const CARD_KIND: &str = "instruction-tuning";

/// The instruction-tuning set's card: what [`audit`] checked and the hash a
/// release lists.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstructionCard {
    /// What the card describes: [`CARD_KIND`].
    pub kind: &'static str,
    /// BLAKE3 over both files' bytes.
    pub dataset_hash: String,
    /// The line format (`openai-chat`; `fabric train --base-model gemini-…`
    /// converts it to Gemini's).
    pub format: &'static str,
    /// File names: `train` (the tuning data) and `test` (the held-out
    /// prompts a tuned model is scored on, in the test split's order).
    pub files: BTreeMap<String, String>,
    /// Conversations per file.
    pub conversations: BTreeMap<String, usize>,
    /// Distinct answer commands in the tuning data (type and target).
    pub situations: usize,
    /// Distinct answer texts in the tuning data.
    pub distinct_texts: usize,
    /// Distinct texts per situation, by the answer's command JSON.
    pub texts_per_situation: BTreeMap<String, usize>,
    /// Most conversation turns in one context (at most [`HISTORY_TURNS`]).
    pub most_history_turns: usize,
}

/// Reads the set back — the tuning data at `train` and the held-out
/// conversations at `test` — and checks every line (see the module doc);
/// the first problems are reported by file and line, and nothing is
/// certified then.
pub fn audit(train: &Path, test: &Path) -> anyhow::Result<InstructionCard> {
    let mut texts: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut most_turns = 0;
    let mut conversations = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut hash = KeyEncoder::new("fabric-instruction-set-v1");
    for (split, path) in [("train", train), ("test", test)] {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        hash.bytes(split.as_bytes()[1], &bytes);
        for (number, line) in text.lines().enumerate() {
            match check_line(line) {
                Ok(checked) => {
                    most_turns = most_turns.max(checked.turns);
                    if split == "train" {
                        texts.entry(checked.command).or_default().insert(checked.text);
                    }
                }
                Err(problem) => problems.push(format!("{}:{}: {problem}", path.display(), number + 1)),
            }
        }
        conversations.insert(split.to_string(), text.lines().count());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        files.insert(split.to_string(), name.unwrap_or_default());
    }
    if !problems.is_empty() {
        let shown = problems.len().min(5);
        anyhow::bail!(
            "the instruction-tuning set fails its audit on {} lines:\n  {}{}",
            problems.len(),
            problems[..shown].join("\n  "),
            if problems.len() > shown { "\n  …" } else { "" }
        );
    }
    Ok(InstructionCard {
        kind: CARD_KIND,
        dataset_hash: hash.finish().to_string(),
        format: "openai-chat",
        files,
        conversations,
        situations: texts.len(),
        distinct_texts: texts.values().flatten().collect::<BTreeSet<_>>().len(),
        texts_per_situation: texts.into_iter().map(|(c, t)| (c, t.len())).collect(),
        most_history_turns: most_turns,
    })
}

/// One line that passed [`check_line`].
struct CheckedLine {
    /// The answer's command JSON, as written.
    command: String,
    text: String,
    turns: usize,
}

/// The checks of one line of the set.
fn check_line(line: &str) -> Result<CheckedLine, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let messages = value
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("no `messages` array")?;
    let roles: Vec<&str> = messages.iter().filter_map(|m| m.get("role")?.as_str()).collect();
    if roles != ["system", "user", "assistant"] {
        return Err(format!("roles {roles:?}, not system, user, assistant"));
    }
    let content = |i: usize| messages[i].get("content").and_then(Value::as_str);
    let (Some(_), Some(context), Some(_)) = (content(0), content(1), content(2)) else {
        return Err("a message without text `content`".into());
    };
    let turns = context
        .lines()
        .filter(|l| SPEAKERS.iter().any(|s| l.starts_with(s)))
        .count();
    if turns > HISTORY_TURNS {
        return Err(format!("{turns} conversation turns; at most {HISTORY_TURNS}"));
    }
    let answer = content(2).unwrap_or_default();
    let (text, command) = answer
        .split_once('\n')
        .ok_or("the answer is not a text line then a command JSON line")?;
    let command: Value = serde_json::from_str(command).map_err(|e| format!("the answer's command: {e}"))?;
    let kind = command
        .get("type")
        .and_then(Value::as_str)
        .ok_or("the answer's command has no `type`")?;
    let target = command.get("target").and_then(Value::as_str);
    let executable = serde_json::from_value::<CommandTarget>(command.clone()).is_ok_and(|c| c.executable());
    if !executable {
        return Err(format!(
            "the answer's command {command} cannot be executed (unknown type, or a target or argument missing or invalid)"
        ));
    }
    if !tone_ok(text) {
        let issues: Vec<&str> = tone_issues(text).iter().map(|i| i.name()).collect();
        return Err(format!("the answer `{text}` is not calm ({})", issues.join(", ")));
    }
    let reading = read_answer(text);
    let expected = Reading {
        commands: (kind != NONE)
            .then_some(kind)
            .into_iter()
            .filter_map(known_command)
            .collect(),
        tracks: target.into_iter().filter_map(known_archetype).collect(),
        amounts: command
            .pointer("/args/amount")
            .and_then(Value::as_str)
            .and_then(|amount| SAYS_AMOUNT.iter().find(|(name, _)| *name == amount))
            .map(|(name, _)| *name)
            .into_iter()
            .collect(),
    };
    if reading != expected {
        return Err(format!(
            "the answer `{text}` asks for {} but its command is {command}",
            describe(&reading)
        ));
    }
    Ok(CheckedLine {
        command: command.to_string(),
        text: text.to_string(),
        turns,
    })
}

fn known_command(kind: &str) -> Option<&'static str> {
    super::vocabulary::command(kind).map(|c| c.kind)
}

fn known_archetype(name: &str) -> Option<&'static str> {
    ARCHETYPES.iter().find(|a| **a == name).copied()
}

fn describe(reading: &Reading) -> String {
    let mut parts: Vec<String> = reading.commands.iter().map(|c| format!("`{c}`")).collect();
    parts.extend(reading.tracks.iter().map(|t| format!("the {t}")));
    parts.extend(reading.amounts.iter().map(|a| format!("a {a} amount")));
    if parts.is_empty() {
        return "nothing".into();
    }
    parts.join(" and ")
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
    /// The held-out prompts as `generateContent` requests, in the test
    /// split's order.
    pub prompts: std::path::PathBuf,
    /// The `tuningJobs.create` request body.
    pub request: std::path::PathBuf,
    /// How to submit it and score the tuned model.
    pub readme: std::path::PathBuf,
    /// Conversations written.
    pub examples: usize,
}

/// Converts each chat line of `from` with `convert` into `to`; a line that
/// is not a chat conversation is an error naming it.
fn convert_lines(from: &Path, to: &Path, convert: impl Fn(&Value) -> Option<Value>) -> std::io::Result<usize> {
    use std::io::{BufRead, Write};
    let mut out = std::io::BufWriter::new(std::fs::File::create(to)?);
    let mut lines = 0;
    for (number, line) in std::io::BufReader::new(std::fs::File::open(from)?).lines().enumerate() {
        let line = line?;
        let converted = serde_json::from_str::<Value>(&line)
            .ok()
            .as_ref()
            .and_then(&convert)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "{}:{}: not a chat conversation (`messages` with system/user/assistant roles)",
                    from.display(),
                    number + 1
                ))
            })?;
        serde_json::to_writer(&mut out, &converted)?;
        out.write_all(b"\n")?;
        lines += 1;
    }
    out.flush()?;
    Ok(lines)
}

/// A conversation's prompt (its system and user turns, without the answer)
/// as a Gemini `generateContent` request.
fn gemini_prompt(conversation: &Value) -> Option<Value> {
    let mut line = to_gemini(conversation)?;
    let contents = line.get_mut("contents")?.as_array_mut()?;
    (contents.pop()?.get("role")? == "model").then_some(())?;
    Some(json!({ "request": line }))
}

/// Prepares a Vertex AI supervised-tuning job of `base_model` from the
/// instruction-tuning set `sft` into `output_dir`: the tuning data and the
/// held-out prompts converted to Gemini's format, the request body with the
/// epochs and learning-rate multiplier, and a README with the commands that
/// submit it and score the tuned model with `fabric evaluate --predictions`.
/// The tuning itself runs on the hosted service, never here.
pub fn gemini_tuning_job(
    sft: &super::dataset::InstructionPaths,
    test_dataset: &Path,
    output_dir: &Path,
    base_model: &str,
    epochs: usize,
    learning_rate_multiplier: f64,
) -> std::io::Result<TuningJob> {
    std::fs::create_dir_all(output_dir)?;
    let data = output_dir.join("tuning-data.jsonl");
    let examples = convert_lines(&sft.data, &data, to_gemini)?;
    let prompts = output_dir.join("test-prompts.jsonl");
    let test_examples = convert_lines(&sft.test, &prompts, gemini_prompt)?;
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
    let test_dataset = test_dataset.display();
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
## Scoring the tuned model\n\n\
`test-prompts.jsonl` holds the {test_examples} held-out prompts, one `generateContent` request \
per example of `{test_dataset}`, in its order. Ask the tuned endpoint each one in order and \
keep its answer (a calm line, then the command JSON) as one prediction line:\n\n\
```sh\n\
jq -c .request test-prompts.jsonl | while read -r request; do\n\
  curl -s -X POST -H \"Authorization: Bearer $(gcloud auth print-access-token)\" \\\n\
    -H 'Content-Type: application/json' -d \"$request\" \\\n\
    \"https://REGION-aiplatform.googleapis.com/v1/ENDPOINT:generateContent\" |\n\
  jq -c '.candidates[0].content.parts[0].text | split(\"\\n\") | {{response: .[0], command: (.[1] | fromjson? // {{}})}}'\n\
done > answers.jsonl\n\
fabric evaluate --predictions answers.jsonl --test-dataset {test_dataset} --output-report reports/tuned.md\n\
```\n\n\
An answer whose command is not a well-formed command JSON is scored invalid, and as an intervention.\n"
        ),
    )?;
    Ok(TuningJob {
        data,
        prompts,
        request,
        readme,
        examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(context: &str, answer: &str) -> String {
        json!({"messages": [
            {"role": "system", "content": DOCTRINE},
            {"role": "user", "content": context},
            {"role": "assistant", "content": answer},
        ]})
        .to_string()
    }

    fn audit_lines(lines: &[String]) -> anyhow::Result<InstructionCard> {
        let dir = tempfile::tempdir()?;
        let (train, test) = (dir.path().join("set.jsonl"), dir.path().join("set-test.jsonl"));
        std::fs::write(&train, lines.join("\n") + "\n")?;
        std::fs::write(&test, "")?;
        audit(&train, &test)
    }

    #[test]
    fn the_reader_hears_what_a_text_asks_for() {
        let reading = read_answer("The low end feels crowded; a gentle cut on the bass would let it breathe.");
        assert_eq!(reading.commands, BTreeSet::from(["mix.eqCut"]));
        assert_eq!(reading.tracks, BTreeSet::from(["bass"]));
        assert_eq!(reading.amounts, BTreeSet::from(["gentle"]));
        assert_eq!(read_answer("All calm; the pulse is steady."), Reading::default());
    }

    #[test]
    fn the_audit_refuses_a_set_whose_text_and_command_disagree() {
        let context = "Mode: active.\nThe transport is stopped.";
        let good = line(
            context,
            "The low end feels crowded. Perhaps carve a little from the bass.\n{\"args\":{\"amount\":\"gentle\"},\"target\":\"bass\",\"type\":\"mix.eqCut\"}",
        );
        let card = audit_lines(std::slice::from_ref(&good)).unwrap();
        assert_eq!((card.situations, card.distinct_texts), (1, 1));
        let bad: [(String, &str); 8] = [
            // The right command, said more strongly than its amount.
            (
                line(
                    context,
                    "Perhaps carve the bass back firmly.\n{\"args\":{\"amount\":\"gentle\"},\"target\":\"bass\",\"type\":\"mix.eqCut\"}",
                ),
                "asks for `mix.eqCut` and the bass and a strong amount",
            ),
            // A command the Studio could not execute: no amount.
            (
                line(
                    context,
                    "Perhaps carve a little from the bass.\n{\"target\":\"bass\",\"type\":\"mix.eqCut\"}",
                ),
                "cannot be executed",
            ),
            // The old phrasebook's text with another command.
            (
                line(
                    context,
                    "The low end feels crowded; a gentle cut would let it breathe.\n{\"type\":\"transport.play\"}",
                ),
                "asks for `mix.eqCut` and a gentle amount but its command is",
            ),
            // The right command on the wrong track.
            (
                line(
                    context,
                    "Perhaps carve a little from the bass.\n{\"args\":{\"amount\":\"gentle\"},\"target\":\"vocals\",\"type\":\"mix.eqCut\"}",
                ),
                "asks for `mix.eqCut` and the bass",
            ),
            // Silence that suggests an action.
            (
                line(context, "The mix feels warm; loop this section.\n{\"type\":\"none\"}"),
                "asks for `arrange.loopSection`",
            ),
            (
                line(
                    context,
                    "Cut the bass right now!\n{\"args\":{\"amount\":\"gentle\"},\"target\":\"bass\",\"type\":\"mix.eqCut\"}",
                ),
                "is not calm (urgent, shouting)",
            ),
            (
                line(
                    &format!("{context}\n{}", "Creator: more\n".repeat(HISTORY_TURNS + 1)),
                    "All calm; the pulse is steady.\n{\"type\":\"none\"}",
                ),
                "11 conversation turns; at most 10",
            ),
            (
                json!({"messages": [{"role": "user", "content": context}, {"role": "model", "content": "x"}]})
                    .to_string(),
                "not system, user, assistant",
            ),
        ];
        for (line, expected) in bad {
            let error = audit_lines(&[good.clone(), line]).unwrap_err().to_string();
            assert!(error.contains("set.jsonl:2: ") && error.contains(expected), "{error}");
        }
    }
}
