//! Where commands run: the [`Executor`] seam (local processes now; a Slurm
//! executor later) and the interrupt machinery that ends running commands.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::group;
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
    group::signal(group, libc::SIGTERM);
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

impl Executor for LocalExecutor {
    fn execute(&self, job: &Job, interrupts: &Interrupts) -> io::Result<ExitStatus> {
        // The log is created with the first line the command prints: a
        // silent command creates no file (creating thousands of inodes is
        // most of the cost of a large graph of short commands).
        match std::fs::remove_file(job.log) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        // One pipe for stdout and stderr keeps their order.
        let (mut reader, writer) = io::pipe()?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(job.cmd)
            .current_dir(&job.dir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        let supervisor = self.supervisor();
        if let Some(supervisor) = &supervisor {
            command.env(super::supervisor::MARK, supervisor.mark());
        }
        let mut child = command.spawn()?;
        // The parent's copies of the write end go with `command`.
        drop(command);
        let group = child.id() as i32;
        if let Some(supervisor) = &supervisor {
            supervisor.watch(group);
        }
        interrupts.register(group);
        // This thread watches the pipe and the shell's exit together: no
        // thread is started per command (each would cost a stack and, on
        // exit, a TLB shootdown across the cores).
        let exited = match pidfd_open(group) {
            Ok(exited) => exited,
            Err(error) => {
                group::signal(group, libc::SIGKILL);
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "cannot watch the command (pidfd_open: {error}); Fabric needs Linux 5.3 or later"
                )));
            }
        };
        let mut printed = Printed::new(job);
        let mut open = true;
        loop {
            let watched = [exited.as_raw_fd(), reader.as_raw_fd()];
            let readiness = ready(&watched[..if open { 2 } else { 1 }], None)?;
            if open && readiness[1] {
                open = printed.read_from(&mut reader)?;
            }
            if readiness[0] {
                break;
            }
        }
        // The stage ends with its shell (exited, not yet reaped): what it
        // left running in its group is killed before the shell is reaped
        // (while the group's id cannot be taken by another process), and the
        // stage is over once none of it runs.
        group::signal(group, libc::SIGKILL);
        let status = child.wait();
        group::await_death(group);
        if let Some(supervisor) = &supervisor {
            supervisor.release(group);
        }
        interrupts.unregister(group);
        // Output still in the pipe is passed on; a backgrounded grandchild
        // that kept the pipe open (it is dead now, but may have passed the
        // pipe on) must not hold the stage.
        let deadline = Instant::now() + Duration::from_secs(2);
        while open && ready(&[reader.as_raw_fd()], Some(deadline))?[0] {
            open = printed.read_from(&mut reader)?;
        }
        printed.finish();
        status
    }
}

/// What a command prints, passed on line by line as it comes and kept in
/// its log (created with the first line).
struct Printed<'a> {
    job: &'a Job<'a>,
    log: Option<File>,
    /// The start of a line not yet ended.
    pending: Vec<u8>,
}

impl<'a> Printed<'a> {
    fn new(job: &'a Job<'a>) -> Printed<'a> {
        Printed {
            job,
            log: None,
            pending: Vec::new(),
        }
    }

    /// Reads what the pipe holds (it is ready) and passes on every line it
    /// completes; false at the end of the output.
    fn read_from(&mut self, pipe: &mut io::PipeReader) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = match pipe.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(error) => return Err(error),
        };
        self.pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.pass_on(&line);
        }
        Ok(n > 0)
    }

    /// Passes on a last line that did not end with a newline.
    fn finish(mut self) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.pass_on(&line);
        }
    }

    fn pass_on(&mut self, line: &[u8]) {
        if self.log.is_none() {
            self.log = File::create(self.job.log).ok();
        }
        if let Some(log) = self.log.as_mut() {
            let _ = log.write_all(line);
        }
        let text = String::from_utf8_lossy(line);
        (self.job.output)(text.trim_end_matches(['\n', '\r']));
    }
}

/// A descriptor that becomes readable when process `pid` exits.
#[allow(unsafe_code)]
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just opened and belongs to nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until one of `fds` is readable (or at its end), or until
/// `deadline`; which of them are.
#[allow(unsafe_code)]
fn ready(fds: &[RawFd], deadline: Option<Instant>) -> io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        let timeout = deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128) as i32
        });
        // SAFETY: poll writes only into the `revents` of the array passed,
        // whose length it is given.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, timeout) };
        if n >= 0 {
            return Ok(polled.iter().map(|p| p.revents != 0).collect());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
