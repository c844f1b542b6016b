//! The durable side of ingest: one writer thread appends records to the
//! server's own log files and acknowledges a request only after the fsync
//! that covers its record.
//!
//! - **One fsync per group commit**: every session goes to the same log
//!   (`ingest-<nanoseconds>.jsonl`, rotated at [`ROTATE_AT`]), so a batch
//!   costs one write and one `fdatasync` however many sessions it touches
//!   (sanitize groups records by session anyway).
//! - **Overlapping syncs**: up to [`SYNCERS`] syncs run at once. The writer
//!   waits for a free syncer, then takes everything waiting as one batch,
//!   writes it and hands it over; a batch is acknowledged when its own
//!   `fdatasync` returns, which covers everything written before it. While
//!   every syncer is busy, requests pile up into the next batch, so on a disk
//!   whose fsync takes milliseconds batches stay large and two syncs overlap
//!   instead of queueing.
//! - **Idempotent**: every stored `snapshotId` is indexed (rebuilt from the
//!   logs at start-up), so a retried snapshot is acknowledged without a
//!   second copy, across restarts too; a retry of a record whose batch is
//!   still syncing gets that batch's outcome, never an early 200. A failed
//!   sync fails its batch (and forgets its ids), and the log is not written
//!   to again.
//! - **No torn records, and only our own files repaired**: a record is one
//!   line of one `write`; at start-up a log of the server's whose last line
//!   lacks its newline (a crash mid-write, never acknowledged) is cut back to
//!   its last complete line. Files of any other name in the directory are
//!   neither read nor changed.
//! - **File names never come from request data.**

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

/// A log is closed and a new one started past this size.
pub const ROTATE_AT: u64 = 64 * 1024 * 1024;

/// Syncs in flight at once.
pub const SYNCERS: usize = 2;

/// What became of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Written and fsync'd.
    New,
    /// The same `snapshotId` was already stored.
    Duplicate,
}

/// A record to store and where to answer.
pub struct Job {
    /// The snapshot id.
    pub id: String,
    /// The record as one JSON line (no newline).
    pub line: String,
    /// The acknowledgement, sent after the fsync.
    pub done: oneshot::Sender<io::Result<Stored>>,
}

/// Whether `name` is one of the server's logs.
pub fn is_log(name: &str) -> bool {
    name.strip_prefix("ingest-")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()))
}

/// Repairs torn tails of the server's logs and returns every stored snapshot id.
pub fn recover(dir: &Path) -> io::Result<HashSet<String>> {
    std::fs::create_dir_all(dir)?;
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !is_log(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let bytes = std::fs::read(&path)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            let file = OpenOptions::new().write(true).open(&path)?;
            file.set_len(complete as u64)?;
            file.sync_all()?;
        }
        for line in bytes[..complete].split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(id) = value.get("snapshotId").and_then(|v| v.as_str())
            {
                ids.insert(id.to_string());
            }
        }
    }
    Ok(ids)
}

/// The open log: where it is, the writer's handle, its size, and whether a
/// sync of it failed (then no more is written to it).
struct Log {
    path: PathBuf,
    file: File,
    size: u64,
    failed: Arc<AtomicBool>,
}

/// A new log in `dir`, its directory entry made durable.
fn new_log(dir: &Path) -> io::Result<Log> {
    loop {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("ingest-{stamp:024}.jsonl"));
        match OpenOptions::new().create_new(true).append(true).open(&path) {
            Ok(file) => {
                File::open(dir)?.sync_all()?;
                return Ok(Log {
                    path,
                    file,
                    size: 0,
                    failed: Arc::new(AtomicBool::new(false)),
                });
            }
            // Two logs in one nanosecond: take the next stamp.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        }
    }
}

/// What the writer and the syncers share: the stored ids, and for each id
/// whose batch is not yet synced, the retries waiting for its outcome.
#[derive(Default)]
struct Index {
    ids: HashSet<String>,
    in_flight: HashMap<String, Vec<oneshot::Sender<io::Result<Stored>>>>,
}

/// A written batch waiting for its sync.
struct Written {
    /// A description of the log opened before the batch was written, so
    /// that a writeback error of the batch's pages is reported to this sync
    /// (Linux reports such an error once per open file description).
    file: File,
    /// Set when the sync fails: the writer starts a new log.
    failed: Arc<AtomicBool>,
    /// The jobs whose records the batch wrote.
    jobs: Vec<Job>,
}

