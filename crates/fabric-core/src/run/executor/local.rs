//! [`LocalExecutor`]: stage commands as local child processes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use super::{Executor, Job, JobEnd, JobEvent, JobId};
use crate::run::group;
use crate::run::supervisor::Supervisor;

/// Runs commands as local child processes, each in its own process group:
/// a stage ends when its shell exits, and whatever the command left running
/// in the group is killed then; the run's [`Supervisor`] (started with the
/// first command) kills the groups still running if `fabric` dies.
///
/// No thread is started per command: [`Executor::next_event`] waits on an
/// epoll set holding every running command's output pipe and exit (a
/// pidfd), to which [`Executor::submit`] adds a command's as it starts it
/// (no wake-up needed); [`Executor::wake`] writes to a pipe of its own there.
pub struct LocalExecutor {
    /// The workspace's run lock, handed to the supervisor.
    run_lock: Option<File>,
    supervisor: OnceLock<Option<Arc<Supervisor>>>,
    jobs: Mutex<Jobs>,
    next_id: AtomicU64,
    /// Every running command's exit (pidfd) and output pipe, and `woken`.
    watched: Epoll,
    /// Written by `wake`.
    wake: io::PipeWriter,
    woken: io::PipeReader,
    /// Events seen and not yet returned.
    events: Mutex<VecDeque<JobEvent>>,
}

/// The running commands.
#[derive(Default)]
struct Jobs {
    running: Vec<Running>,
    /// Set by `cancel_all`: no command starts any more.
    cancelled: bool,
}

/// The epoll token of the wake-up pipe; a command's are its job id
/// shifted left by one, with [`EXITED`] or [`PRINTED`] in the low bit.
const WOKEN: u64 = u64::MAX;
/// The low bit of a command's pidfd token.
const EXITED: u64 = 0;
/// The low bit of a command's output pipe token.
const PRINTED: u64 = 1;

/// One running command.
struct Running {
    id: JobId,
    child: Child,
    /// Its process group (the shell's pid).
    group: i32,
    /// Readable once the shell has exited.
    exited: OwnedFd,
    reader: io::PipeReader,
    /// False once the pipe is at its end.
    open: bool,
    printed: Printed,
    /// Once the shell has exited: how it ended, and until when what is
    /// left in the pipe is still read.
    ended: Option<(JobEnd, Instant)>,
}

impl LocalExecutor {
    /// An executor for commands no run lock covers (a scratch copy).
    pub fn new() -> io::Result<LocalExecutor> {
        let (woken, wake) = io::pipe()?;
        // A full pipe already holds a wake-up: `wake` then writes nothing
        // rather than waiting for the watcher to read.
        non_blocking(wake.as_raw_fd())?;
        let watched = Epoll::new()?;
        watched.add(woken.as_raw_fd(), WOKEN)?;
        Ok(LocalExecutor {
            run_lock: None,
            supervisor: OnceLock::new(),
            jobs: Mutex::default(),
            next_id: AtomicU64::new(0),
            watched,
            wake,
            woken,
            events: Mutex::default(),
        })
    }

