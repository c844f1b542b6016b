//! The durable side of ingest: one writer thread appends records to
//! per-session JSONL files and fsyncs them in groups; a request is
//! acknowledged only after the fsync that covers its record.
//!
//! - **Idempotent**: every stored `snapshotId` is indexed (rebuilt from the
//!   files at start-up), so a retried snapshot is acknowledged without a
//!   second copy, across restarts too.
//! - **No torn records**: a record is one `write` of its line; at start-up a
//!   file whose last line lacks its newline (a crash mid-write, never
//!   acknowledged) is cut back to its last complete line.
//! - **File names never come from request data unchecked**: a `sessionId`
//!   of 1–64 `[A-Za-z0-9_-]` names its file; anything else is hashed.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use tokio::sync::oneshot;

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
    /// The session id (names the file).
    pub session: String,
    /// The record as one JSON line (no newline).
    pub line: String,
    /// The acknowledgement, sent after the fsync.
    pub done: oneshot::Sender<io::Result<Stored>>,
}

/// The file a session's records go to.
pub fn file_name(session: &str) -> String {
    let plain = !session.is_empty()
        && session.len() <= 64
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{session}.jsonl")
    } else {
        format!("session-{}.jsonl", &blake3::hash(session.as_bytes()).to_hex()[..16])
    }
}

/// Repairs torn tails and returns every stored snapshot id.
pub fn recover(dir: &Path) -> io::Result<HashSet<String>> {
    std::fs::create_dir_all(dir)?;
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "jsonl") {
            continue;
        }
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

/// Runs the writer until every sender is gone; returns when all is flushed.
pub fn run(dir: PathBuf, mut ids: HashSet<String>, jobs: mpsc::Receiver<Job>) {
    let mut files: HashMap<String, File> = HashMap::new();
    while let Ok(first) = jobs.recv() {
        // Group commit: everything already waiting shares one fsync per file.
        let mut batch = vec![first];
        while batch.len() < 4096
            && let Ok(next) = jobs.try_recv()
        {
            batch.push(next);
        }
        let mut results: Vec<io::Result<Stored>> = Vec::with_capacity(batch.len());
        let mut touched: HashSet<String> = HashSet::new();
        let mut created = false;
        for job in &batch {
            if ids.contains(&job.id) {
                results.push(Ok(Stored::Duplicate));
                continue;
            }
            let name = file_name(&job.session);
            let result = (|| {
                if !files.contains_key(&name) {
                    created |= !dir.join(&name).exists();
                    let file = OpenOptions::new().create(true).append(true).open(dir.join(&name))?;
                    files.insert(name.clone(), file);
                }
                let file = files.get_mut(&name).expect("opened above");
                file.write_all(format!("{}\n", job.line).as_bytes())
            })();
            if result.is_ok() {
                ids.insert(job.id.clone());
                touched.insert(name);
            }
            results.push(result.map(|()| Stored::New));
        }
        let mut synced = Ok(());
        for name in &touched {
            if let Some(file) = files.get(name)
                && let Err(error) = file.sync_data()
            {
                synced = Err(error);
            }
        }
        // A new file's directory entry must be durable too.
        if created && let Err(error) = File::open(&dir).and_then(|d| d.sync_all()) {
            synced = Err(error);
        }
        if files.len() > 512 {
            files.clear();
        }
        for (job, result) in batch.into_iter().zip(results) {
            let result = match (&synced, result) {
                (Err(error), Ok(Stored::New)) => Err(io::Error::new(error.kind(), error.to_string())),
                (_, result) => result,
            };
            let _ = job.done.send(result);
        }
    }
}
