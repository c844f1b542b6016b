//! [`SlurmExecutor`]: stage jobs handed to a Slurm cluster.
//!
//! Each job is one `sbatch --parsable` submission, named
//! `fabric.WORKSPACE.STAGE` and marked with the workspace's root in its
//! comment (how a later run finds jobs a killed `fabric` left behind), its
//! output in the stage's log under `.fabric/logs/`. One thread polls the
//! cluster for every job in flight with a single `squeue` call per poll
//! (quickly after a change, backing off to every [`SLOWEST_POLL`] while
//! nothing changes); a job that left the running states is asked once with
//! `scontrol` how it ended. Lines a job writes to its log are passed on as
//! they appear. Cancelling is `scancel`.
//!
//! Stages that stay local (`executor = "local"`) run on a [`LocalExecutor`]
//! inside this one; its event wait is the one place the caller blocks, and
//! the polling thread wakes it when a Slurm job has news.
//!
//! Outs must land on a filesystem the cluster's nodes share with this
//! machine (the workspace): the runner checks and hashes them after the job
//! exactly as after a local command.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Executor, Job, JobEnd, JobEvent, JobId, LocalExecutor};
use crate::manifest::{Resources, SlurmSettings};

/// Set in the [`JobId`] of a Slurm job (the Slurm job id is the rest), so
/// it never collides with a local job's.
const SLURM: u64 = 1 << 62;
/// The first poll after a change.
const QUICKEST_POLL: Duration = Duration::from_millis(100);
/// The poll interval while nothing changes.
pub const SLOWEST_POLL: Duration = Duration::from_secs(2);
/// How long a run waits for jobs an earlier run left to end once cancelled.
const LEFTOVER_WAIT: Duration = Duration::from_secs(120);

/// Job states after which a Slurm job does not run again.
const ENDED: [&str; 11] = [
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "REVOKED",
    "SPECIAL_EXIT",
    "TIMEOUT",
];

/// Runs jobs on a Slurm cluster (and the stages that stay local on a
/// [`LocalExecutor`]).
pub struct SlurmExecutor {
    settings: SlurmSettings,
    /// `fabric.WORKSPACE.`: what every job name starts with.
    name_prefix: String,
    /// The comment marking this workspace's jobs.
    comment: String,
    /// Stages whose jobs run locally.
    local_stages: BTreeSet<String>,
    local: Arc<LocalExecutor>,
    shared: Arc<Shared>,
    poller: Option<JoinHandle<()>>,
}

/// What the caller and the polling thread share.
struct Shared {
    tracked: Mutex<Tracked>,
    /// Signalled when jobs are submitted or cancelled, and on shutdown.
    changed: Condvar,
    stop: AtomicBool,
}

#[derive(Default)]
struct Tracked {
    /// Jobs in flight, by Slurm job id.
    in_flight: BTreeMap<u64, InFlight>,
    /// Events not yet returned.
    events: VecDeque<JobEvent>,
    /// Set by `cancel_all`: nothing is submitted any more.
    cancelled: bool,
}

struct InFlight {
    /// The job's log, and how much of it was passed on.
    log: PathBuf,
    read: u64,
    /// A line begun and not yet ended.
    partial: Vec<u8>,
    /// The line in which slurmstepd said it killed the job for its memory.
    memory_kill: Option<String>,
}

