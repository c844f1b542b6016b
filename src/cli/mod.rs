//! The command line: clap definitions, the shared [`Session`] (workspace,
//! graph, store, lock), and the mapping of errors to exit codes.

mod checkout;
mod dag;
mod exp;
mod explain;
mod gc;
mod init;
mod lock;
mod metrics;
mod onnx;
mod prime;
mod remote;
mod review;
mod run;
mod scratch;
mod serve;
mod status;
mod verify;

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use fabric_core::diagnostic::{Diagnostic, Diagnostics, did_you_mean};
use fabric_core::graph::StageGraph;
use fabric_core::lock::Lock;
use fabric_core::manifest::{self, Workspace, matrix};
use fabric_core::release::Headlines;
use fabric_core::run::Planner;
use fabric_core::stat_cache::StatCache;
use fabric_core::steps::Registry;
use fabric_core::steps::release::Release;
use fabric_core::store::Store;

/// Prime Fabric: declare pipelines in TOML, run them incrementally, cache
/// every output by the BLAKE3 hash of its inputs.
#[derive(Debug, Parser)]
#[command(name = "fabric", version, about, max_term_width = 100)]
pub struct Cli {
    /// Run as if started in DIR.
    #[arg(short = 'C', long = "directory", global = true, value_name = "DIR")]
    directory: Option<PathBuf>,
    /// Use this Fabric.toml (its directory is the workspace).
    #[arg(long, global = true, value_name = "PATH")]
    manifest: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bring stages up to date: run what changed, restore what is cached.
    Run(run::Args),
    /// List stale stages and why; `--check` exits 1 if any.
    Status(status::Args),
    /// Show a stage's fingerprint components, recorded vs current.
    Explain(explain::Args),
    /// Print the stage graph.
    Dag(dag::Args),
    /// Restore outs from the store as Fabric.lock records them.
    Checkout(checkout::Args),
    /// Upload what Fabric.lock records (objects and run records) to the remote cache.
    Push(remote::TransferArgs),
    /// Download what Fabric.lock records from the remote cache, then check it out.
    Pull(remote::TransferArgs),
    /// The remote cache: `fabric remote list` shows it and whether it answers.
    Remote(remote::Args),
    /// Show metrics outs as a table.
    Metrics(metrics::Args),
    /// Experiments: run variants in isolated copies (`exp run`), compare them (`exp show`, `exp diff`).
    Exp(exp::Args),
    /// Remove store content nothing refers to any more, and the step memos of stages no longer declared.
    Gc(gc::Args),
    /// Create a new workspace with an example pipeline.
    Init(init::Args),
    /// List the built-in steps.
    Steps,
    /// Generate simulated Studio sessions (raw snapshots).
    Simulate(prime::SimulateArgs),
    /// Validate, normalize and redact raw snapshots.
    Sanitize(prime::SanitizeArgs),
    /// Build windowed training examples and the dataset card.
    Dataset(prime::DatasetArgs),
    /// Print the snapshot contract: JSON Schema, or TypeScript for the Studio.
    Schema(prime::SchemaArgs),
    /// Train the Prime Brain policy model in ONNX Runtime.
    Train(onnx::TrainArgs),
    /// Evaluate a model (or external predictions) against the doctrine.
    Evaluate(onnx::EvaluateArgs),
    /// Check releases, the changelog and the lock (for CI).
    Verify(verify::Args),
    /// A person's review of a model's outputs: export a sheet, import the verdicts.
    Review(review::Args),
    /// Fabric.lock tools: `fabric lock merge` is a git merge driver.
    Lock(lock::Args),
    /// Receive Studio snapshots over HTTP into snapshots/raw/.
    Serve(serve::Args),
    /// The run's supervisor (started by `fabric run`; see crates/fabric-core/src/run/supervisor.rs).
    #[command(name = "__supervise", hide = true)]
    Supervise,
    /// Run one stage's built-in step from a job file (started by `fabric run`; see crates/fabric-core/src/run/step.rs).
    #[command(name = "__step", hide = true)]
    Step {
        /// The job file.
        job: PathBuf,
    },
    /// Print a shell completion script (e.g. `fabric completions bash > ~/.local/share/bash-completion/completions/fabric`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// An error whose exit code is 2: bad usage or a bad manifest.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub Diagnostics);

impl From<Diagnostic> for UsageError {
    fn from(diagnostic: Diagnostic) -> Self {
        UsageError(diagnostic.into())
    }
}

/// A flag's value a direct command refuses (`--window-size 0`) is a usage
/// error, as a bad value in a manifest is.
impl From<fabric_core::steps::BadOption> for UsageError {
    fn from(bad: fabric_core::steps::BadOption) -> Self {
        UsageError::from(Diagnostic::new(bad.as_flag()))
    }
}

/// Parses arguments, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    restore_sigpipe();
    let matches = Cli::command().get_matches_from(params_as_flags(std::env::args_os().collect()));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match dispatch(cli, &matches) {
        Ok(code) => code,
        Err(error) => {
            if let Some(usage) = error.downcast_ref::<UsageError>() {
                eprintln!("{}", usage.0.render(color));
                ExitCode::from(2)
            } else {
                eprintln!("error: {error:#}");
                ExitCode::from(1)
            }
        }
    }
}

