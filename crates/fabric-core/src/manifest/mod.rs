//! Loading the workspace: `Fabric.toml` and its included pipeline files,
//! from raw TOML ([`raw`]) to the validated [`Workspace`] model.
//!
//! Loading is staged: parse every file (TOML syntax, unknown keys, types),
//! then resolve params and interpolation, then check each stage against the
//! step registry. All problems found are reported together, each with its
//! file, line, column and a hint.

mod cache;
pub mod edit;
mod execution;
pub mod interpolate;
pub mod matrix;
mod raw;
mod remote;
mod resources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use toml::Spanned;

use crate::diagnostic::{Diagnostic, Diagnostics, Location, did_you_mean};
use crate::paths::RelPath;
use crate::steps::Registry;
pub use execution::{ExecutorKind, SET_BY_FABRIC, SlurmSettings};
use interpolate::{Piece, Reference};
use raw::{RawPipelineFile, RawStage, RawWorkspaceFile};
pub use remote::{RemoteLocation, RemoteSettings};
use resources::RawResources;
pub use resources::Resources;

/// The name of the workspace manifest.
pub const MANIFEST: &str = "Fabric.toml";

/// A value together with where it was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sited<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub at: Location,
}

/// A stage dependency: a path or a glob pattern.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(into = "DepText", try_from = "DepText")]
pub enum Dep {
    /// A file or directory.
    Path(RelPath),
    /// A glob over workspace files (`data/*.csv`).
    Glob { pattern: String, matcher: GlobMatcher },
}

impl Dep {
    /// The text the user wrote (after interpolation); the key in the lock.
    pub fn key(&self) -> &str {
        match self {
            Dep::Path(path) => path.as_str(),
            Dep::Glob { pattern, .. } => pattern,
        }
    }

    /// True when the dependency covers (part of) the path `out`.
    pub fn touches(&self, out: &RelPath) -> bool {
        match self {
            Dep::Path(path) => path.overlaps(out),
            Dep::Glob { matcher, .. } => matcher.is_match(out.as_str()),
        }
    }
}

/// A [`Dep`] as kept in the validated copy: the glob without its matcher.
#[derive(Serialize, Deserialize)]
enum DepText {
    Path(RelPath),
    Glob(String),
}

impl From<Dep> for DepText {
    fn from(dep: Dep) -> DepText {
        match dep {
            Dep::Path(path) => DepText::Path(path),
            Dep::Glob { pattern, .. } => DepText::Glob(pattern),
        }
    }
}

impl TryFrom<DepText> for Dep {
    type Error = globset::Error;

    fn try_from(dep: DepText) -> Result<Dep, globset::Error> {
        Ok(match dep {
            DepText::Path(path) => Dep::Path(path),
            DepText::Glob(pattern) => Dep::Glob {
                matcher: Glob::new(&pattern)?.compile_matcher(),
                pattern,
            },
        })
    }
}

/// What a stage does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// A shell command, run with `sh -c` (after interpolation).
    Cmd(String),
    /// A built-in step with its resolved `with` arguments.
    Step {
        name: String,
        #[serde(with = "cache::json_text")]
        with: Json,
    },
}

/// One validated stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    /// Unique name within the workspace.
    pub name: String,
    /// The pipeline declaring it (the workspace name for `Fabric.toml` stages).
    pub pipeline: String,
    /// Free text shown by `fabric dag` and `status`.
    pub description: Option<String>,
    /// The command or built-in step.
    pub action: Action,
    /// Inputs.
    pub deps: Vec<Sited<Dep>>,
    /// Outputs, metrics included.
    pub outs: Vec<Sited<RelPath>>,
    /// The outs that are JSON metrics.
    pub metrics: Vec<RelPath>,
    /// Environment variables whose values enter the fingerprint.
    pub env: Vec<String>,
    /// Extra ordering edges: stages that must finish first.
    pub after: Vec<Sited<String>>,
    /// Working directory of a `cmd`, relative to the workspace.
    pub wdir: Option<RelPath>,
    /// What the stage asks of a cluster scheduler.
    pub resources: Resources,
    /// Where the stage runs, when it says (else the workspace's executor).
    pub executor: Option<ExecutorKind>,
    /// Run every time, whatever the fingerprint says.
    pub always_run: bool,
    /// Never run; keep the outs as they are.
    pub frozen: bool,
    /// The params the stage refers to, with their values.
    #[serde(with = "cache::json_text")]
    pub params: BTreeMap<String, Json>,
    /// The `[stage.NAME]` table.
    pub at: Location,
}

impl Stage {
    /// The declared out paths.
    pub fn out_paths(&self) -> impl Iterator<Item = &RelPath> {
        self.outs.iter().map(|o| &o.value)
    }
}

/// A named group of stages (one pipeline file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pipeline {
    /// Name used as a `fabric run` target.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Stage names, in file order.
    pub stages: Vec<String>,
}

/// A loaded and validated workspace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    /// The directory holding `Fabric.toml`.
    pub root: PathBuf,
    /// `[workspace] name` (defaults to the directory name).
    pub name: String,
    /// The content-addressed store directory (absolute).
    pub store: PathBuf,
    /// Parallel stages; 0 means the number of cores.
    pub jobs: usize,
    /// `[workspace] executor`: where stages run unless they say.
    pub executor: ExecutorKind,
    /// `[workspace.slurm]`: what Slurm jobs are submitted with.
    pub slurm: SlurmSettings,
    /// `[workspace.remote]`: the shared cache, if one is configured.
    pub remote: Option<RemoteSettings>,
    /// Every stage, sorted by name.
    pub stages: Vec<Stage>,
    /// Pipelines, sorted by name.
    pub pipelines: Vec<Pipeline>,
    /// The manifest files loaded (`Fabric.toml` first), workspace-relative.
    pub sources: Vec<PathBuf>,
    /// The manifest files (with the hash of the text read) and the
    /// directories `include` walked, each stamped before it was read: what
    /// this load rests on.
    #[serde(skip)]
    pub observed: Observed,
}

