//! The run's supervisor: a small process (`fabric __supervise`) that
//! outlives `fabric` by a moment to end the commands it leaves behind.
//!
//! Every command runs in its own process group. `fabric` tells the
//! supervisor, over a pipe, which groups are running (`+GROUP`) and which
//! have ended (`-GROUP`). When the pipe closes — `fabric` finished, or died
//! however it died, `kill -9` included, since the kernel closes its end —
//! the supervisor kills every group still registered (SIGKILL to the whole
//! group: the shell, its children, anything it backgrounded in the group),
//! waits until none of their processes runs, and exits. So no command keeps
//! writing into outs the next run will replace or record.
//!
//! A command could also escape its registration: `fabric` may die between
//! starting a command and telling the supervisor its group, and a command
//! may leave its group (`setsid`). So every command's environment carries
//! [`MARK`] naming the supervisor, and a supervisor whose `fabric` died
//! (the pipe closed without [`DONE`]) also kills, with their groups, every
//! process still holding its mark: whatever a command started, unless it
//! scrubbed its environment. After a normal end nothing is scanned.
//!
//! The supervisor also holds the workspace's run lock: its stdout is the
//! lock file, sharing the open file that `fabric` locked, and such a lock
//! is released only when every descriptor of it is closed. After a
//! `kill -9` of `fabric` the lock therefore passes to the next run only
//! once the killed run's commands are dead, however late the supervisor
//! gets the processor (a test run on a loaded machine once saw a killed
//! run's background writer append to an out the next run had recorded).
//!
//! Why a separate process and not `PR_SET_PDEATHSIG` in each child: the
//! death signal reaches only the direct child (not what it starts), and
//! setting it needs code between fork and exec, which rules out
//! `posix_spawn`, the fast way to start the thousands of short commands a
//! large graph runs. The supervisor runs in its own process group, so a
//! Ctrl-C at the terminal reaches `fabric` (which ends its commands itself)
//! and not the supervisor. Not covered: a process that both leaves its
//! group and clears its environment.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The hidden subcommand that runs [`serve`].
pub const SUBCOMMAND: &str = "__supervise";

/// The environment variable every command gets: the supervisor's pid.
pub const MARK: &str = "FABRIC_SUPERVISOR";

/// What `fabric` says last when it ends normally.
const DONE: &str = "done";

/// How many times a supervisor looks again for marked processes after
/// killing those it found (a process may fork while it looks).
const MARK_SWEEPS: usize = 20;

/// `fabric`'s side: the pipe to a running supervisor.
pub struct Supervisor {
    /// None once closed (when the run is over).
    pipe: Mutex<Option<ChildStdin>>,
    child: Child,
}

impl Supervisor {
    /// Starts a supervisor from this executable, holding `run_lock` (the
    /// workspace's locked run lock file) until it exits.
    pub fn start(run_lock: Option<&File>) -> io::Result<Supervisor> {
        let holds = match run_lock {
            Some(lock) => Stdio::from(lock.try_clone()?),
            None => Stdio::null(),
        };
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(holds)
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no pipe to the supervisor"))?;
        Ok(Supervisor {
            pipe: Mutex::new(Some(pipe)),
            child,
        })
    }

    /// The environment entry that marks a command of this run (`MARK`'s value).
    pub fn mark(&self) -> String {
        self.child.id().to_string()
    }

    /// Registers a running process group.
    pub fn watch(&self, group: i32) {
        self.send(&format!("+{group}\n"));
    }

    /// Unregisters a process group whose command ended.
    pub fn release(&self, group: i32) {
        self.send(&format!("-{group}\n"));
    }

    fn send(&self, line: &str) {
        // A supervisor that is gone cannot be helped; the run goes on.
        if let Some(pipe) = self.pipe.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

impl Drop for Supervisor {
    /// The run is over: closing the pipe ends the supervisor, and waiting
    /// for it frees the run lock it shares when `fabric` exits, not a
    /// moment later (the next run would wait for it).
    fn drop(&mut self) {
        self.send(&format!("{DONE}\n"));
        self.pipe.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        let _ = self.child.wait();
    }
}

/// The supervisor's side: reads registrations from stdin until it closes,
/// then kills every group still registered and, unless `fabric` said it was
/// done, every process holding this supervisor's mark, and waits until they
/// are dead. It writes nothing: its stdout may be the run lock.
pub fn serve() -> io::Result<()> {
    ignore_hangups();
    let mut groups = BTreeSet::new();
    let mut done = false;
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        done = line == DONE;
        if let Some(group) = line.strip_prefix('+').and_then(|g| g.parse::<i32>().ok()) {
            if group > 1 {
                groups.insert(group);
            }
        } else if let Some(group) = line.strip_prefix('-').and_then(|g| g.parse::<i32>().ok()) {
            groups.remove(&group);
        }
    }
    for &group in &groups {
        super::group::signal(group, libc::SIGKILL);
    }
    for group in groups {
        super::group::await_death(group);
    }
    if !done {
        end_marked(&format!("{MARK}={}", std::process::id()));
    }
    Ok(())
}

/// Kills every process whose environment holds `mark`, with its group, and
/// waits until they are dead; looks again until none is left.
fn end_marked(mark: &str) {
    for _ in 0..MARK_SWEEPS {
        // A process is always in its group: killing the group kills it.
        let groups = super::group::marked(mark);
        if groups.is_empty() {
            return;
        }
        for &group in &groups {
            super::group::signal(group, libc::SIGKILL);
        }
        for group in groups {
            super::group::await_death(group);
        }
    }
}

/// A hangup must not end the supervisor before the commands: the kernel
/// sends one to a stopped supervisor when `fabric` dies (its group is then
/// orphaned), and a closing terminal sends one to what it started.
#[allow(unsafe_code)]
fn ignore_hangups() {
    // SAFETY: setting a signal's disposition to "ignore" runs no handler.
    unsafe {
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
}
