//! Where commands run: the [`Executor`] seam. A job carries all it needs to
//! run elsewhere, and its end is an exit code, a signal or a reason it was
//! lost, not a local status. [`LocalExecutor`] runs jobs as local processes;
//! [`SlurmExecutor`] hands them to a Slurm cluster.

mod local;
mod slurm;

pub use local::LocalExecutor;
pub use slurm::SlurmExecutor;

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

pub use crate::manifest::Resources;

/// One command to run for a stage, with everything an executor that runs
/// it elsewhere (a cluster) needs to know.
pub struct Job {
    /// The stage name (executors label their work with it).
    pub stage: String,
    /// The shell command, run with `sh -c`.
    pub cmd: String,
    /// The working directory.
    pub dir: PathBuf,
    /// The stage's declared environment variables that are set, with their
    /// values (a local command inherits the whole environment anyway).
    pub env: Vec<(String, OsString)>,
    /// The declared outs, as absolute paths.
    pub outs: Vec<PathBuf>,
    /// Where stdout and stderr go (created when the command first prints;
    /// absent when it printed nothing).
    pub log: PathBuf,
    /// What the stage asks of a cluster (the local executor ignores it).
    pub resources: Resources,
}

/// Names a submitted job within its executor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u64);

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEnd {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal.
    Signalled(i32),
    /// The job is gone without an exit status (cancelled, lost by the
    /// cluster, or not startable); why.
    Lost(String),
}

impl JobEnd {
    /// True for exit code 0.
    pub fn success(&self) -> bool {
        *self == JobEnd::Exited(0)
    }
}

impl std::fmt::Display for JobEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobEnd::Exited(code) => write!(f, "command exited with status {code}"),
            JobEnd::Signalled(signal) => write!(f, "command was killed by a signal ({signal})"),
            JobEnd::Lost(why) => write!(f, "job lost: {why}"),
        }
    }
}

/// What an executor reports about its jobs.
#[derive(Debug)]
pub enum JobEvent {
    /// A job printed a line.
    Output(JobId, String),
    /// A job ended (reported once per job).
    Ended(JobId, JobEnd),
    /// [`Executor::wake`] was called.
    Woken,
}

/// Runs stage commands: submit returns at once, and the caller collects
/// what happens through [`Executor::next_event`]; so how many jobs are in
/// flight is the caller's choice, not a number of threads.
pub trait Executor: Send + Sync {
    /// Starts `job`.
    fn submit(&self, job: Job) -> io::Result<JobId>;
    /// Blocks until a submitted job prints a line or ends, or until
    /// [`Executor::wake`] is called.
    fn next_event(&self) -> JobEvent;
    /// Makes the `next_event` waiting now (or the next one) return
    /// [`JobEvent::Woken`]: the caller has something else to attend to.
    fn wake(&self);
    /// Ends a job (it is still reported, as ended by a signal or lost).
    fn cancel(&self, job: JobId);
    /// Ends every job and refuses new ones.
    fn cancel_all(&self);
    /// How the executor names `job` to a person (`Slurm job 42`), when
    /// that helps find it.
    fn describe(&self, job: JobId) -> Option<String> {
        let _ = job;
        None
    }
    /// Whether `stage`'s jobs run away from this process (then a built-in
    /// step goes to the executor as a `fabric __step` job).
    fn is_remote(&self, stage: &str) -> bool {
        let _ = stage;
        false
    }
}