impl SlurmExecutor {
    /// An executor submitting to the cluster the Slurm commands on `PATH`
    /// talk to, for the workspace `name` at `root`; stages in
    /// `local_stages` run on `local`. Jobs an earlier run left (found by
    /// their comment) are cancelled first, and waited for: an out they may
    /// still write is never trusted. Returns the executor and how many
    /// such jobs there were.
    pub fn start(
        root: &Path,
        name: &str,
        settings: SlurmSettings,
        local_stages: BTreeSet<String>,
        local: LocalExecutor,
    ) -> io::Result<(SlurmExecutor, usize)> {
        let comment = format!("fabric:{}", root.display());
        let leftovers = cancel_leftovers(&comment)?;
        let shared = Arc::new(Shared {
            tracked: Mutex::default(),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let local = Arc::new(local);
        let poller = {
            let (shared, local) = (shared.clone(), local.clone());
            std::thread::Builder::new()
                .name("slurm-poll".into())
                .spawn(move || poll(&shared, &local))?
        };
        Ok((
            SlurmExecutor {
                settings,
                name_prefix: format!("fabric.{name}."),
                comment,
                local_stages,
                local,
                shared,
                poller: Some(poller),
            },
            leftovers,
        ))
    }

    /// The `sbatch` arguments for `job`.
    fn sbatch_args(&self, job: &Job) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}{}", self.name_prefix, job.stage),
            format!("--comment={}", self.comment),
            format!("--chdir={}", job.dir.display()),
            format!("--output={}", job.log.display()),
            "--open-mode=truncate".to_string(),
            // A job lost with its node ends the stage with that reason
            // rather than running again later behind the run's back.
            "--no-requeue".to_string(),
        ];
        let partition = job.resources.partition.as_ref().or(self.settings.partition.as_ref());
        args.extend(partition.map(|p| format!("--partition={p}")));
        args.extend(self.settings.account.as_ref().map(|a| format!("--account={a}")));
        args.extend(resource_options(&job.resources));
        args.extend(self.settings.sbatch.iter().cloned());
        args.push(format!("--wrap={}", job.cmd));
        args
    }

    fn tracked(&self) -> MutexGuard<'_, Tracked> {
        self.shared.tracked.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `sbatch` options asking for `resources`.
pub fn resource_options(resources: &Resources) -> Vec<String> {
    let mut options = Vec::new();
    options.extend(resources.cpus.map(|n| format!("--cpus-per-task={n}")));
    options.extend(resources.memory_mib.map(|mib| format!("--mem={mib}M")));
    options.extend(resources.gpus.map(|n| format!("--gpus={n}")));
    if let Some(seconds) = resources.time_seconds {
        let (days, rest) = (seconds / 86_400, seconds % 86_400);
        let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
        options.push(if days > 0 {
            format!("--time={days}-{clock}")
        } else {
            format!("--time={clock}")
        });
    }
    options
}

impl Executor for SlurmExecutor {
    fn submit(&self, job: Job) -> io::Result<JobId> {
        if self.local_stages.contains(&job.stage) {
            return self.local.submit(job);
        }
        if self.tracked().cancelled {
            return Err(io::Error::other("interrupted"));
        }
        let output = slurm_command("sbatch", &self.sbatch_args(&job))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let id: u64 = text
            .trim()
            .split(';')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| io::Error::other(format!("sbatch answered `{}`, not a job id", text.trim())))?;
        let mut tracked = self.tracked();
        if tracked.cancelled {
            let _ = slurm_command("scancel", &[id.to_string()]);
        }
        tracked.in_flight.insert(
            id,
            InFlight {
                log: job.log,
                read: 0,
                partial: Vec::new(),
                memory_kill: None,
            },
        );
        self.shared.changed.notify_all();
        Ok(JobId(SLURM | id))
    }

    fn next_event(&self) -> JobEvent {
        if let Some(event) = self.tracked().events.pop_front() {
            return event;
        }
        match self.local.next_event() {
            // Maybe the polling thread's news: returned first.
            JobEvent::Woken => self.tracked().events.pop_front().unwrap_or(JobEvent::Woken),
            event => event,
        }
    }

    fn wake(&self) {
        self.local.wake();
    }

    fn cancel(&self, job: JobId) {
        if job.0 & SLURM == 0 {
            return self.local.cancel(job);
        }
        let _ = slurm_command("scancel", &[(job.0 & !SLURM).to_string()]);
        self.shared.changed.notify_all();
    }

    fn cancel_all(&self) {
        let ids: Vec<String> = {
            let mut tracked = self.tracked();
            tracked.cancelled = true;
            tracked.in_flight.keys().map(u64::to_string).collect()
        };
        if !ids.is_empty() {
            let _ = slurm_command("scancel", &ids);
        }
        self.local.cancel_all();
        self.shared.changed.notify_all();
    }

    fn describe(&self, job: JobId) -> Option<String> {
        (job.0 & SLURM != 0).then(|| format!("Slurm job {}", job.0 & !SLURM))
    }

    fn is_remote(&self, stage: &str) -> bool {
        !self.local_stages.contains(stage)
    }
}

