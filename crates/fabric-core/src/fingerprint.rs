//! Stage fingerprints: the cache key of a stage, and why it changed.
//!
//! The key is data ([`Inputs`]): everything that can change a stage's
//! outputs, in a fixed order, hashed through [`KeyEncoder`] (tagged,
//! length-prefixed fields under a versioned domain). The lock stores the
//! `Inputs` beside the fingerprint so `status` and `explain` can name what
//! changed ([`DirtyReason`]).
//!
//! | enters the fingerprint | why |
//! | --- | --- |
//! | format version (`fabric-fingerprint-v1`) | a new encoding never matches an old one |
//! | the `cmd` after interpolation, and `wdir` | the command is the computation |
//! | or: the step name and its implementation version | a new step version may write other bytes |
//! | `with` as canonical JSON (keys sorted) | step arguments |
//! | each param referenced by `cmd` or `with`, canonical JSON | params reach the stage through interpolation (one used only in deps or outs is already there as the path) |
//! | each dep: path and content hash (Merkle tree for directories and globs) | the inputs |
//! | declared `env` variables: name and a hash of the value (or "unset") | declared environment |
//! | the declared out paths | moving an out is a different stage |
//! | platform (OS, architecture) for `cmd` stages | never reuse a cache across platforms |
//! | step facts (e.g. the ONNX Runtime version) | what else changes a step's output |
//!
//! Deliberately left out: mtimes (content decides, not timestamps), absolute
//! paths (moving the workspace keeps every hit), undeclared environment,
//! comments and key order in the manifest (the key is built from parsed
//! values), the stage's `description` and `after` (they do not change outputs).

use std::fmt;

use litemap::LiteMap;

use serde::{Deserialize, Serialize};

use crate::digest::{Digest, KeyEncoder};

/// The version of the fingerprint encoding.
pub const FORMAT: &str = "fabric-fingerprint-v1";

/// How a stage computes its outs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ActionKey {
    /// A shell command and its working directory.
    Cmd {
        cmd: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        wdir: String,
    },
    /// A built-in step and its version.
    Step { step: String, version: u32 },
}

/// Everything that enters a stage's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// The command or step.
    #[serde(flatten)]
    pub action: ActionKey,
    /// Step arguments as canonical JSON (empty for commands).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub with: String,
    /// Referenced params as canonical JSON.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub params: LiteMap<String, String>,
    /// Dep path (or glob) → content hash; `missing` when absent.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub deps: LiteMap<String, String>,
    /// Env variable → short hash of its value, or `unset`.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub env: LiteMap<String, String>,
    /// Declared outs, in declaration order.
    #[serde(default)]
    pub outs: Vec<String>,
    /// `os-arch` for commands.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Step facts.
    #[serde(default, skip_serializing_if = "LiteMap::is_empty")]
    pub facts: LiteMap<String, String>,
}

/// The value recorded for a dep that does not exist.
pub const MISSING: &str = "missing";

impl Inputs {
    /// The fingerprint: BLAKE3 over the canonical encoding.
    pub fn fingerprint(&self) -> Digest {
        let mut key = KeyEncoder::new(FORMAT);
        match &self.action {
            ActionKey::Cmd { cmd, wdir } => key.text(b'c', cmd).text(b'w', wdir),
            ActionKey::Step { step, version } => key.text(b's', step).bytes(b'v', &version.to_le_bytes()),
        };
        key.text(b'W', &self.with);
        for (tag, map) in [
            (b'p', &self.params),
            (b'd', &self.deps),
            (b'e', &self.env),
            (b'f', &self.facts),
        ] {
            key.bytes(tag, &(map.len() as u64).to_le_bytes());
            for (name, value) in map {
                key.text(b'k', name).text(b'v', value);
            }
        }
        key.bytes(b'o', &(self.outs.len() as u64).to_le_bytes());
        for out in &self.outs {
            key.text(b'k', out);
        }
        key.text(b'P', &self.platform);
        key.finish()
    }
}

/// The platform string of this build.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

/// Canonical JSON: object keys sorted, no whitespace.
pub fn canonical_json(value: &serde_json::Value) -> String {
    // serde_json's map is a BTreeMap (no `preserve_order`), so keys are sorted.
    value.to_string()
}

