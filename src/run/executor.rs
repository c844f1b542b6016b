//! Where commands run: the [`Executor`] seam (local processes now; a Slurm
//! executor later) and the interrupt machinery that ends running commands.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::supervisor::Supervisor;

/// One command to run for a stage.
pub struct Job<'a> {
    /// The stage name (for executors that label their work).
    pub stage: &'a str,
    /// The shell command, run with `sh -c`.
    pub cmd: &'a str,
    /// The working directory.
    pub dir: PathBuf,
    /// Where stdout and stderr go (created when the command first prints;
    /// absent when it printed nothing).
    pub log: &'a Path,
    /// Called with each line the command prints, as it prints it.
    pub output: &'a (dyn Fn(&str) + Sync),
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

fn terminate_group(group: i32) {
    super::group::signal(group, libc::SIGTERM);
}

/// Waits until the child `pid` has exited, leaving it a zombie (so that its
/// pid, the group's id, stays reserved until it is reaped).
#[allow(unsafe_code)]
fn wait_without_reaping(pid: i32) {
    loop {
        // SAFETY: waitid writes only into the siginfo struct passed to it.
        let done = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if done == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Runs commands as local child processes, each in its own process group:
/// a stage ends when its shell exits, and whatever the command left running
/// in the group is killed then; the run's [`Supervisor`] (started with the
/// first command) kills the groups still running if `fabric` dies.
pub struct LocalExecutor {
    /// The workspace's run lock, handed to the supervisor.
    run_lock: Option<File>,
    supervisor: OnceLock<Option<Arc<Supervisor>>>,
}

impl LocalExecutor {
    /// An executor for commands no run lock covers (a scratch copy).
    pub const fn new() -> LocalExecutor {
        LocalExecutor {
            run_lock: None,
            supervisor: OnceLock::new(),
        }
    }

    /// An executor for a run that holds the workspace's `run_lock`: the
    /// supervisor shares the lock, so after a `kill -9` of `fabric` the
    /// next run waits until the commands left behind are dead.
    pub fn holding(run_lock: &File) -> io::Result<LocalExecutor> {
        Ok(LocalExecutor {
            run_lock: Some(run_lock.try_clone()?),
            supervisor: OnceLock::new(),
        })
    }

    /// The run's supervisor; None when it could not start (the run goes
    /// on, with a warning, unprotected against a `kill -9` of `fabric`).
    fn supervisor(&self) -> Option<Arc<Supervisor>> {
        self.supervisor
            .get_or_init(|| match Supervisor::start(self.run_lock.as_ref()) {
                Ok(supervisor) => Some(Arc::new(supervisor)),
                Err(error) => {
                    eprintln!("warning: no supervisor ({error}): commands may outlive a killed fabric");
                    None
                }
            })
            .clone()
    }
}

impl Default for LocalExecutor {
    fn default() -> Self {
        LocalExecutor::new()
    }
}

/// What the threads watching a command report.
enum Watch {
    /// A line it printed.
    Line(String),
    /// It exited.
    Exited(io::Result<ExitStatus>),
}

impl Executor for LocalExecutor {
    fn execute(&self, job: &Job, interrupts: &Interrupts) -> io::Result<ExitStatus> {
        // The log is created with the first line the command prints: a
        // silent command creates no file (creating thousands of inodes is
        // most of the cost of a large graph of short commands).
        match std::fs::remove_file(job.log) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let log_path = job.log.to_path_buf();
        // One pipe for stdout and stderr keeps their order; a copier thread
        // writes it to the log and passes each line on as it comes.
        let (reader, writer) = io::pipe()?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(job.cmd)
            .current_dir(&job.dir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        let supervisor = self.supervisor();
        let mut child = command.spawn()?;
        // The parent's copies of the write end go with `command`.
        drop(command);
        let group = child.id() as i32;
        if let Some(supervisor) = &supervisor {
            supervisor.watch(group);
        }
        interrupts.register(group);
        let (sender, events) = std::sync::mpsc::channel();
        let lines = sender.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut line = Vec::new();
            let mut log: Option<File> = None;
            while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if log.is_none() {
                    log = File::create(&log_path).ok();
                }
                if let Some(log) = log.as_mut() {
                    let _ = log.write_all(&line);
                }
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\n', '\r'])
                    .to_string();
                let _ = lines.send(Watch::Line(text));
                line.clear();
            }
        });
        std::thread::spawn(move || {
            // The stage ends with its shell: what it left running in its
            // group is killed before the shell is reaped (while the group's
            // id cannot be taken by another process), and the stage is over
            // once none of it runs.
            wait_without_reaping(group);
            super::group::signal(group, libc::SIGKILL);
            let exit = child.wait();
            super::group::await_death(group);
            if let Some(supervisor) = supervisor {
                supervisor.release(group);
            }
            let _ = sender.send(Watch::Exited(exit));
        });
        let mut status = None;
        let mut deadline = None;
        loop {
            let event = match deadline {
                None => events.recv().map_err(|_| ()),
                // After the exit, output still in the pipe is passed on; a
                // backgrounded grandchild that keeps the pipe open must not
                // hold the stage (its output still goes to the log).
                Some(deadline) => events
                    .recv_timeout(deadline - std::time::Instant::now().min(deadline))
                    .map_err(|_| ()),
            };
            match event {
                Ok(Watch::Line(line)) => (job.output)(&line),
                Ok(Watch::Exited(exit)) => {
                    interrupts.unregister(group);
                    status = Some(exit);
                    deadline = Some(std::time::Instant::now() + std::time::Duration::from_secs(2));
                }
                Err(()) => break,
            }
        }
        status.unwrap_or_else(|| Err(io::Error::other("the command's watcher stopped")))
    }
}
