//! The run's supervisor: a small process (`fabric __supervise`) that
//! outlives `fabric` by a moment to end the commands it leaves behind.
//!
//! Every command runs in its own process group. `fabric` tells the
//! supervisor, over a pipe, which groups are running (`+GROUP`) and which
//! have ended (`-GROUP`). When the pipe closes — `fabric` finished, or died
//! however it died, `kill -9` included, since the kernel closes its end —
//! the supervisor kills every group still registered (SIGKILL to the whole
//! group: the shell, its children, anything it backgrounded in the group)
//! and exits. So no command keeps writing into outs the next run will
//! replace or record.
//!
//! Why a separate process and not `PR_SET_PDEATHSIG` in each child: the
//! death signal reaches only the direct child (not what it starts), and
//! setting it needs code between fork and exec, which rules out
//! `posix_spawn`, the fast way to start the thousands of short commands a
//! large graph runs. The supervisor runs in its own process group, so a
//! Ctrl-C at the terminal reaches `fabric` (which ends its commands itself)
//! and not the supervisor. Not covered: a process that leaves its group
//! (`setsid`, a daemon), and the microseconds between a spawn and its
//! registration.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

/// The hidden subcommand that runs [`serve`].
pub const SUBCOMMAND: &str = "__supervise";

/// `fabric`'s side: the pipe to a running supervisor.
pub struct Supervisor {
    pipe: Mutex<ChildStdin>,
    // Kept so that the handle is not dropped while fabric runs.
    _child: Child,
}

impl Supervisor {
    /// Starts a supervisor from this executable.
    pub fn start() -> io::Result<Supervisor> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| io::Error::other("no pipe to the supervisor"))?;
        Ok(Supervisor {
            pipe: Mutex::new(pipe),
            _child: child,
        })
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
        let _ = self
            .pipe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(line.as_bytes());
    }
}

/// The supervisor's side: reads registrations from stdin until it closes,
/// then kills every group still registered.
pub fn serve() -> io::Result<()> {
    let mut groups = BTreeSet::new();
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(group) = line.strip_prefix('+').and_then(|g| g.parse::<i32>().ok()) {
            if group > 1 {
                groups.insert(group);
            }
        } else if let Some(group) = line.strip_prefix('-').and_then(|g| g.parse::<i32>().ok()) {
            groups.remove(&group);
        }
    }
    for group in groups {
        kill_group(group);
    }
    Ok(())
}

#[allow(unsafe_code)]
fn kill_group(group: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has
    // no memory-safety preconditions.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}
