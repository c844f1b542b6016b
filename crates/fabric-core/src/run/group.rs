//! Process groups: every command runs in its own, and this is how a group
//! is signalled and how Fabric knows that nothing in it runs any more.
//!
//! `kill(2)` only queues a signal: a process killed in the middle of a
//! `write` may finish it after `kill` returns. So a group is over only when
//! every process left in it is a zombie (dead, not yet reaped: some init
//! processes, this machine's included, never reap the orphans they inherit)
//! or gone. Outs are hashed, and a killed run's lock released, only then.

use std::time::{Duration, Instant};

/// How long [`await_death`] waits for a killed group's processes to die. SIGKILL
/// cannot be caught, so only a process stuck in an uninterruptible sleep
/// (a hung network filesystem) takes longer; it is then left to the kernel.
const DEATH_WAIT: Duration = Duration::from_secs(2);

/// Sends `signal` to every process in `group`. A group id below 2 is never
/// signalled: `kill(-1)` would reach every process of the user, `kill(0)`
/// the caller's own group.
#[allow(unsafe_code)]
pub fn signal(group: i32, signal: i32) {
    if group < 2 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals a process group; it has no
    // memory-safety preconditions.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Returns once no process of `group` (sent SIGKILL) runs any more.
pub fn await_death(group: i32) {
    let deadline = Instant::now() + DEATH_WAIT;
    // The common case, a command that left nothing behind: the group is
    // already empty and one syscall says so.
    while has_running_member(group) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// True if process `pid` exists and is not a zombie.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| running_in(&stat).is_some())
}

/// True if a process of `group` exists and is not a zombie.
#[allow(unsafe_code)]
fn has_running_member(group: i32) -> bool {
    // SAFETY: signal 0 only checks that the group exists.
    if unsafe { libc::kill(-group, 0) } != 0 {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| running_in(&stat))
                == Some(group)
    })
}

/// The process groups of the live processes whose environment holds the
/// entry `entry` (`NAME=VALUE`). Processes of other users, and zombies
/// (their environment is gone), are not seen.
pub fn marked(entry: &str) -> std::collections::BTreeSet<i32> {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    let entry = entry.as_bytes();
    processes
        .flatten()
        .filter(|process| {
            process
                .file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|process| {
            let environ = std::fs::read(process.path().join("environ")).ok()?;
            environ
                .split(|&byte| byte == 0)
                .any(|held| held == entry)
                .then_some(())?;
            running_in(&std::fs::read_to_string(process.path().join("stat")).ok()?)
        })
        .collect()
}

/// The process group of a live (not zombie) process, from its
/// `/proc/PID/stat` line: `PID (COMMAND) STATE PPID PGRP …`, where the
/// command may itself hold spaces and parentheses.
fn running_in(stat: &str) -> Option<i32> {
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let group = fields.nth(1)?.parse().ok()?;
    (state != "Z" && state != "X").then_some(group)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    #[test]
    fn reads_the_group_of_a_live_process_and_none_of_a_zombie() {
        assert_eq!(running_in("12 (sh) S 1 12 12 0 -1"), Some(12));
        assert_eq!(running_in("40 (a (b) c) R 12 33 12 0"), Some(33));
        assert_eq!(running_in("41 (sleep) Z 1 33 12 0"), None);
        assert_eq!(running_in("garbage"), None);
    }

    #[test]
    fn await_death_returns_only_when_the_backgrounded_grandchild_is_dead() {
        // The shell backgrounds a sleep (its grandchild, in its group) and
        // exits at once: a group with no shell but a running member.
        let mut shell = Command::new("sh")
            .args(["-c", "sleep 30 >/dev/null & echo $!"])
            .stdout(std::process::Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let group = shell.id() as i32;
        let output = std::io::read_to_string(shell.stdout.take().unwrap()).unwrap();
        shell.wait().unwrap();
        let sleeper = output.trim();
        assert!(has_running_member(group), "the backgrounded sleep runs in the group");
        signal(group, libc::SIGKILL);
        await_death(group);
        assert!(!has_running_member(group));
        assert!(!is_running(sleeper.parse().unwrap()), "the sleep is dead");
        assert!(is_running(std::process::id()));
    }
}