/// Workspace paths as they were when looked at.
pub type Observed = Vec<crate::stat_cache::Look>;

impl Workspace {
    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages
            .binary_search_by(|s| s.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.stages[i])
    }

    /// Where Fabric keeps its own files in this workspace.
    pub fn layout(&self) -> crate::layout::Layout {
        crate::layout::Layout::new(&self.root)
    }

    /// The lock as it stands: `Fabric.lock` plus any journal.
    pub fn load_lock(&self) -> Result<crate::lock::Lock, Diagnostic> {
        crate::lock::Lock::load(&self.layout().lock_files())
    }
}

/// Finds the workspace root: the nearest directory at or above `start`
/// holding `Fabric.toml`.
pub fn find_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(MANIFEST).is_file())
        .map(Path::to_path_buf)
}

/// A param override for one invocation: `-P name=value`, or `--name value`
/// on `fabric run` for a declared param (`--snapshots-dir` sets `snapshots_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The param's name.
    pub name: String,
    /// The value as written.
    pub value: String,
    /// The option it came from when it was written as `--name`.
    pub flag: Option<String>,
}

/// Loads and validates the workspace at `root`, applying `overrides`.
///
/// An unchanged manifest is read from its validated copy ([`cache`]); the
/// checks that look at the filesystem rather than the manifest run either way.
pub fn load(root: &Path, overrides: &[Override], registry: &Registry) -> Result<Workspace, Diagnostics> {
    let canonical_root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    if let Some(workspace) = cache::read(root, &canonical_root, overrides) {
        return Ok(workspace);
    }
    let mut loader = Loader {
        root,
        canonical_root,
        plain_dirs: std::collections::HashSet::new(),
        registry,
        errors: Vec::new(),
        includes: Vec::new(),
        texts: Vec::new(),
        observed: Vec::new(),
    };
    let workspace = loader.load(overrides)?;
    // Only an accelerator: failing to keep it costs the next load a parse.
    let _ = cache::write(root, overrides, &loader.includes, &loader.texts, &workspace);
    Ok(workspace)
}

/// One manifest file's text, named relative to the workspace.
struct Source {
    file: PathBuf,
    text: Arc<str>,
}

impl Source {
    fn at(&self, span: std::ops::Range<usize>) -> Location {
        Location {
            file: self.file.clone(),
            source: self.text.clone(),
            span,
        }
    }
}

/// A stage as read, before interpolation (one per combination of a matrix).
struct Declared {
    name: String,
    pipeline: String,
    raw: Spanned<RawStage>,
    source: Arc<Source>,
    params: Arc<BTreeMap<String, Json>>,
    /// This combination's matrix values; empty for a stage without one.
    matrix: BTreeMap<String, Json>,
}

struct Loader<'a> {
    root: &'a Path,
    canonical_root: PathBuf,
    /// Out prefixes already known to be plain directories (no symlink escape).
    plain_dirs: std::collections::HashSet<String>,
    registry: &'a Registry,
    errors: Vec<Diagnostic>,
    /// `[workspace] include` patterns as written.
    includes: Vec<String>,
    /// The text of each file loaded, in the order of `Workspace::sources`.
    texts: Vec<Arc<str>>,
    /// See [`Workspace::observed`].
    observed: Observed,
}

