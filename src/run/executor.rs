//! Where commands run: the [`Executor`] seam (local processes now; a Slurm
//! executor later) and the interrupt machinery that ends running commands.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// One command to run for a stage.
pub struct Job<'a> {
    /// The stage name (for executors that label their work).
    pub stage: &'a str,
    /// The shell command, run with `sh -c`.
    pub cmd: &'a str,
    /// The working directory.
    pub dir: PathBuf,
    /// Where stdout and stderr go.
    pub log: &'a Path,
}

/// Runs stage commands.
pub trait Executor: Send + Sync {
    /// Runs `job` to completion (or until interrupted) and returns its status.
    fn execute(&self, job: &Job, interrupts: &Interrupts) -> io::Result<ExitStatus>;
}

/// Tracks running process groups so that Ctrl-C / SIGTERM can end them all.
#[derive(Default)]
pub struct Interrupts {
    interrupted: AtomicBool,
    groups: Mutex<BTreeSet<i32>>,
}

impl Interrupts {
    /// True once an interrupt arrived.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Records the interrupt and terminates every running process group.
    pub fn interrupt(&self) {
        let groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        self.interrupted.store(true, Ordering::SeqCst);
        for group in groups.iter() {
            terminate_group(*group);
        }
    }

    /// Registers a started process group; one started after an interrupt is
    /// terminated at once.
    fn register(&self, group: i32) {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.insert(group);
        if self.interrupted.load(Ordering::SeqCst) {
            terminate_group(group);
        }
    }

    fn unregister(&self, group: i32) {
        self.groups.lock().unwrap_or_else(|e| e.into_inner()).remove(&group);
    }
}

/// Asks the kernel to kill the command if `fabric` dies (even by SIGKILL),
/// so no orphan keeps writing into outs the next run is about to replace.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn terminate_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(-group, libc::SIGTERM);
    }
}

/// Runs commands as local child processes, each in its own process group.
pub struct LocalExecutor;

impl Executor for LocalExecutor {
    fn execute(&self, job: &Job, interrupts: &Interrupts) -> io::Result<ExitStatus> {
        let log = File::create(job.log)?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(job.cmd)
            .current_dir(&job.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        die_with_parent(&mut command);
        let mut child = command.spawn()?;
        let group = child.id() as i32;
        interrupts.register(group);
        let status = child.wait();
        interrupts.unregister(group);
        status
    }
}