/// Why a stage must run (or be restored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirtyReason {
    /// No lock entry.
    NeverRan,
    /// `--force`.
    Forced,
    /// `always_run = true`.
    AlwaysRun,
    /// The command text changed.
    CommandChanged { old: String, new: String },
    /// `wdir` changed.
    WdirChanged { old: String, new: String },
    /// The stage switched between command and step, or to another step.
    ActionChanged { old: String, new: String },
    /// The step implementation's version changed.
    StepVersionChanged { step: String, old: u32, new: u32 },
    /// `with` arguments changed.
    WithChanged { old: String, new: String },
    /// A param's value changed, or it was added or removed.
    ParamChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// A dep's content changed.
    DepChanged { path: String, old: String, new: String },
    /// A dep was added to the stage.
    DepAdded { path: String },
    /// A dep was removed from the stage.
    DepRemoved { path: String },
    /// A declared environment variable changed.
    EnvChanged { name: String },
    /// The declared env variables changed.
    EnvDeclarationChanged,
    /// The declared outs changed.
    OutsChanged { old: Vec<String>, new: Vec<String> },
    /// Another platform recorded the lock.
    PlatformChanged { old: String, new: String },
    /// A step fact changed (e.g. runtime version).
    FactChanged {
        name: String,
        old: Option<String>,
        new: Option<String>,
    },
    /// An out was edited or deleted by hand.
    OutModified { path: String },
    /// An out is missing.
    OutMissing { path: String },
    /// A stage upstream will run (or be restored) first.
    UpstreamStale { stage: String, restored: bool },
}

fn show(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(none)")
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DirtyReason::*;
        match self {
            NeverRan => write!(
                f,
                "it has no entry in Fabric.lock (it never ran successfully, or its last run failed or was interrupted)"
            ),
            Forced => write!(f, "it was forced with --force"),
            AlwaysRun => write!(f, "it is marked always_run"),
            CommandChanged { old, new } => write!(f, "the command changed from `{old}` to `{new}`"),
            WdirChanged { old, new } => write!(f, "wdir changed from `{old}` to `{new}`"),
            ActionChanged { old, new } => write!(f, "the action changed from {old} to {new}"),
            StepVersionChanged { step, old, new } => {
                write!(f, "step `{step}` changed implementation version from {old} to {new}")
            }
            WithChanged { old, new } => write!(f, "the `with` arguments changed from {old} to {new}"),
            ParamChanged { name, old, new } => {
                write!(f, "param `{name}` changed from {} to {}", show(old), show(new))
            }
            DepChanged { path, old, new } => {
                write!(f, "dep `{path}` changed (content {} → {})", short(old), short(new))
            }
            DepAdded { path } => write!(f, "dep `{path}` was added"),
            DepRemoved { path } => write!(f, "dep `{path}` was removed"),
            EnvChanged { name } => write!(f, "environment variable `{name}` changed"),
            EnvDeclarationChanged => write!(f, "the declared env variables changed"),
            OutsChanged { old, new } => write!(f, "the outs changed from [{}] to [{}]", old.join(", "), new.join(", ")),
            PlatformChanged { old, new } => write!(f, "the platform changed from {old} to {new}"),
            FactChanged { name, old, new } => write!(f, "`{name}` changed from {} to {}", show(old), show(new)),
            OutModified { path } => write!(f, "out `{path}` was modified since it was recorded"),
            OutMissing { path } => write!(f, "out `{path}` is missing"),
            UpstreamStale { stage, restored: false } => write!(f, "upstream stage `{stage}` will run first"),
            UpstreamStale { stage, restored: true } => {
                write!(f, "upstream stage `{stage}` will be restored from the cache first")
            }
        }
    }
}

fn short(hash: &str) -> &str {
    if hash.len() > 12 { &hash[..12] } else { hash }
}