impl Loader<'_> {
    fn load(&mut self, given: &[Override]) -> Result<Workspace, Diagnostics> {
        let Some((source, file)) = self.parse::<RawWorkspaceFile>(Path::new(MANIFEST)) else {
            return Err(Diagnostics(std::mem::take(&mut self.errors)));
        };
        self.texts.push(source.text.clone());
        let source = Arc::new(source);
        let workspace = file.workspace.as_ref();
        let name = workspace
            .and_then(|w| w.name.clone())
            .or_else(|| self.root.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "workspace".into());
        let store = crate::layout::Layout::new(self.root).store(workspace.and_then(|w| w.store.as_deref()));
        let jobs = workspace.and_then(|w| w.jobs).unwrap_or(0);
        let executor = workspace.and_then(|w| w.executor).unwrap_or_default();
        let slurm = self
            .settings(
                &source,
                workspace.and_then(|w| w.slurm.as_ref()).map(execution::RawSlurm::check),
                "slurm",
            )
            .unwrap_or_default();
        let remote = self.settings(
            &source,
            workspace.and_then(|w| w.remote.as_ref()).map(remote::RawRemote::check),
            "remote",
        );
        let includes = workspace.map(|w| w.include.clone()).unwrap_or_default();
        self.includes = includes.iter().map(|i| i.get_ref().clone()).collect();

        let workspace_params = to_json_params(&file.params);
        let overrides: BTreeMap<String, String> = given.iter().map(|o| (o.name.clone(), o.value.clone())).collect();
        let mut mistyped = BTreeSet::new();
        let mut declared = Vec::new();
        let mut pipelines = Vec::new();
        let mut root_params = workspace_params.clone();
        self.apply_overrides(&mut root_params, &overrides, &mut mistyped);
        let root_params = Arc::new(root_params);
        let mut known_params: BTreeSet<String> = workspace_params.keys().cloned().collect();
        let mut sources = vec![PathBuf::from(MANIFEST)];
        let mut root_stages = Vec::new();
        for (stage, raw) in file.stage {
            root_stages.extend(self.declare(&mut declared, stage, &name, raw, &source, &root_params));
        }
        if !root_stages.is_empty() {
            pipelines.push(Pipeline {
                name: name.clone(),
                description: None,
                stages: root_stages,
            });
        }

        for path in self.expand_includes(&includes, &source) {
            sources.push(path.clone());
            let Some((pipeline_source, pipeline_file)) = self.parse::<RawPipelineFile>(&path) else {
                continue;
            };
            self.texts.push(pipeline_source.text.clone());
            let pipeline_source = Arc::new(pipeline_source);
            let pipeline_name = pipeline_file.pipeline.get_ref().name.get_ref().clone();
            if pipelines.iter().any(|p: &Pipeline| p.name == pipeline_name) {
                let span = pipeline_file.pipeline.get_ref().name.span();
                self.errors.push(
                    Diagnostic::new(format!("pipeline `{pipeline_name}` is declared twice"))
                        .at(pipeline_source.at(span), "second declaration")
                        .hint("give each pipeline file a unique `[pipeline] name`"),
                );
                continue;
            }
            let mut params = workspace_params.clone();
            params.extend(to_json_params(&pipeline_file.params));
            known_params.extend(pipeline_file.params.keys().cloned());
            self.apply_overrides(&mut params, &overrides, &mut mistyped);
            let params = Arc::new(params);
            let mut stages = Vec::new();
            for (stage, raw) in pipeline_file.stage {
                stages.extend(self.declare(&mut declared, stage, &pipeline_name, raw, &pipeline_source, &params));
            }
            pipelines.push(Pipeline {
                name: pipeline_name,
                description: pipeline_file.pipeline.into_inner().description,
                stages,
            });
        }

        for unknown in given.iter().filter(|o| !known_params.contains(&o.name)) {
            let name = &unknown.name;
            let close = did_you_mean(name, known_params.iter().map(String::as_str));
            let diagnostic = match &unknown.flag {
                None => Diagnostic::new(format!("unknown parameter `{name}` in `-P {name}=...`")).hint(match close {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => "declare it under [params] in Fabric.toml or a pipeline file".into(),
                }),
                Some(flag) => Diagnostic::new(format!(
                    "`{flag}` is neither an option of `fabric run` nor a declared parameter (`{name}`)"
                ))
                .hint(match close {
                    Some(close) => format!(
                        "did you mean `--{}`? (`fabric run --help` lists the options)",
                        close.replace('_', "-")
                    ),
                    None => "`fabric run --help` lists the options; params are declared under [params]".into(),
                }),
            };
            self.errors.push(diagnostic);
        }

        let stages = self.validate_stages(declared);
        if !self.errors.is_empty() {
            // A matrix stage's expansions repeat the mistakes they share.
            let mut unique: Vec<Diagnostic> = Vec::new();
            for diagnostic in std::mem::take(&mut self.errors) {
                if !unique.contains(&diagnostic) {
                    unique.push(diagnostic);
                }
            }
            return Err(Diagnostics(unique));
        }
        pipelines.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Workspace {
            root: self.root.to_path_buf(),
            name,
            store,
            jobs,
            executor,
            slurm,
            remote,
            stages,
            pipelines,
            sources,
            observed: std::mem::take(&mut self.observed),
        })
    }

    /// Reports each wrong value of a table, labelled `label`.
    fn report(&mut self, source: &Source, invalid: Vec<resources::Invalid>, label: &str) {
        for value in invalid {
            self.errors.push(
                Diagnostic::new(value.message)
                    .at(source.at(value.span), label.to_string())
                    .hint(value.hint),
            );
        }
    }

    /// A `[workspace.TABLE]` of settings, checked: its wrong values become
    /// diagnostics (and the table counts as absent).
    fn settings<T>(
        &mut self,
        source: &Source,
        checked: Option<Result<T, Vec<resources::Invalid>>>,
        table: &str,
    ) -> Option<T> {
        match checked? {
            Ok(settings) => Some(settings),
            Err(invalid) => {
                self.report(source, invalid, &format!("in `[workspace.{table}]`"));
                None
            }
        }
    }

    /// Reads and parses one manifest file; syntax, type and unknown-key errors
    /// become diagnostics.
    fn parse<T: serde::de::DeserializeOwned>(&mut self, relative: &Path) -> Option<(Source, T)> {
        let path = self.root.join(relative);
        let mut look = crate::stat_cache::Look::now(self.root, &relative.to_string_lossy());
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => {
                self.errors
                    .push(Diagnostic::new(format!("cannot read {}: {error}", relative.display())));
                return None;
            }
        };
        look.hash = Some(crate::digest::Digest::of(text.as_bytes()));
        self.observed.push(look);
        let source = Source {
            file: relative.to_path_buf(),
            text: text.into(),
        };
        match toml::from_str::<T>(&source.text) {
            Ok(value) => Some((source, value)),
            Err(error) => {
                let span = error.span().unwrap_or(0..0);
                // A string left open makes the parser stumble lines later;
                // point where the string starts, as Python's tomllib does.
                if let Some(start) = unterminated_string(&source.text).filter(|start| *start <= span.end) {
                    self.errors.push(
                        Diagnostic::new("unterminated string")
                            .at(source.at(start..start + 1), "this string is not closed on its line")
                            .hint("close it with the same quote before the line ends; only `\"\"\"` or `\'\'\'` strings span lines"),
                    );
                    return None;
                }
                let message = error.message().trim().to_string();
                let mut diagnostic = Diagnostic::new(first_line(&message)).at(source.at(span), label_for(&message));
                if let Some(hint) = unknown_field_hint(&message).or_else(|| missing_field_hint(&message)) {
                    diagnostic = diagnostic.hint(hint);
                }
                self.errors.push(diagnostic);
                None
            }
        }
    }

    /// Applies `-P` overrides to `params`, each read as the type of the
    /// param it overrides (a string param takes the text as it is); a value
    /// of another type is a usage error, reported once per name in
    /// `mistyped`. Overrides of undeclared params are kept as written (and
    /// reported as unknown by the caller).
    fn apply_overrides(
        &mut self,
        params: &mut BTreeMap<String, Json>,
        overrides: &BTreeMap<String, String>,
        mistyped: &mut BTreeSet<String>,
    ) {
        for (name, text) in overrides {
            let value = match params.get(name) {
                None => parse_param_value(text),
                Some(declared) => {
                    let Some(value) = override_value(declared, text) else {
                        if mistyped.insert(name.clone()) {
                            self.errors.push(
                                Diagnostic::new(format!(
                                    "`-P {name}={text}`: `{name}` is declared as {} ({declared}), and `{text}` is not one",
                                    json_type(declared)
                                ))
                                .hint(format!(
                                    "pass {} (e.g. `-P {name}={declared}`); to change the type on purpose, change the declaration under [params]",
                                    json_type(declared)
                                )),
                            );
                        }
                        continue;
                    };
                    value
                }
            };
            params.insert(name.clone(), value);
        }
    }

    /// Expands `[workspace] include` globs into sorted, deduplicated paths.
    fn expand_includes(&mut self, includes: &[Spanned<String>], source: &Source) -> Vec<PathBuf> {
        let mut found = BTreeSet::new();
        for include in includes {
            let pattern = include.get_ref();
            let glob = match Glob::new(pattern) {
                Ok(glob) => glob.compile_matcher(),
                Err(error) => {
                    self.errors.push(
                        Diagnostic::new(format!("invalid include pattern: {}", error.kind()))
                            .at(source.at(include.span()), "this pattern"),
                    );
                    continue;
                }
            };
            let before = found.len();
            found.extend(included_files(self.root, pattern, &glob, &mut self.observed));
            if found.len() == before && !pattern.contains(['*', '?', '[']) {
                self.errors.push(
                    Diagnostic::new(format!("included file `{pattern}` does not exist"))
                        .at(source.at(include.span()), "not found"),
                );
            }
        }
        found.into_iter().collect()
    }

    /// Adds the stage `name` as read to `declared`, once per combination
    /// of its matrix (none if the matrix is wrong); the names it adds.
    fn declare(
        &mut self,
        declared: &mut Vec<Declared>,
        name: String,
        pipeline: &str,
        raw: Spanned<RawStage>,
        source: &Arc<Source>,
        params: &Arc<BTreeMap<String, Json>>,
    ) -> Vec<String> {
        let combinations = match &raw.get_ref().matrix {
            None => vec![matrix::Combination {
                name,
                values: BTreeMap::new(),
            }],
            Some(table) => match matrix::expand(&name, table) {
                Ok(combinations) => combinations,
                Err(invalid) => {
                    self.report(source, invalid, "in `matrix`");
                    return Vec::new();
                }
            },
        };
        let names = combinations.iter().map(|c| c.name.clone()).collect();
        declared.extend(combinations.into_iter().map(|combination| Declared {
            name: combination.name,
            pipeline: pipeline.to_string(),
            raw: raw.clone(),
            source: source.clone(),
            params: params.clone(),
            matrix: combination.values,
        }));
        names
    }

    fn validate_stages(&mut self, declared: Vec<Declared>) -> Vec<Stage> {
        // Names first: references to other stages need the full set.
        let mut first_seen: BTreeMap<String, Location> = BTreeMap::new();
        for stage in &declared {
            let at = stage.source.at(stage.raw.span());
            if let Some(first) = first_seen.get(&stage.name) {
                let (line, column) = first.line_column();
                self.errors.push(
                    Diagnostic::new(format!("stage `{}` is declared twice", stage.name))
                        .at(at, "second declaration")
                        .hint(format!(
                            "stage names are unique per workspace; the first is at {}:{line}:{column}",
                            first.file.display()
                        )),
                );
            } else if !interpolate::is_name(if stage.matrix.is_empty() {
                &stage.name
            } else {
                matrix::base(&stage.name)
            }) {
                self.errors.push(
                    Diagnostic::new(format!("`{}` is not a valid stage name", stage.name))
                        .at(at, "this stage")
                        .hint("use letters, digits, `_` and `-`"),
                );
            } else {
                first_seen.insert(stage.name.clone(), at);
            }
        }
        // A matrix stage's declared name stands for its expansions: no
        // plain stage may have it too.
        for stage in declared.iter().filter(|s| !s.matrix.is_empty()) {
            let base = matrix::base(&stage.name);
            if let Some(plain) = first_seen.get(base) {
                let (line, column) = stage.source.at(stage.raw.span()).line_column();
                self.errors.push(
                    Diagnostic::new(format!("stage `{base}` is declared twice"))
                        .at(plain.clone(), "a plain stage")
                        .hint(format!(
                            "a matrix stage of that name is at {}:{line}:{column}; rename one",
                            stage.source.file.display()
                        )),
                );
            }
        }
        // Outs after param interpolation, for `${stage.X.outs[N]}`.
        let mut outs_by_stage: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for stage in &declared {
            let raw = stage.raw.get_ref();
            let outs = raw
                .outs
                .iter()
                .chain(&raw.metrics)
                .map(|out| {
                    let resolver = Resolver {
                        params: &stage.params,
                        matrix: &stage.matrix,
                        stage_outs: None,
                    };
                    resolver.expand(out.get_ref()).map(|(text, _)| text).unwrap_or_default()
                })
                .collect();
            outs_by_stage.entry(stage.name.clone()).or_insert(outs);
        }
        let mut stages = Vec::new();
        for stage in declared {
            if first_seen
                .get(&stage.name)
                .is_some_and(|at| at.span == stage.raw.span() && at.file == stage.source.file)
                && let Some(valid) = self.validate_stage(stage, &outs_by_stage)
            {
                stages.push(valid);
            }
        }
        stages.sort_by(|a, b| a.name.cmp(&b.name));
        stages
    }

    fn validate_stage(&mut self, declared: Declared, outs_by_stage: &BTreeMap<String, Vec<String>>) -> Option<Stage> {
        let Declared {
            name,
            pipeline,
            raw,
            source,
            params,
            matrix,
        } = declared;
        let at = source.at(raw.span());
        let raw = raw.into_inner();
        let errors_before = self.errors.len();
        let mut used_params = BTreeMap::new();
        let full = Resolver {
            params: &params,
            matrix: &matrix,
            stage_outs: Some(outs_by_stage),
        };
        let params_only = Resolver {
            params: &params,
            matrix: &matrix,
            stage_outs: None,
        };

        let action = match (&raw.cmd, &raw.step) {
            (Some(_), Some(step)) => {
                self.errors.push(
                    Diagnostic::new(format!("stage `{name}` has both `cmd` and `step`"))
                        .at(source.at(step.span()), "second action")
                        .hint("a stage is either a shell command or a built-in step; keep one"),
                );
                None
            }
            (None, None) => {
                self.errors.push(
                    Diagnostic::new(format!("stage `{name}` has neither `cmd` nor `step`"))
                        .at(at.clone(), "this stage")
                        .hint("add `cmd = \"...\"` (a shell command) or `step = \"...\"` (a built-in step)"),
                );
                None
            }
            (Some(cmd), None) => {
                if raw.with.is_some() {
                    let with = raw.with.as_ref().map(|w| w.span()).unwrap_or_default();
                    self.errors.push(
                        Diagnostic::new(format!("stage `{name}` has `with` arguments but runs a `cmd`"))
                            .at(source.at(with), "only built-in steps take `with`")
                            .hint("pass values to a command with `${params.NAME}` inside `cmd`"),
                    );
                }
                self.interpolate(&full, cmd, &source, &mut used_params).map(Action::Cmd)
            }
            (None, Some(step)) => self.step_action(&raw, step, &full, &source, &mut used_params),
        };

        // A param used in a path is not a fingerprint component of its own:
        // the path (and for a dep its content) already is.
        let mut in_paths = BTreeMap::new();
        let mut deps = Vec::new();
        for dep in &raw.deps {
            let Some(text) = self.interpolate(&full, dep, &source, &mut in_paths) else {
                continue;
            };
            let location = source.at(dep.span());
            let value = if text.contains(['*', '?', '[', '{']) {
                match Glob::new(&text) {
                    Ok(glob)
                        if RelPath::new(crate::paths::literal_prefix(&text).to_str().unwrap_or("")).is_ok()
                            || crate::paths::literal_prefix(&text).as_os_str().is_empty() =>
                    {
                        Dep::Glob {
                            pattern: text,
                            matcher: glob.compile_matcher(),
                        }
                    }
                    Ok(_) => {
                        self.errors.push(
                            Diagnostic::new(format!("dependency `{text}` is outside the workspace"))
                                .at(location, "this dependency")
                                .hint("deps are relative to the workspace root"),
                        );
                        continue;
                    }
                    Err(error) => {
                        self.errors.push(
                            Diagnostic::new(format!("invalid glob `{text}`: {}", error.kind()))
                                .at(location, "this pattern"),
                        );
                        continue;
                    }
                }
            } else {
                match RelPath::new(&text) {
                    Ok(path) => Dep::Path(path),
                    Err(error) => {
                        self.errors.push(
                            Diagnostic::new(format!("dependency {error}"))
                                .at(location, "this dependency")
                                .hint("deps are relative to the workspace root"),
                        );
                        continue;
                    }
                }
            };
            deps.push(Sited {
                value,
                at: source.at(dep.span()),
            });
        }

        let mut outs = Vec::new();
        let mut metrics = Vec::new();
        for (out, is_metric) in raw
            .outs
            .iter()
            .map(|o| (o, false))
            .chain(raw.metrics.iter().map(|m| (m, true)))
        {
            let Some(text) = self.interpolate(&params_only, out, &source, &mut in_paths) else {
                continue;
            };
            match RelPath::new(&text) {
                Ok(path)
                    if crate::paths::escapes_through_symlink(
                        self.root,
                        &self.canonical_root,
                        &path,
                        &mut self.plain_dirs,
                    ) =>
                {
                    self.errors.push(
                        Diagnostic::new(format!("out `{path}` leads outside the workspace through a symlink"))
                            .at(source.at(out.span()), "this out")
                            .hint("outs must be written inside the workspace; remove the symlink or change the path"),
                    );
                }
                Ok(path) => {
                    if outs.iter().any(|o: &Sited<RelPath>| o.value == path) {
                        if !is_metric {
                            self.errors.push(
                                Diagnostic::new(format!("out `{path}` is listed twice"))
                                    .at(source.at(out.span()), "again here"),
                            );
                        }
                        if is_metric {
                            metrics.push(path);
                        }
                        continue;
                    }
                    if is_metric {
                        metrics.push(path.clone());
                    }
                    outs.push(Sited {
                        value: path,
                        at: source.at(out.span()),
                    });
                }
                Err(error) => self.errors.push(
                    Diagnostic::new(format!("out {error}"))
                        .at(source.at(out.span()), "this out")
                        .hint("outs must be relative paths inside the workspace"),
                ),
            }
        }

        let mut env = Vec::new();
        for variable in &raw.env {
            let text = variable.get_ref();
            if text.is_empty() || text.contains(['=', '\0']) {
                self.errors.push(
                    Diagnostic::new(format!("`{text}` is not an environment variable name"))
                        .at(source.at(variable.span()), "this name"),
                );
            } else {
                env.push(text.clone());
            }
        }
        env.sort();
        env.dedup();

        let mut after = Vec::new();
        for other in &raw.after {
            let text = other.get_ref();
            // A matrix stage's declared name stands for all its expansions.
            let expansions: Vec<&String> = outs_by_stage
                .keys()
                .filter(|name| matrix::expands(text, name))
                .collect();
            if !outs_by_stage.contains_key(text) && !expansions.is_empty() {
                after.extend(expansions.into_iter().map(|name| Sited {
                    value: name.clone(),
                    at: source.at(other.span()),
                }));
            } else if !outs_by_stage.contains_key(text) {
                let mut diagnostic = Diagnostic::new(format!("`after` names unknown stage `{text}`"))
                    .at(source.at(other.span()), "no such stage");
                if let Some(close) = did_you_mean(text, outs_by_stage.keys().map(String::as_str)) {
                    diagnostic = diagnostic.hint(format!("did you mean `{close}`?"));
                }
                self.errors.push(diagnostic);
            } else {
                after.push(Sited {
                    value: text.clone(),
                    at: source.at(other.span()),
                });
            }
        }

        let wdir = match &raw.wdir {
            None => None,
            Some(wdir) => match RelPath::new(wdir.get_ref()) {
                Ok(path) => Some(path),
                Err(crate::paths::PathError::Empty) => None,
                Err(error) => {
                    self.errors.push(
                        Diagnostic::new(format!("wdir {error}"))
                            .at(source.at(wdir.span()), "this directory")
                            .hint("wdir is relative to the workspace root"),
                    );
                    None
                }
            },
        };

        let resources = match raw.resources.as_ref().map(RawResources::check).transpose() {
            Ok(resources) => resources.unwrap_or_default(),
            Err(invalid) => {
                self.report(&source, invalid, "in `resources`");
                Resources::default()
            }
        };

        if self.errors.len() > errors_before {
            return None;
        }
        Some(Stage {
            name,
            pipeline,
            description: raw.description,
            action: action?,
            deps,
            outs,
            metrics,
            env,
            after,
            wdir,
            resources,
            executor: raw.executor,
            always_run: raw.always_run,
            frozen: raw.frozen,
            params: used_params,
            at,
        })
    }

    fn step_action(
        &mut self,
        raw: &RawStage,
        step: &Spanned<String>,
        resolver: &Resolver,
        source: &Source,
        used_params: &mut BTreeMap<String, Json>,
    ) -> Option<Action> {
        let name = step.get_ref();
        let Some(implementation) = self.registry.get(name) else {
            let mut diagnostic =
                Diagnostic::new(format!("unknown step `{name}`")).at(source.at(step.span()), "not a built-in step");
            diagnostic = match did_you_mean(name, self.registry.names()) {
                Some(close) => diagnostic.hint(format!("did you mean `{close}`?")),
                None => diagnostic.hint(format!(
                    "the built-in steps are: {}",
                    self.registry.names().collect::<Vec<_>>().join(", ")
                )),
            };
            self.errors.push(diagnostic);
            return None;
        };
        let mut with = serde_json::Map::new();
        let mut ok = true;
        if let Some(table) = &raw.with {
            for (key, value) in table.get_ref() {
                match self.interpolate_value(resolver, value.get_ref(), value.span(), source, used_params) {
                    Some(value) => {
                        with.insert(key.get_ref().clone(), value);
                    }
                    None => ok = false,
                }
            }
        }
        if !ok {
            return None;
        }
        let with = Json::Object(with);
        if let Err(problem) = implementation.check(&with) {
            // Point at the offending key when the problem names one.
            let keys: Vec<&Spanned<String>> = raw
                .with
                .as_ref()
                .map(|w| w.get_ref().keys().collect())
                .unwrap_or_default();
            let named = keys.iter().find(|k| problem.contains(&format!("`{}`", k.get_ref())));
            let span = named.map_or_else(|| raw.with.as_ref().map_or(step.span(), |w| w.span()), |k| k.span());
            let hint =
                unknown_field_hint(&problem).unwrap_or_else(|| format!("`fabric steps` lists what `{name}` takes"));
            self.errors.push(
                Diagnostic::new(format!("invalid arguments for step `{name}`: {problem}"))
                    .at(
                        source.at(span),
                        if named.is_some() { "this key" } else { "these arguments" },
                    )
                    .hint(hint),
            );
            return None;
        }
        Some(Action::Step {
            name: name.clone(),
            with,
        })
    }

    /// Interpolates one string; errors point inside it.
    fn interpolate(
        &mut self,
        resolver: &Resolver,
        text: &Spanned<String>,
        source: &Source,
        used_params: &mut BTreeMap<String, Json>,
    ) -> Option<String> {
        match resolver.expand(text.get_ref()) {
            Ok((expanded, used)) => {
                used_params.extend(used);
                Some(expanded)
            }
            Err(error) => {
                self.errors.push(error.into_diagnostic(source, text.span(), resolver));
                None
            }
        }
    }

    /// Interpolates strings anywhere inside a `with` value. A string that is
    /// exactly one `${params.X}` takes the param's type (`epochs = "${params.epochs}"`
    /// is an integer).
    fn interpolate_value(
        &mut self,
        resolver: &Resolver,
        value: &toml::Value,
        span: std::ops::Range<usize>,
        source: &Source,
        used_params: &mut BTreeMap<String, Json>,
    ) -> Option<Json> {
        match value {
            toml::Value::String(text) => match resolver.expand_typed(text) {
                Ok((value, used)) => {
                    used_params.extend(used);
                    Some(value)
                }
                Err(error) => {
                    let located = locate_in(&source.text, span.clone(), text).unwrap_or(span);
                    self.errors.push(error.into_diagnostic(source, located, resolver));
                    None
                }
            },
            toml::Value::Array(items) => items
                .iter()
                .map(|item| self.interpolate_value(resolver, item, span.clone(), source, used_params))
                .collect::<Option<Vec<_>>>()
                .map(Json::Array),
            toml::Value::Table(table) => {
                let mut object = serde_json::Map::new();
                for (key, item) in table {
                    object.insert(
                        key.clone(),
                        self.interpolate_value(resolver, item, span.clone(), source, used_params)?,
                    );
                }
                Some(Json::Object(object))
            }
            other => Some(toml_to_json(other)),
        }
    }
}