impl Drop for SlurmExecutor {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(poller) = self.poller.take() {
            let _ = poller.join();
        }
    }
}

/// The polling thread: asks the cluster about every job in flight, turns
/// what changed into events, and wakes the caller.
fn poll(shared: &Shared, local: &LocalExecutor) {
    let mut interval = QUICKEST_POLL;
    let mut tracked = shared.tracked.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        tracked = if tracked.in_flight.is_empty() {
            interval = QUICKEST_POLL;
            shared.changed.wait(tracked).unwrap_or_else(PoisonError::into_inner)
        } else {
            let (guard, _) = shared
                .changed
                .wait_timeout(tracked, interval)
                .unwrap_or_else(PoisonError::into_inner);
            guard
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        if tracked.in_flight.is_empty() {
            continue;
        }
        let ids: Vec<u64> = tracked.in_flight.keys().copied().collect();
        // The cluster is asked without holding the lock: submissions go on.
        drop(tracked);
        let states = job_states(&ids);
        tracked = shared.tracked.lock().unwrap_or_else(PoisonError::into_inner);
        let before = tracked.events.len();
        for id in ids {
            let state = match &states {
                Ok(states) => states.get(&id).map(String::as_str),
                // squeue failed: ask again next time.
                Err(_) => Some("UNKNOWN"),
            };
            let ended = match state {
                Some(state) if ENDED.contains(&state) => true,
                Some(_) => false,
                None => true,
            };
            let Some(job) = tracked.in_flight.get_mut(&id) else {
                continue;
            };
            let lines = read_new_lines(job, ended);
            if let Some(line) = lines.iter().find(|line| is_memory_kill(line)) {
                job.memory_kill.get_or_insert_with(|| line.clone());
            }
            tracked
                .events
                .extend(lines.into_iter().map(|line| JobEvent::Output(JobId(SLURM | id), line)));
            if ended && let Some(job) = tracked.in_flight.remove(&id) {
                tracked
                    .events
                    .push_back(JobEvent::Ended(JobId(SLURM | id), job_end(id, &job)));
            }
        }
        if tracked.events.len() > before {
            interval = QUICKEST_POLL;
            local.wake();
        } else {
            interval = (interval * 2).min(SLOWEST_POLL);
        }
    }
}

/// Runs a Slurm command; its output, or an error saying what it printed.
fn slurm_command(program: &str, args: &[String]) -> io::Result<Output> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => io::Error::other(format!(
                "`{program}` is not on PATH: the Slurm executor needs Slurm's client commands (Debian: slurm-client)"
            )),
            _ => io::Error::other(format!("cannot run `{program}`: {error}")),
        })?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "`{program}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output)
}

/// The state of each of `ids` Slurm still knows (one `squeue` call); a job
/// missing from the answer has left the queue.
fn job_states(ids: &[u64]) -> io::Result<BTreeMap<u64, String>> {
    let list = ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let args = [
        "--noheader".to_string(),
        "--states=all".to_string(),
        format!("--jobs={list}"),
        "--format=%i %T".to_string(),
    ];
    let output = match slurm_command("squeue", &args) {
        Ok(output) => output,
        // squeue refuses a list naming only jobs it has forgotten.
        Err(error) if error.to_string().contains("Invalid job id") => return Ok(BTreeMap::new()),
        Err(error) => return Err(error),
    };
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (id, state) = line.trim().split_once(' ')?;
            Some((id.parse().ok()?, state.trim().to_string()))
        })
        .collect())
}

/// Whether `line` of a job's log is slurmstepd saying it killed the job for
/// using more memory than it asked for. That is how a cluster enforcing
/// memory by sampling (`JobAcctGatherParams=OverMemoryKill`, no cgroups)
/// tells it: the job then ends `FAILED`, not `OUT_OF_MEMORY`.
fn is_memory_kill(line: &str) -> bool {
    line.starts_with("slurmstepd") && line.to_ascii_lowercase().contains("exceeded") && line.contains("memory limit")
}