/// Every component that differs between the recorded and the current inputs,
/// one reason each.
pub fn diff(old: &Inputs, new: &Inputs) -> Vec<DirtyReason> {
    let mut reasons = Vec::new();
    match (&old.action, &new.action) {
        (ActionKey::Cmd { cmd: a, wdir: wa }, ActionKey::Cmd { cmd: b, wdir: wb }) => {
            if a != b {
                reasons.push(DirtyReason::CommandChanged {
                    old: a.clone(),
                    new: b.clone(),
                });
            }
            if wa != wb {
                reasons.push(DirtyReason::WdirChanged {
                    old: wa.clone(),
                    new: wb.clone(),
                });
            }
        }
        (ActionKey::Step { step: a, version: va }, ActionKey::Step { step: b, version: vb }) if a == b => {
            if va != vb {
                reasons.push(DirtyReason::StepVersionChanged {
                    step: a.clone(),
                    old: *va,
                    new: *vb,
                });
            }
        }
        (a, b) => reasons.push(DirtyReason::ActionChanged {
            old: describe(a),
            new: describe(b),
        }),
    }
    if old.with != new.with {
        reasons.push(DirtyReason::WithChanged {
            old: old.with.clone(),
            new: new.with.clone(),
        });
    }
    for (name, old_value, new_value) in changed_entries(&old.params, &new.params) {
        reasons.push(DirtyReason::ParamChanged {
            name,
            old: old_value,
            new: new_value,
        });
    }
    for (path, old_hash, new_hash) in changed_entries(&old.deps, &new.deps) {
        reasons.push(match (old_hash, new_hash) {
            (None, _) => DirtyReason::DepAdded { path },
            (_, None) => DirtyReason::DepRemoved { path },
            (Some(old), Some(new)) => DirtyReason::DepChanged { path, old, new },
        });
    }
    if old.env.keys().ne(new.env.keys()) {
        reasons.push(DirtyReason::EnvDeclarationChanged);
    } else {
        for (name, _, _) in changed_entries(&old.env, &new.env) {
            reasons.push(DirtyReason::EnvChanged { name });
        }
    }
    if old.outs != new.outs {
        reasons.push(DirtyReason::OutsChanged {
            old: old.outs.clone(),
            new: new.outs.clone(),
        });
    }
    if old.platform != new.platform {
        reasons.push(DirtyReason::PlatformChanged {
            old: old.platform.clone(),
            new: new.platform.clone(),
        });
    }
    for (name, old_value, new_value) in changed_entries(&old.facts, &new.facts) {
        reasons.push(DirtyReason::FactChanged {
            name,
            old: old_value,
            new: new_value,
        });
    }
    reasons
}

fn describe(action: &ActionKey) -> String {
    match action {
        ActionKey::Cmd { cmd, .. } => format!("command `{cmd}`"),
        ActionKey::Step { step, .. } => format!("step `{step}`"),
    }
}

type Change = (String, Option<String>, Option<String>);

fn changed_entries(old: &LiteMap<String, String>, new: &LiteMap<String, String>) -> Vec<Change> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|name| old.get(*name) != new.get(*name))
        .map(|name| (name.clone(), old.get(name).cloned(), new.get(name).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inputs {
        Inputs {
            action: ActionKey::Cmd {
                cmd: "echo hi > out".into(),
                wdir: String::new(),
            },
            with: String::new(),
            params: LiteMap::from_iter([("seed".into(), "57".into())]),
            deps: LiteMap::from_iter([("in.txt".into(), "ab".repeat(32))]),
            env: LiteMap::from_iter([("THEME".into(), MISSING.into())]),
            outs: vec!["out".into()],
            platform: platform(),
            facts: LiteMap::new(),
        }
    }

    #[test]
    fn every_component_changes_the_fingerprint() {
        let base = sample();
        type Mutation = Box<dyn Fn(&mut Inputs)>;
        let mutations: Vec<Mutation> = vec![
            Box::new(|i| {
                i.action = ActionKey::Cmd {
                    cmd: "echo ho > out".into(),
                    wdir: String::new(),
                }
            }),
            Box::new(|i| {
                i.action = ActionKey::Cmd {
                    cmd: "echo hi > out".into(),
                    wdir: "sub".into(),
                }
            }),
            Box::new(|i| {
                i.action = ActionKey::Step {
                    step: "x".into(),
                    version: 1,
                }
            }),
            Box::new(|i| i.with = "{}".into()),
            Box::new(|i| {
                i.params.insert("seed".into(), "58".into());
            }),
            Box::new(|i| {
                i.deps.insert("in.txt".into(), "cd".repeat(32));
            }),
            Box::new(|i| {
                i.env.insert("THEME".into(), "1234".into());
            }),
            Box::new(|i| i.outs.push("other".into())),
            Box::new(|i| i.platform = "plan9-mips".into()),
            Box::new(|i| {
                i.facts.insert("ort".into(), "1.31".into());
            }),
        ];
        for (n, mutate) in mutations.iter().enumerate() {
            let mut changed = base.clone();
            mutate(&mut changed);
            assert_ne!(changed.fingerprint(), base.fingerprint(), "mutation {n}");
            assert!(!diff(&base, &changed).is_empty(), "mutation {n} has a reason");
        }
        assert_eq!(sample().fingerprint(), base.fingerprint());
        assert!(diff(&base, &sample()).is_empty());
    }

    #[test]
    fn reasons_read_as_sentences() {
        let mut new = sample();
        new.params.insert("seed".into(), "58".into());
        let reasons = diff(&sample(), &new);
        assert_eq!(reasons.len(), 1);
        assert_eq!(reasons[0].to_string(), "param `seed` changed from 57 to 58");
    }
}