/// Resolves `${...}` references against params, the stage's matrix values
/// and (optionally) stage outs.
struct Resolver<'a> {
    params: &'a BTreeMap<String, Json>,
    matrix: &'a BTreeMap<String, Json>,
    stage_outs: Option<&'a BTreeMap<String, Vec<String>>>,
}

/// A failed interpolation: where inside the string, and why.
struct InterpolationError {
    range: std::ops::Range<usize>,
    message: String,
    hint: Option<String>,
}

impl InterpolationError {
    fn into_diagnostic(self, source: &Source, span: std::ops::Range<usize>, _resolver: &Resolver) -> Diagnostic {
        // Strings are quoted in TOML: the text starts one byte after the span.
        let start = span.start + 1 + self.range.start;
        let end = (span.start + 1 + self.range.end).min(span.end.max(start));
        let mut diagnostic = Diagnostic::new(self.message).at(source.at(start..end), "here");
        if let Some(hint) = self.hint {
            diagnostic = diagnostic.hint(hint);
        }
        diagnostic
    }
}

type Used = BTreeMap<String, Json>;

impl Resolver<'_> {
    fn expand(&self, text: &str) -> Result<(String, Used), InterpolationError> {
        let pieces = interpolate::parse(text).map_err(|error| InterpolationError {
            range: error.range,
            message: error.message,
            hint: None,
        })?;
        let mut out = String::new();
        let mut used = Used::new();
        for piece in pieces {
            match piece {
                Piece::Literal(text) => out.push_str(&text),
                Piece::Ref(reference, range) => {
                    let value = self.resolve(&reference, range, &mut used)?;
                    match value {
                        Json::String(text) => out.push_str(&text),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok((out, used))
    }

    fn expand_typed(&self, text: &str) -> Result<(Json, Used), InterpolationError> {
        let pieces = interpolate::parse(text).map_err(|error| InterpolationError {
            range: error.range,
            message: error.message,
            hint: None,
        })?;
        if let [Piece::Ref(reference, range)] = pieces.as_slice() {
            let mut used = Used::new();
            let value = self.resolve(reference, range.clone(), &mut used)?;
            return Ok((value, used));
        }
        self.expand(text).map(|(text, used)| (Json::String(text), used))
    }

    fn resolve(
        &self,
        reference: &Reference,
        range: std::ops::Range<usize>,
        used: &mut Used,
    ) -> Result<Json, InterpolationError> {
        match reference {
            Reference::Param(name) => match self.params.get(name) {
                Some(value) => {
                    used.insert(name.clone(), value.clone());
                    Ok(value.clone())
                }
                None => Err(InterpolationError {
                    range,
                    message: format!("unknown parameter `{name}`"),
                    hint: Some(match did_you_mean(name, self.params.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean `{close}`?"),
                        None => "declare it under [params]".into(),
                    }),
                }),
            },
            Reference::Matrix(key) => match self.matrix.get(key) {
                Some(value) => {
                    used.insert(matrix::param_name(key), value.clone());
                    Ok(value.clone())
                }
                None => Err(InterpolationError {
                    range,
                    message: format!("unknown matrix key `{key}`"),
                    hint: Some(if self.matrix.is_empty() {
                        "this stage has no matrix; declare its values under `[stage.NAME.matrix]`".into()
                    } else {
                        match did_you_mean(key, self.matrix.keys().map(String::as_str)) {
                            Some(close) => format!("did you mean `{close}`?"),
                            None => format!(
                                "the stage's matrix keys are: {}",
                                self.matrix.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        }
                    }),
                }),
            },
            Reference::StageOut { stage, index } => {
                let Some(stage_outs) = self.stage_outs else {
                    return Err(InterpolationError {
                        range,
                        message: "stage references are not allowed in `outs`".into(),
                        hint: Some("outs may use `${params.NAME}` and `${matrix.KEY}` only".into()),
                    });
                };
                match stage_outs.get(stage) {
                    None => Err(InterpolationError {
                        range,
                        message: format!("unknown stage `{stage}`"),
                        hint: did_you_mean(stage, stage_outs.keys().map(String::as_str))
                            .map(|close| format!("did you mean `{close}`?")),
                    }),
                    Some(outs) => match outs.get(*index) {
                        Some(out) => Ok(Json::String(out.clone())),
                        None => Err(InterpolationError {
                            range,
                            message: format!("stage `{stage}` has {} outs; there is no outs[{index}]", outs.len()),
                            hint: None,
                        }),
                    },
                }
            }
        }
    }
}

/// The value `-P NAME=text` gives a param declared as `declared`, or `None`
/// when `text` is not of its type: a string param takes the text as it is,
/// a float param an integer too, an integer param only integers.
pub fn override_value(declared: &Json, text: &str) -> Option<Json> {
    if declared.is_string() {
        return Some(Json::String(text.to_string()));
    }
    let value = parse_param_value(text);
    let same_type = match (declared, &value) {
        (Json::Bool(_), Json::Bool(_)) | (Json::Array(_), Json::Array(_)) | (Json::Object(_), Json::Object(_)) => true,
        (Json::Number(d), Json::Number(v)) => d.is_f64() || !v.is_f64(),
        _ => false,
    };
    same_type.then_some(value)
}

/// Converts TOML params to JSON values, the form params take everywhere else.
/// The workspace files an `include` pattern names (workspace-relative); the
/// directories walked go to `observed` with their stamps.
fn included_files(root: &Path, pattern: &str, glob: &GlobMatcher, observed: &mut Observed) -> Vec<PathBuf> {
    let base = crate::paths::literal_prefix(pattern);
    let base_dir = root.join(&base);
    if !base_dir.is_dir() {
        observed.push(crate::stat_cache::Look::now(root, &base.to_string_lossy()));
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(base_dir).into_iter().filter_map(Result::ok) {
        let Ok(relative) = entry.path().strip_prefix(root) else {
            continue;
        };
        if entry.file_type().is_dir() {
            observed.push(crate::stat_cache::Look::now(root, &relative.to_string_lossy()));
        } else if entry.file_type().is_file() && glob.is_match(relative) {
            files.push(relative.to_path_buf());
        }
    }
    files
}

fn to_json_params(params: &BTreeMap<String, Spanned<toml::Value>>) -> BTreeMap<String, Json> {
    params
        .iter()
        .map(|(name, value)| (name.clone(), toml_to_json(value.get_ref())))
        .collect()
}

/// A TOML value as JSON (datetimes become their RFC 3339 text).
pub fn toml_to_json(value: &toml::Value) -> Json {
    match value {
        toml::Value::String(s) => Json::String(s.clone()),
        toml::Value::Integer(i) => Json::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        toml::Value::Boolean(b) => Json::Bool(*b),
        toml::Value::Datetime(d) => Json::String(d.to_string()),
        toml::Value::Array(items) => Json::Array(items.iter().map(toml_to_json).collect()),
        toml::Value::Table(table) => Json::Object(table.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// Parses a `-P name=value` value: a TOML literal when it is one (`3`,
/// `0.5`, `true`, `"x"`), otherwise the text as a string.
pub fn parse_param_value(text: &str) -> Json {
    #[derive(serde::Deserialize)]
    struct Holder {
        v: toml::Value,
    }
    match toml::from_str::<Holder>(&format!("v = {text}")) {
        Ok(holder) => toml_to_json(&holder.v),
        Err(_) => Json::String(text.to_string()),
    }
}

/// The byte offset of the first single-line TOML string (basic `"` or
/// literal `'`) that is not closed on its line, outside comments and
/// multi-line strings.
fn unterminated_string(text: &str) -> Option<usize> {
    let mut offset = 0;
    let mut multiline: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        let mut i = 0;
        let bytes = line.as_bytes();
        while i < bytes.len() {
            if let Some(close) = multiline {
                match line[i..].find(close) {
                    Some(at) => {
                        i += at + 3;
                        multiline = None;
                    }
                    None => break,
                }
                continue;
            }
            match bytes[i] {
                b'#' => break,
                quote @ (b'"' | b'\'') => {
                    let triple = if quote == b'"' { "\"\"\"" } else { "\'\'\'" };
                    if line[i..].starts_with(triple) {
                        multiline = Some(triple);
                        i += 3;
                        continue;
                    }
                    let mut j = i + 1;
                    let mut closed = false;
                    while j < bytes.len() && bytes[j] != b'\n' {
                        if quote == b'"' && bytes[j] == b'\\' {
                            j += 2;
                            continue;
                        }
                        if bytes[j] == quote {
                            closed = true;
                            break;
                        }
                        j += 1;
                    }
                    if !closed {
                        return Some(offset + i);
                    }
                    i = j + 1;
                }
                _ => i += 1,
            }
        }
        offset += line.len();
    }
    None
}

/// The name of a JSON value's type, with its article, as a param declares it.
fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_f64() => "a float",
        Json::Number(_) => "an integer",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "a table",
        Json::Null => "nothing",
    }
}

/// The directory part of a glob before its first wildcard.
/// Finds the span of the quoted string `text` inside `span` of the source.
fn locate_in(source: &str, span: std::ops::Range<usize>, text: &str) -> Option<std::ops::Range<usize>> {
    let area = source.get(span.clone())?;
    let at = area.find(text)?;
    // `into_diagnostic` skips the opening quote, so start one byte before.
    let start = span.start + at - 1;
    Some(start..start + text.len() + 2)
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_string()
}

fn label_for(message: &str) -> &'static str {
    if message.starts_with("unknown field") {
        "unknown key"
    } else if message.starts_with("invalid type") {
        "wrong type"
    } else if message.starts_with("missing field") {
        "in this table"
    } else {
        "here"
    }
}

/// What to add for toml's "missing field `x`".
fn missing_field_hint(message: &str) -> Option<String> {
    let field = message.strip_prefix("missing field `")?.split('`').next()?;
    Some(match field {
        "pipeline" => "a pipeline file starts with a `[pipeline]` table holding `name = \"...\"`".to_string(),
        other => format!("add `{other} = ...`"),
    })
}

/// "did you mean" for toml's "unknown field `x`, expected one of `a`, `b`".
fn unknown_field_hint(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match did_you_mean(field, expected.iter().copied()) {
        Some(close) => Some(format!("did you mean `{close}`?")),
        None if !expected.is_empty() => Some(format!("expected one of: {}", expected.join(", "))),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::unterminated_string;

    #[test]
    fn an_unterminated_string_is_found_where_it_starts() {
        assert_eq!(unterminated_string("a = \"x\"\nouts = [\"b]\nc = 1\n"), Some(16));
        assert_eq!(unterminated_string("a = 'x\n"), Some(4));
        assert_eq!(unterminated_string("a = \"x\\\"y\" # \"not a string\n"), None);
        assert_eq!(
            unterminated_string("a = \"\"\"\nmulti \" line\n\"\"\"\nb = 'ok'\n"),
            None
        );
        assert_eq!(unterminated_string("a = \"caf\u{e9}\n"), Some(4));
    }
}