/// How `job` (Slurm job `id`) ended, asked of `scontrol` once it left the
/// running states.
fn job_end(id: u64, job: &InFlight) -> JobEnd {
    match slurm_command(
        "scontrol",
        &["--oneliner".into(), "show".into(), "job".into(), id.to_string()],
    ) {
        Ok(output) => end_shown(
            id,
            &String::from_utf8_lossy(&output.stdout),
            job.memory_kill.as_deref(),
            job.log.exists(),
        ),
        Err(_) => JobEnd::Lost(format!("Slurm job {id} vanished from the queue")),
    }
}

/// How job `id` ended, from what `scontrol --oneliner show job` says of it,
/// slurmstepd's `memory_kill` line (if any) and whether the job's log was
/// written at all.
fn end_shown(id: u64, shown: &str, memory_kill: Option<&str>, log_written: bool) -> JobEnd {
    let field = |name: &str| {
        shown
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    };
    let (code, signal) = field("ExitCode")
        .split_once(':')
        .map(|(c, s)| (c.parse().unwrap_or(0), s.parse().unwrap_or(0)))
        .unwrap_or((0, 0));
    let state = field("JobState");
    if state == "OUT_OF_MEMORY" || (state != "COMPLETED" && memory_kill.is_some()) {
        let said = memory_kill.map(|line| format!(" ({line})")).unwrap_or_default();
        return JobEnd::Lost(format!(
            "Slurm job {id} ran out of memory{said}; raise `memory` in the stage's resources"
        ));
    }
    match state.as_str() {
        "COMPLETED" => JobEnd::Exited(0),
        // slurmstepd could not even open the job's log: the node does not
        // see it (a job killed while running fails the same way, with its log).
        "FAILED" if field("Reason") == "JobLaunchFailure" && !log_written => {
            JobEnd::Lost(format!("Slurm job {id} could not be started on {}", field("NodeList")))
        }
        "FAILED" if signal != 0 => JobEnd::Signalled(signal),
        "FAILED" => JobEnd::Exited(code),
        "TIMEOUT" => JobEnd::Lost(format!(
            "Slurm job {id} reached its time limit ({}); raise `time` in the stage's resources",
            field("TimeLimit")
        )),
        "NODE_FAIL" | "BOOT_FAIL" => {
            JobEnd::Lost(format!("Slurm job {id} was lost with its node ({})", field("NodeList")))
        }
        "CANCELLED" => JobEnd::Lost(format!("Slurm job {id} was cancelled")),
        "PREEMPTED" => JobEnd::Lost(format!("Slurm job {id} was preempted")),
        "" => JobEnd::Lost(format!("Slurm job {id} vanished from the queue")),
        state => JobEnd::Lost(format!("Slurm job {id} ended {state} ({})", field("Reason"))),
    }
}

/// The complete lines `job` wrote to its log since the last look (and the
/// unfinished last one once it `ended`).
fn read_new_lines(job: &mut InFlight, ended: bool) -> Vec<String> {
    let mut bytes = Vec::new();
    if let Ok(mut file) = std::fs::File::open(&job.log)
        && file.seek(io::SeekFrom::Start(job.read)).is_ok()
        && let Ok(n) = file.read_to_end(&mut bytes)
    {
        job.read += n as u64;
    }
    job.partial.extend_from_slice(&bytes);
    let mut lines = Vec::new();
    while let Some(end) = job.partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = job.partial.drain(..=end).collect();
        lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
    }
    if ended && !job.partial.is_empty() {
        lines.push(String::from_utf8_lossy(&std::mem::take(&mut job.partial)).into_owned());
    }
    lines
}