/// Syncs written batches and answers their jobs, and the retries that
/// arrived for them meanwhile; on a failed sync, the ids are forgotten so
/// that a retry stores them again.
fn sync(written: &Mutex<mpsc::Receiver<Written>>, index: &Mutex<Index>, free: &mpsc::Sender<()>) {
    loop {
        let next = written.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Written { file, failed, jobs }) = next else {
            return;
        };
        let synced = file.sync_data();
        if synced.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        for job in jobs {
            let retries = index.in_flight.remove(&job.id).unwrap_or_default();
            if synced.is_err() {
                index.ids.remove(&job.id);
            }
            let answer = |duplicate: bool| match &synced {
                Ok(()) if duplicate => Ok(Stored::Duplicate),
                Ok(()) => Ok(Stored::New),
                Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
            };
            let _ = job.done.send(answer(false));
            for retry in retries {
                let _ = retry.send(answer(true));
            }
        }
        drop(index);
        let _ = free.send(());
    }
}

/// Runs the writer until every sender is gone; returns when all is flushed.
pub fn run(dir: PathBuf, ids: HashSet<String>, jobs: mpsc::Receiver<Job>) {
    let index = Arc::new(Mutex::new(Index {
        ids,
        in_flight: HashMap::new(),
    }));
    let (to_sync, written) = mpsc::channel::<Written>();
    let written = Arc::new(Mutex::new(written));
    let (free, slots) = mpsc::channel::<()>();
    let syncers: Vec<_> = (0..SYNCERS)
        .map(|_| {
            let (written, index, free) = (written.clone(), index.clone(), free.clone());
            let _ = free.send(());
            std::thread::spawn(move || sync(&written, &index, &free))
        })
        .collect();
    let mut log: Option<Log> = None;
    while let Ok(first) = jobs.recv() {
        // Wait for a free syncer; meanwhile requests pile up behind `first`.
        let _ = slots.recv();
        // Group commit: everything waiting shares one write and one fsync.
        let mut batch = vec![first];
        while batch.len() < 4096
            && let Ok(next) = jobs.try_recv()
        {
            batch.push(next);
        }
        // A record already stored is answered at once; one whose batch is
        // still syncing is answered with that batch's outcome.
        let mut buffer = Vec::new();
        let mut fresh = Vec::with_capacity(batch.len());
        {
            let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
            for job in batch {
                if let Some(retries) = index.in_flight.get_mut(&job.id) {
                    retries.push(job.done);
                } else if index.ids.contains(&job.id) {
                    let _ = job.done.send(Ok(Stored::Duplicate));
                } else {
                    index.ids.insert(job.id.clone());
                    index.in_flight.insert(job.id.clone(), Vec::new());
                    buffer.extend_from_slice(job.line.as_bytes());
                    buffer.push(b'\n');
                    fresh.push(job);
                }
            }
        }
        if fresh.is_empty() {
            let _ = free.send(());
            continue;
        }
        let written = (|| {
            if log
                .as_ref()
                .is_none_or(|l| l.size >= ROTATE_AT || l.failed.load(Ordering::SeqCst))
            {
                log = Some(new_log(&dir)?);
            }
            let open = log.as_mut().expect("opened above");
            let sync_file = File::open(&open.path)?;
            open.file.write_all(&buffer)?;
            open.size += buffer.len() as u64;
            Ok::<_, io::Error>((sync_file, open.failed.clone()))
        })();
        match written {
            Ok((file, failed)) => {
                if to_sync
                    .send(Written {
                        file,
                        failed,
                        jobs: fresh,
                    })
                    .is_err()
                {
                    return;
                }
            }
            Err(error) => {
                // Not durable: forget the ids so a retry stores them, and
                // start a new log rather than append after a partial write.
                log = None;
                let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
                for job in fresh {
                    index.ids.remove(&job.id);
                    let failed = || Err(io::Error::new(error.kind(), error.to_string()));
                    for retry in index.in_flight.remove(&job.id).unwrap_or_default() {
                        let _ = retry.send(failed());
                    }
                    let _ = job.done.send(failed());
                }
                drop(index);
                // The syncer was not used: it is free again.
                let _ = free.send(());
            }
        }
    }
    drop(to_sync);
    for syncer in syncers {
        let _ = syncer.join();
    }
}
