//! Built-in steps: the [`Step`] trait and the [`Registry`] of steps a stage
//! can name with `step = "..."`.
//!
//! A step is a function of its `with` arguments and its deps. It writes its
//! outs to the paths the runner hands it (temporary paths, renamed into place
//! after success), never shells out, and declares a version that enters the
//! fingerprint: bump it whenever the step's output for the same inputs changes.

pub mod release;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

/// What a step sees when it runs.
pub struct StepContext<'a> {
    /// The workspace root.
    pub root: &'a Path,
    /// The resolved `with` arguments.
    pub with: &'a Json,
    /// Absolute paths of the stage's deps, in declaration order.
    pub deps: Vec<PathBuf>,
    /// Where to write each declared out, in declaration order.
    pub outs: Vec<PathBuf>,
    /// The declared out paths (workspace-relative), for steps that record names.
    pub declared: Vec<String>,
    /// Lock entries of the stages upstream of this one, by name (for steps
    /// that record provenance, like releases).
    pub upstream: BTreeMap<String, std::sync::Arc<crate::lock::LockEntry>>,
    /// Where the stage keeps its step memo (`.fabric/memo/STAGE`).
    pub memo_path: PathBuf,
    /// Hashes files through the workspace's stat cache.
    pub hasher: &'a crate::hash::Hasher<'a>,
    /// The content hash of every file in the deps (absolute path → hash), as
    /// hashed for the stage's fingerprint.
    pub dep_files: std::collections::HashMap<PathBuf, crate::digest::Digest>,
    /// Tells the user something worth knowing that does not fail the stage
    /// (shown as a warning of the stage).
    pub note: &'a (dyn Fn(&str) + Sync),
    /// Whether the run was interrupted (Ctrl-C, SIGTERM): a step that works
    /// long asks between units of work and gives up (see [`INTERRUPTED`]).
    pub interrupted: &'a (dyn Fn() -> bool + Sync),
}

/// What a step that gave up because the run was interrupted fails with.
pub const INTERRUPTED: &str = "interrupted";

impl StepContext<'_> {
    /// The stage's memo for `step`: results of earlier runs of this step
    /// version, with these arguments and step facts, per unchanged input file.
    pub fn memo(&self, step: &dyn Step) -> crate::memo::Memo<'_> {
        let mut domain = crate::digest::KeyEncoder::new("fabric-step-memo-v2");
        domain
            .text(b's', step.name())
            .bytes(b'v', &step.version().to_le_bytes())
            .text(b'f', env!("CARGO_PKG_VERSION"))
            .text(b'w', &crate::fingerprint::canonical_json(self.with));
        for (name, value) in step.facts(self.root) {
            domain.text(b'n', &name).text(b'x', &value);
        }
        crate::memo::Memo {
            path: self.memo_path.clone(),
            domain: domain.finish(),
            hasher: self.hasher,
            known: &self.dep_files,
        }
    }
}

/// A built-in step.
pub trait Step: Send + Sync {
    /// The name stages use (`prime.sanitize`).
    fn name(&self) -> &'static str;
    /// The implementation version; part of every fingerprint using the step.
    fn version(&self) -> u32;
    /// One line for `fabric steps`.
    fn summary(&self) -> &'static str;
    /// Checks the `with` arguments when the manifest loads.
    fn check(&self, with: &Json) -> Result<(), String>;
    /// Facts besides the inputs that change the output (e.g. a runtime
    /// version), for a workspace at `root`.
    fn facts(&self, root: &Path) -> BTreeMap<String, String> {
        let _ = root;
        BTreeMap::new()
    }
    /// Takes from the workspace at `root` what the step keeps for the whole
    /// process (e.g. a runtime library installed under `.fabric/`), before
    /// stages run in a copy of the workspace that lacks it (`verify --reproduce`).
    fn prepare(&self, root: &Path) {
        let _ = root;
    }
    /// Produces the outs.
    fn run(&self, context: &StepContext) -> anyhow::Result<()>;
}

/// A step option with a value its type allows but the step does not: its
/// name as in `with` and the rule it breaks. Shown as `with` names it, or as
/// the command-line flag ([`BadOption::as_flag`]) by commands that take the
/// same options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadOption {
    name: &'static str,
    rule: Cow<'static, str>,
}

impl BadOption {
    /// Option `name` breaks `rule` ("must be at least 1").
    pub fn new(name: &'static str, rule: impl Into<Cow<'static, str>>) -> BadOption {
        BadOption {
            name,
            rule: rule.into(),
        }
    }

    /// The problem as the command line says it (`--test-fraction must be …`).
    pub fn as_flag(&self) -> String {
        format!("--{} {}", self.name.replace('_', "-"), self.rule)
    }
}

impl std::fmt::Display for BadOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.rule)
    }
}

impl std::error::Error for BadOption {}

/// Reads a step's `with` arguments into its typed struct (unknown keys are
/// errors when the struct denies them).
pub fn parse_with<T: serde::de::DeserializeOwned>(with: &Json) -> Result<T, String> {
    serde_json::from_value(with.clone()).map_err(|e| e.to_string())
}

/// The built-in steps by name.
#[derive(Default)]
pub struct Registry {
    steps: BTreeMap<&'static str, Box<dyn Step>>,
}

impl Registry {
    /// Adds a step (replacing one with the same name).
    pub fn register(&mut self, step: Box<dyn Step>) {
        self.steps.insert(step.name(), step);
    }

    /// The step called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Step> {
        self.steps.get(name).map(Box::as_ref)
    }

    /// Prepares every step for runs in a copy of the workspace at `root`
    /// ([`Step::prepare`]).
    pub fn prepare(&self, root: &Path) {
        self.steps.values().for_each(|step| step.prepare(root));
    }

    /// Step names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.steps.keys().copied()
    }
}