/// Rust ignores SIGPIPE, which turns `fabric dag | head` into a write error;
/// like other Unix tools, end quietly instead.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs the command; `matches` tell a flag given from its default.
fn dispatch(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let globals = Globals {
        directory: cli.directory,
        manifest: cli.manifest,
    };
    match cli.command {
        Command::Run(args) => run::execute(&globals, args),
        Command::Status(args) => status::execute(&globals, args),
        Command::Explain(args) => explain::execute(&globals, args),
        Command::Dag(args) => dag::execute(&globals, args),
        Command::Checkout(args) => checkout::execute(&globals, args),
        Command::Push(args) => remote::push(&globals, args),
        Command::Pull(args) => remote::pull(&globals, args),
        Command::Remote(args) => remote::list(&globals, args),
        Command::Metrics(args) => metrics::execute(&globals, args),
        Command::Gc(args) => gc::execute(&globals, args),
        Command::Exp(args) => exp::execute(&globals, args),
        Command::Init(args) => init::execute(&globals, args),
        Command::Simulate(args) => prime::simulate(args),
        Command::Sanitize(args) => prime::sanitize(args),
        Command::Dataset(args) => prime::dataset(args),
        Command::Schema(args) => prime::print_schema(args),
        Command::Train(args) => onnx::train(args, matches.subcommand_matches("train").unwrap_or(matches)),
        Command::Evaluate(args) => onnx::evaluate(args),
        Command::Verify(args) => verify::execute(&globals, args),
        Command::Review(args) => review::execute(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fabric",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Lock(args) => lock::execute(args),
        Command::Serve(args) => serve::execute(&globals, args),
        Command::Supervise => {
            fabric_core::run::supervisor::serve()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Step { job } => {
            fabric_core::run::step::StepJob::execute(&job, &registry())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Steps => {
            let registry = registry();
            for name in registry.names() {
                let step = registry.get(name).expect("listed");
                println!("{name:<20} v{}  {}", step.version(), step.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Options every command shares.
struct Globals {
    directory: Option<PathBuf>,
    manifest: Option<PathBuf>,
}

impl Globals {
    /// The directory the command works from.
    fn start_dir(&self) -> anyhow::Result<PathBuf> {
        let cwd = std::env::current_dir()?;
        Ok(match &self.directory {
            Some(dir) => cwd.join(dir),
            None => cwd,
        })
    }

    /// The workspace root: `--manifest`'s directory, or the nearest
    /// directory holding Fabric.toml at or above the start directory.
    fn root(&self) -> anyhow::Result<PathBuf> {
        let start = self.start_dir()?;
        if let Some(manifest) = &self.manifest {
            let path = start.join(manifest);
            if !path.is_file() {
                return Err(UsageError::from(Diagnostic::new(format!("{} does not exist", path.display()))).into());
            }
            return Ok(path.parent().map(PathBuf::from).unwrap_or(start));
        }
        manifest::find_root(&start).ok_or_else(|| {
            UsageError::from(
                Diagnostic::new(format!("no Fabric.toml in {} or any parent directory", start.display()))
                    .hint("run `fabric init` to create a workspace, or pass -C DIR"),
            )
            .into()
        })
    }
}

/// Every step this `fabric` ships with: the core's `fabric.release`, and
/// the steps of the Prime Brain and ONNX crates.
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.register(Box::new(Release::new(headlines())));
    prime_brain::register(&mut registry);
    fabric_onnx::register(&mut registry);
    registry
}

/// What releases headline (and `verify` checks the changelog by): the
/// Prime Brain's dataset hashes and model scores.
pub fn headlines() -> std::sync::Arc<dyn Headlines> {
    std::sync::Arc::new(fabric_onnx::headlines::PrimeHeadlines)
}

/// A loaded workspace with everything commands need.
struct Session {
    workspace: Workspace,
    graph: StageGraph,
    registry: Registry,
    store: Store,
    cache: StatCache,
}

impl Session {
    /// Loads manifests and the graph, applying `-P` overrides.
    fn open(globals: &Globals, overrides: &[String]) -> anyhow::Result<Session> {
        Session::open_with_flags(globals, overrides, &[])
    }

    /// [`Session::open`] plus params written as `--name value`.
    fn open_with_flags(globals: &Globals, overrides: &[String], flags: &[String]) -> anyhow::Result<Session> {
        let root = globals.root()?;
        let overrides = parse_overrides(overrides, flags)?;
        let registry = registry();
        let workspace = manifest::load(&root, &overrides, &registry).map_err(UsageError)?;
        let graph = StageGraph::build(&workspace).map_err(UsageError)?;
        let store = Store::local(&workspace.store);
        let cache = StatCache::load(&workspace.layout().stat_cache());
        Ok(Session {
            workspace,
            graph,
            registry,
            store,
            cache,
        })
    }

    /// Reads Fabric.lock (a damaged lock is a usage error).
    fn lock(&self) -> anyhow::Result<Lock> {
        Ok(self.workspace.load_lock().map_err(UsageError::from)?)
    }

    /// Resolves targets (pipeline or stage names; none = every stage) to
    /// stage indices, plus what they need — or, with `downstream`, what needs them.
    fn select(&self, targets: &[String], downstream: bool) -> anyhow::Result<BTreeSet<usize>> {
        let picked: Vec<usize> = self.resolve(targets)?.into_iter().collect();
        Ok(self.graph.closure(&picked, downstream))
    }

    /// The stages the targets name (pipeline or stage names; none = every stage).
    fn resolve(&self, targets: &[String]) -> anyhow::Result<BTreeSet<usize>> {
        if targets.is_empty() {
            return Ok((0..self.workspace.stages.len()).collect());
        }
        let mut picked = BTreeSet::new();
        for target in targets {
            if let Some(pipeline) = self.workspace.pipelines.iter().find(|p| &p.name == target) {
                picked.extend(pipeline.stages.iter().filter_map(|s| self.index(s)));
            } else if let named = self.named(target)
                && !named.is_empty()
            {
                picked.extend(named);
            } else {
                let names = self
                    .workspace
                    .stages
                    .iter()
                    .map(|s| s.name.as_str())
                    .chain(self.workspace.pipelines.iter().map(|p| p.name.as_str()));
                let mut diagnostic = Diagnostic::new(format!("no stage or pipeline is called `{target}`"));
                diagnostic = match did_you_mean(target, names) {
                    Some(close) => diagnostic.hint(format!("did you mean `{close}`?")),
                    None => diagnostic.hint("`fabric dag` lists the stages"),
                };
                return Err(UsageError::from(diagnostic).into());
            }
        }
        Ok(picked)
    }

    /// The stage called `name`, or else every stage a matrix stage
    /// declared as `name` expanded to.
    fn named(&self, name: &str) -> Vec<usize> {
        let stages = &self.workspace.stages;
        match self.index(name) {
            Some(index) => vec![index],
            None => (0..stages.len())
                .filter(|&i| matrix::expands(name, &stages[i].name))
                .collect(),
        }
    }

    /// A planner over this session with the lock as it is on disk.
    fn planner(&self) -> anyhow::Result<Planner<'_>> {
        Ok(Planner::new(
            &self.workspace,
            &self.graph,
            &self.registry,
            &self.store,
            &self.cache,
            self.lock()?,
        ))
    }

    fn index(&self, stage: &str) -> Option<usize> {
        self.workspace.stages.iter().position(|s| s.name == stage)
    }
}

/// Splits `-P name=value` overrides and adds those written as `--name value`.
fn parse_overrides(overrides: &[String], flags: &[String]) -> anyhow::Result<Vec<manifest::Override>> {
    let mut parsed = Vec::new();
    for text in overrides {
        let Some((name, value)) = text.split_once('=') else {
            return Err(UsageError::from(
                Diagnostic::new(format!("`-P {text}` is not `name=value`")).hint("write e.g. `-P seed=7`"),
            )
            .into());
        };
        parsed.push(manifest::Override {
            name: name.trim().to_string(),
            value: value.to_string(),
            flag: None,
        });
    }
    for text in flags {
        let Some((flag, value)) = text.split_once('=') else {
            return Err(UsageError::from(
                Diagnostic::new(format!("`--{text}` needs a value"))
                    .hint(format!("write `--{text} VALUE` or `--{text}=VALUE`")),
            )
            .into());
        };
        parsed.push(manifest::Override {
            name: flag.replace('-', "_"),
            value: value.to_string(),
            flag: Some(format!("--{flag}")),
        });
    }
    Ok(parsed)
}

/// `fabric run --snapshots-dir DIR`: rewrites long options that `fabric run`
/// does not have into the hidden `--param-flag NAME=VALUE`, so that any
/// declared param can be set the way a make variable or a script flag is
/// (the value is the next argument, or follows `=`; a missing value is
/// passed on as missing, and refused later). The manifest decides whether
/// such a param exists. Also joins `--dry-run true|false` into one argument,
/// so that a bare `--dry-run` can be followed by a target.
fn params_as_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let command = <Cli as clap::CommandFactory>::command();
    let Some(run) = command.find_subcommand("run") else {
        return args;
    };
    // The subcommand is the first argument that is neither a global option
    // nor the value of one.
    let mut at = 1;
    while let Some(arg) = args.get(at).map(|a| a.to_string_lossy()) {
        if arg == "-C" || arg == "--directory" || arg == "--manifest" {
            at += 2;
        } else if arg.starts_with('-') {
            at += 1;
        } else {
            break;
        }
    }
    if args.get(at).is_none_or(|a| a != "run") {
        return args;
    }
    let known: BTreeSet<String> = run
        .get_arguments()
        .chain(command.get_arguments())
        .filter_map(|arg| arg.get_long().map(String::from))
        .chain(["help".to_string()])
        .collect();
    let mut rewritten: Vec<std::ffi::OsString> = args[..=at].to_vec();
    let mut rest = args[at + 1..].iter().peekable();
    while let Some(arg) = rest.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            rewritten.push(arg.clone());
            rewritten.extend(rest.cloned());
            break;
        }
        let Some(long) = text.strip_prefix("--").filter(|l| !l.is_empty()) else {
            rewritten.push(arg.clone());
            continue;
        };
        let name = long.split('=').next().unwrap_or(long);
        let value_follows =
            |value: Option<&&std::ffi::OsString>| value.is_some_and(|v| !v.to_string_lossy().starts_with('-'));
        if name == "dry-run" && !long.contains('=') {
            match rest.peek().map(|v| v.to_string_lossy().into_owned()) {
                Some(value) if value == "true" || value == "false" => {
                    rest.next();
                    rewritten.push(format!("--dry-run={value}").into());
                }
                _ => rewritten.push(arg.clone()),
            }
        } else if known.contains(name) {
            rewritten.push(arg.clone());
        } else {
            let pair = match long.split_once('=') {
                Some(_) => long.to_string(),
                None if value_follows(rest.peek()) => {
                    format!(
                        "{name}={}",
                        rest.next()
                            .map(|v| v.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    )
                }
                None => name.to_string(),
            };
            rewritten.push("--param-flag".into());
            rewritten.push(pair.into());
        }
    }
    rewritten
}

/// Chooses the reporter for this run; `stream` shows what commands print.
fn reporter(verbose: bool, quiet: bool, json: bool, stream: bool) -> Box<dyn fabric_core::report::Reporter> {
    use fabric_core::report::{json::JsonReporter, plain::PlainReporter, terminal::TerminalReporter};
    if json {
        Box::new(JsonReporter)
    } else if std::io::stderr().is_terminal() && !quiet && std::env::var_os("CI").is_none() {
        Box::new(TerminalReporter::new(verbose, stream))
    } else {
        Box::new(PlainReporter { verbose, quiet, stream })
    }
}

/// Takes the workspace's run lock (`.fabric/run.lock`, an OS file lock that
/// is released when the process ends, however it ends, and its run's
/// supervisor with it; the file names the holder's pid).
/// Opens the file at `path` to hold a lock on (made if missing, never
/// truncated: it may name its holder).
fn lock_file(path: &Path) -> std::io::Result<File> {
    File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
}

fn lock_workspace(root: &Path, wait: bool) -> anyhow::Result<File> {
    let layout = fabric_core::layout::Layout::new(root);
    std::fs::create_dir_all(layout.state_dir())?;
    let path = layout.run_lock();
    let mut file = lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) if wait => {
            eprintln!("waiting for another fabric run in this workspace to finish…");
            file.lock()?;
        }
        Err(TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            match holder.trim().parse::<u32>() {
                // A run killed outright: its supervisor holds the lock until
                // the commands it left are dead, which takes a moment.
                Ok(pid) if !fabric_core::run::group::is_running(pid) => {
                    eprintln!("waiting for the commands of an ended run (pid {pid}) to be stopped…");
                    file.lock()?;
                }
                Ok(pid) => anyhow::bail!(
                    "another `fabric run` is using this workspace (pid {pid}); wait for it to finish, or pass --wait to queue behind it"
                ),
                Err(_) => anyhow::bail!(
                    "another `fabric run` is using this workspace; wait for it to finish, or pass --wait to queue behind it"
                ),
            }
        }
        Err(TryLockError::Error(error)) => return Err(error.into()),
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}