    /// An executor for a run that holds the workspace's `run_lock`: the
    /// supervisor shares the lock, so after a `kill -9` of `fabric` the
    /// next run waits until the commands left behind are dead.
    pub fn holding(run_lock: &File) -> io::Result<LocalExecutor> {
        Ok(LocalExecutor {
            run_lock: Some(run_lock.try_clone()?),
            ..LocalExecutor::new()?
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

    fn jobs(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a command prints or exits (or `wake` is called), and
    /// turns what happened into events.
    fn watch(&self, events: &mut VecDeque<JobEvent>) {
        let deadline = {
            let jobs = self.jobs();
            jobs.running
                .iter()
                .filter_map(|job| job.ended.as_ref().map(|e| e.1))
                .min()
        };
        let ready = match self.watched.wait(deadline) {
            Ok(ready) => ready,
            Err(error) => {
                // Nothing can be watched any more: every command is lost.
                let mut jobs = self.jobs();
                for mut job in jobs.running.drain(..) {
                    group::signal(job.group, libc::SIGKILL);
                    let _ = job.child.wait();
                    events.push_back(JobEvent::Ended(
                        job.id,
                        JobEnd::Lost(format!("cannot watch it: {error}")),
                    ));
                }
                return;
            }
        };
        let mut jobs = self.jobs();
        for token in ready {
            if token == WOKEN {
                // A byte per `wake`; whatever is there is read at once.
                let _ = (&self.woken).read(&mut [0u8; 256]);
                events.push_back(JobEvent::Woken);
                continue;
            }
            let (id, what) = (JobId(token >> 1), token & 1);
            let Some(job) = jobs.running.iter_mut().find(|job| job.id == id) else {
                continue;
            };
            if what == EXITED && job.ended.is_none() {
                let _ = self.watched.remove(job.exited.as_raw_fd());
                job.ended = Some((self.reap(job), Instant::now() + Duration::from_secs(2)));
            } else if what == PRINTED && job.open {
                job.open = job.printed.read_from(job.id, &mut job.reader, events).unwrap_or(false);
                if !job.open {
                    let _ = self.watched.remove(job.reader.as_raw_fd());
                }
            }
        }
        let now = Instant::now();
        let mut index = 0;
        while index < jobs.running.len() {
            let job = &jobs.running[index];
            if job.ended.as_ref().is_some_and(|(_, until)| !job.open || now >= *until) {
                let mut job = jobs.running.remove(index);
                if job.open {
                    let _ = self.watched.remove(job.reader.as_raw_fd());
                }
                job.printed.finish(job.id, events);
                let (end, _) = job.ended.take().expect("only ended jobs are removed");
                events.push_back(JobEvent::Ended(job.id, end));
            } else {
                index += 1;
            }
        }
    }

    /// Ends what the exited shell left in its group and how it ended.
    fn reap(&self, job: &mut Running) -> JobEnd {
        // The stage ends with its shell (exited, not yet reaped): what it
        // left running in its group is killed before the shell is reaped
        // (while the group's id cannot be taken by another process), and the
        // stage is over once none of it runs. Output still in the pipe is
        // passed on after; a process outside the group that kept the pipe
        // open must not hold the stage for more than two seconds.
        group::signal(job.group, libc::SIGKILL);
        let status = job.child.wait();
        group::await_death(job.group);
        if let Some(supervisor) = self.supervisor.get().and_then(Option::as_ref) {
            supervisor.release(job.group);
        }
        match status {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(code), _) => JobEnd::Exited(code),
                (None, Some(signal)) => JobEnd::Signalled(signal),
                (None, None) => JobEnd::Lost("no exit status".into()),
            },
            Err(error) => JobEnd::Lost(format!("cannot reap the command: {error}")),
        }
    }
}

impl Executor for LocalExecutor {
    fn submit(&self, job: Job) -> io::Result<JobId> {
        if self.jobs().cancelled {
            return Err(io::Error::other("interrupted"));
        }
        // The log is created with the first line the command prints: a
        // silent command creates no file (creating thousands of inodes is
        // most of the cost of a large graph of short commands).
        match std::fs::remove_file(&job.log) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        // One pipe for stdout and stderr keeps their order.
        let (reader, writer) = io::pipe()?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&job.cmd)
            .current_dir(&job.dir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        let supervisor = self.supervisor();
        if let Some(supervisor) = &supervisor {
            command.env(crate::run::supervisor::MARK, supervisor.mark());
        }
        let mut child = command.spawn()?;
        // The parent's copies of the write end go with `command`.
        drop(command);
        let group = child.id() as i32;
        if let Some(supervisor) = &supervisor {
            supervisor.watch(group);
        }
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
        let id = JobId(self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut jobs = self.jobs();
        // An interrupt that came while the command started ends it now.
        if jobs.cancelled {
            terminate_group(group);
        }
        // Watched from now on: a `next_event` waiting already sees it.
        self.watched.add(exited.as_raw_fd(), id.0 << 1 | EXITED)?;
        self.watched.add(reader.as_raw_fd(), id.0 << 1 | PRINTED)?;
        jobs.running.push(Running {
            id,
            child,
            group,
            exited,
            reader,
            open: true,
            printed: Printed::new(job.log),
            ended: None,
        });
        Ok(id)
    }

    fn next_event(&self) -> JobEvent {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(event) = events.pop_front() {
                return event;
            }
            self.watch(&mut events);
        }
    }

    fn wake(&self) {
        let _ = (&self.wake).write_all(b"w");
    }

    fn cancel(&self, job: JobId) {
        if let Some(running) = self.jobs().running.iter().find(|r| r.id == job && r.ended.is_none()) {
            terminate_group(running.group);
        }
    }

    fn cancel_all(&self) {
        let mut jobs = self.jobs();
        jobs.cancelled = true;
        for running in jobs.running.iter().filter(|r| r.ended.is_none()) {
            terminate_group(running.group);
        }
    }
}

fn terminate_group(group: i32) {
    group::signal(group, libc::SIGTERM);
}

/// What a command prints, passed on line by line as it comes and kept in
/// its log (created with the first line).
struct Printed {
    path: PathBuf,
    log: Option<File>,
    /// The start of a line not yet ended.
    pending: Vec<u8>,
}

impl Printed {
    fn new(path: PathBuf) -> Printed {
        Printed {
            path,
            log: None,
            pending: Vec::new(),
        }
    }

    /// Reads what the pipe holds (it is ready) and passes on every line it
    /// completes; false at the end of the output.
    fn read_from(&mut self, id: JobId, pipe: &mut io::PipeReader, events: &mut VecDeque<JobEvent>) -> io::Result<bool> {
        let mut chunk = [0u8; 8192];
        let n = match pipe.read(&mut chunk) {
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(error) => return Err(error),
        };
        self.pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.pass_on(id, &line, events);
        }
        Ok(n > 0)
    }

    /// Passes on a last line that did not end with a newline.
    fn finish(&mut self, id: JobId, events: &mut VecDeque<JobEvent>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.pass_on(id, &line, events);
        }
    }