/// Cancels the jobs an earlier run of this workspace left in the queue
/// (the user's jobs marked with `comment`) and waits until none is
/// running; how many.
fn cancel_leftovers(comment: &str) -> io::Result<usize> {
    let ours = || -> io::Result<Vec<String>> {
        let output = slurm_command("squeue", &["--noheader".into(), "--me".into(), "--format=%i %k".into()])?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| {
                let (id, rest) = line.trim().split_once(' ')?;
                (rest.trim() == comment).then(|| id.to_string())
            })
            .collect())
    };
    let found = ours()?;
    if found.is_empty() {
        return Ok(0);
    }
    slurm_command("scancel", &found)?;
    let deadline = Instant::now() + LEFTOVER_WAIT;
    let mut interval = QUICKEST_POLL;
    while !ours()?.is_empty() {
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "jobs {} of an earlier run of this workspace are still in the queue after scancel; wait for them to end (squeue --jobs={})",
                found.join(", "),
                found.join(",")
            )));
        }
        std::thread::sleep(interval);
        interval = (interval * 2).min(SLOWEST_POLL);
    }
    Ok(found.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `scontrol --oneliner show job` as Slurm 22.05 prints it, cut to
    /// the fields read, with `state`, `reason` and `code`.
    fn shown(state: &str, reason: &str, code: &str) -> String {
        format!(
            "JobId=7 JobName=fabric.w.s JobState={state} Reason={reason} Dependency=(null) ExitCode={code} \
             RunTime=00:01:05 TimeLimit=00:01:00 NodeList=node3 BatchHost=node3"
        )
    }

    #[test]
    fn every_way_a_job_ends_has_its_reason() {
        let cases = [
            ("COMPLETED", "None", "0:0", "command exited with status 0"),
            ("FAILED", "NonZeroExitCode", "3:0", "command exited with status 3"),
            ("FAILED", "NonZeroExitCode", "0:9", "command was killed by a signal (9)"),
            (
                "FAILED",
                "JobLaunchFailure",
                "0:9",
                "command was killed by a signal (9)",
            ),
            (
                "FAILED",
                "JobLaunchFailure",
                "0:53",
                "Slurm job 7 could not be started on node3",
            ),
            (
                "TIMEOUT",
                "TimeLimit",
                "0:15",
                "Slurm job 7 reached its time limit (00:01:00)",
            ),
            ("OUT_OF_MEMORY", "OutOfMemory", "0:125", "Slurm job 7 ran out of memory"),
            (
                "NODE_FAIL",
                "NodeDown",
                "0:0",
                "Slurm job 7 was lost with its node (node3)",
            ),
            ("CANCELLED", "None", "0:15", "Slurm job 7 was cancelled"),
            ("PREEMPTED", "None", "0:15", "Slurm job 7 was preempted"),
            ("DEADLINE", "DeadLine", "0:0", "Slurm job 7 ended DEADLINE (DeadLine)"),
        ];
        for (state, reason, code, said) in cases {
            let end = end_shown(7, &shown(state, reason, code), None, code != "0:53");
            assert!(end.to_string().contains(said), "{state}: {end}");
            assert_eq!(end.success(), state == "COMPLETED", "{state}");
        }
        assert!(
            end_shown(7, "", None, false)
                .to_string()
                .contains("vanished from the queue")
        );
    }

    #[test]
    fn a_job_slurmstepd_killed_for_its_memory_ran_out_of_memory() {
        let lines = [
            "slurmstepd-node3: error: StepId=7.batch exceeded memory limit (302858240 > 52428800), being killed",
            "slurmstepd-node3: error: Exceeded job memory limit",
        ];
        for line in lines {
            assert!(is_memory_kill(line), "{line}");
            let end = end_shown(7, &shown("FAILED", "JobLaunchFailure", "0:9"), Some(line), true);
            assert!(end.to_string().contains("Slurm job 7 ran out of memory ("), "{end}");
            assert!(end.to_string().contains(line), "{end}");
        }
        for line in [
            "memory limit exceeded? no",
            "slurmstepd-node3: error: *** JOB 7 CANCELLED ***",
        ] {
            assert!(!is_memory_kill(line), "{line}");
        }
    }

    #[test]
    fn resources_become_sbatch_options() {
        let resources = Resources {
            cpus: Some(4),
            memory_mib: Some(16 * 1024),
            gpus: Some(1),
            time_seconds: Some(86_400 + 2 * 3600 + 5),
            partition: Some("gpu".into()),
        };
        assert_eq!(
            resource_options(&resources),
            ["--cpus-per-task=4", "--mem=16384M", "--gpus=1", "--time=1-2:00:05"]
        );
        assert!(resource_options(&Resources::default()).is_empty());
    }
}