    fn pass_on(&mut self, id: JobId, line: &[u8], events: &mut VecDeque<JobEvent>) {
        if self.log.is_none() {
            self.log = File::create(&self.path).ok();
        }
        if let Some(log) = self.log.as_mut() {
            let _ = log.write_all(line);
        }
        let text = String::from_utf8_lossy(line);
        events.push_back(JobEvent::Output(id, text.trim_end_matches(['\n', '\r']).to_string()));
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

/// Makes writes to `fd` fail rather than wait.
#[allow(unsafe_code)]
fn non_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL reads and sets the flags of an
    // open descriptor; it touches no memory of ours.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An epoll set: descriptors watched for input (or their end), each with
/// a token.
struct Epoll(OwnedFd);

impl Epoll {
    #[allow(unsafe_code)]
    fn new() -> io::Result<Epoll> {
        // SAFETY: epoll_create1 takes flags and returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just opened and belongs to nothing else.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Watches `fd` (level-triggered) under `token`.
    #[allow(unsafe_code)]
    fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: epoll_ctl reads the event we pass; both descriptors are open.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching `fd`.
    #[allow(unsafe_code)]
    fn remove(&self, fd: RawFd) -> io::Result<()> {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed).
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tokens of the descriptors ready now, waiting for one (or until
    /// `deadline`).
    #[allow(unsafe_code)]
    fn wait(&self, deadline: Option<Instant>) -> io::Result<Vec<u64>> {
        let mut ready = [libc::epoll_event { events: 0, u64: 0 }; 64];
        loop {
            let timeout = deadline.map_or(-1, |d| {
                d.saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32
            });
            // SAFETY: epoll_wait writes at most `len` events into the array.
            let n = unsafe { libc::epoll_wait(self.0.as_raw_fd(), ready.as_mut_ptr(), ready.len() as i32, timeout) };
            if n >= 0 {
                return Ok(ready[..n as usize].iter().map(|event| event.u64).collect());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(dir: &std::path::Path, name: &str, cmd: &str) -> Job {
        Job {
            stage: name.into(),
            cmd: cmd.into(),
            dir: dir.to_path_buf(),
            env: Vec::new(),
            outs: Vec::new(),
            log: dir.join(format!("{name}.log")),
            resources: crate::manifest::Resources::default(),
        }
    }

    /// Every event until `id` ends: the lines it printed and how it ended
    /// (events of other jobs are kept in `others`).
    fn follow(executor: &LocalExecutor, id: JobId, others: &mut Vec<JobEvent>) -> (Vec<String>, JobEnd) {
        let mut lines = Vec::new();
        loop {
            match executor.next_event() {
                JobEvent::Output(job, line) if job == id => lines.push(line),
                JobEvent::Ended(job, end) if job == id => return (lines, end),
                other => others.push(other),
            }
        }
    }

    #[test]
    fn exit_codes_signals_and_output_are_reported_as_they_happen() {
        let dir = tempfile::tempdir().unwrap();
        let executor = LocalExecutor::new().unwrap();
        let mut others = Vec::new();
        let ok = executor
            .submit(job(dir.path(), "ok", "echo a; echo b >&2; printf c"))
            .unwrap();
        let (lines, end) = follow(&executor, ok, &mut others);
        assert_eq!(lines, ["a", "b", "c"]);
        assert!(end.success());
        assert_eq!(std::fs::read_to_string(dir.path().join("ok.log")).unwrap(), "a\nb\nc");

        let failed = executor.submit(job(dir.path(), "failed", "exit 3")).unwrap();
        let (lines, end) = follow(&executor, failed, &mut others);
        assert_eq!((lines.len(), &end), (0, &JobEnd::Exited(3)));
        assert!(!end.success());
        assert!(
            !dir.path().join("failed.log").exists(),
            "a silent command leaves no log"
        );

        let killed = executor.submit(job(dir.path(), "killed", "kill -9 $$")).unwrap();
        assert_eq!(
            follow(&executor, killed, &mut others).1,
            JobEnd::Signalled(libc::SIGKILL)
        );
        assert!(others.is_empty(), "{others:?}");
    }

    #[test]
    fn cancel_ends_one_job_and_cancel_all_ends_the_rest_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let executor = LocalExecutor::new().unwrap();
        let first = executor.submit(job(dir.path(), "first", "sleep 60")).unwrap();
        let second = executor.submit(job(dir.path(), "second", "sleep 60")).unwrap();
        executor.cancel(first);
        let mut others = Vec::new();
        assert_eq!(
            follow(&executor, first, &mut others).1,
            JobEnd::Signalled(libc::SIGTERM)
        );
        assert!(others.is_empty(), "the second job still runs: {others:?}");
        executor.cancel_all();
        assert_eq!(
            follow(&executor, second, &mut others).1,
            JobEnd::Signalled(libc::SIGTERM)
        );
        assert!(executor.submit(job(dir.path(), "third", "true")).is_err());
    }

    #[test]
    fn wake_returns_control_to_a_waiting_caller_and_never_blocks() {
        let executor = LocalExecutor::new().unwrap();
        // Far more wake-ups than a pipe holds, with nobody reading them.
        for _ in 0..200_000 {
            executor.wake();
        }
        assert!(matches!(executor.next_event(), JobEvent::Woken));
    }

    #[test]
    fn many_jobs_at_once_each_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let executor = LocalExecutor::new().unwrap();
        let ids: Vec<JobId> = (0..40)
            .map(|i| {
                executor
                    .submit(job(dir.path(), &format!("j{i}"), &format!("echo {i}; exit {}", i % 3)))
                    .unwrap()
            })
            .collect();
        let mut ended = std::collections::BTreeMap::new();
        let mut printed = std::collections::BTreeMap::new();
        while ended.len() < ids.len() {
            match executor.next_event() {
                JobEvent::Output(id, line) => assert!(printed.insert(id, line).is_none()),
                JobEvent::Ended(id, end) => assert!(ended.insert(id, end).is_none(), "{id:?} ended twice"),
                JobEvent::Woken => panic!("nobody woke the executor"),
            }
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(ended[id], JobEnd::Exited(i as i32 % 3));
            assert_eq!(printed[id], i.to_string());
        }
    }
}
