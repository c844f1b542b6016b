//! P4 and P7 of spec 06: sanitize throughput against merely parsing the same
//! bytes with serde_json, and peak memory of sanitize and dataset building
//! on a large input. Run with `cargo bench --bench data`; see benches/README.md.
//!
//! Environment: `BENCH_RECORDS` (default 200000) raw snapshots for P4,
//! `BENCH_BIG_GB` (default 2) gigabytes of raw snapshots for P7 (0 skips it),
//! `BENCH_RUNS` (default 3) runs per measurement (the median is reported).
#![allow(unsafe_code)] // wait4(2) for a child's own peak RSS

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use prime_brain::simulate::{SimulateOptions, simulate};

fn env(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The release binary, built by `cargo bench` beside this bench.
fn fabric() -> PathBuf {
    let bench = std::env::current_exe().expect("own path");
    let dir = bench.parent().and_then(Path::parent).expect("target/release");
    let path = dir.join("fabric");
    assert!(path.exists(), "build the binary first: cargo build --release");
    path
}

/// Runs a command and returns (wall time, the child's own peak RSS in MiB).
fn measure(command: &mut Command) -> (Duration, f64) {
    let start = Instant::now();
    // Reaped by wait4 below, which also reports the peak RSS.
    #[allow(clippy::zombie_processes)]
    let child = command.spawn().expect("runs");
    let mut status = 0;
    // SAFETY: wait4 fills the status and the rusage struct we pass, for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let elapsed = start.elapsed();
    assert!(
        pid > 0 && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{command:?} failed"
    );
    (elapsed, usage.ru_maxrss as f64 / 1024.0)
}

fn bytes_under(dir: &Path) -> u64 {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn main() {
    let runs = env("BENCH_RUNS", 3.0) as usize;
    let records = env("BENCH_RECORDS", 200_000.0) as usize;
    let big_gb = env("BENCH_BIG_GB", 2.0);
    let fabric = fabric();
    let work = tempfile::tempdir().expect("temp dir");
    let raw = work.path().join("raw");

    // P4: sanitize vs parsing the same bytes.
    let options = SimulateOptions {
        users: 50,
        sessions_per_user: records.div_ceil(50 * 400),
        snapshots_per_session: 400,
        ..SimulateOptions::default()
    };
    let summary = simulate(&options, &raw).expect("simulate");
    let bytes = bytes_under(&raw);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&raw).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let parse = median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                let mut parsed = 0usize;
                for file in &files {
                    let reader = std::io::BufReader::new(std::fs::File::open(file).unwrap());
                    for line in reader.lines() {
                        if serde_json::from_str::<serde_json::Value>(&line.unwrap()).is_ok() {
                            parsed += 1;
                        }
                    }
                }
                std::hint::black_box(parsed);
                start.elapsed()
            })
            .collect(),
    );
    let parse_parallel = median(
        (0..runs)
            .map(|_| {
                let start = Instant::now();
                let parsed: usize = files
                    .iter()
                    .map(|file| {
                        let text = std::fs::read_to_string(file).unwrap();
                        let lines: Vec<&str> = text.lines().collect();
                        lines
                            .par_iter()
                            .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_ok())
                            .count()
                    })
                    .sum();
                std::hint::black_box(parsed);
                start.elapsed()
            })
            .collect(),
    );
    let mut sanitize_rss: f64 = 0.0;
    let sanitize = median(
        (0..runs)
            .map(|n| {
                let out = work.path().join(format!("clean{n}"));
                let (elapsed, rss) = measure(
                    Command::new(&fabric)
                        .args(["sanitize", "--input-dir"])
                        .arg(&raw)
                        .arg("--output-dir")
                        .arg(&out)
                        .arg("--report")
                        .arg(work.path().join("report.json")),
                );
                sanitize_rss = sanitize_rss.max(rss);
                elapsed
            })
            .collect(),
    );
    let mb = bytes as f64 / 1e6;
    println!(
        "P4 sanitize: {} records, {mb:.0} MB, {} threads",
        summary.records,
        rayon::current_num_threads()
    );
    println!("| workload | reference | fabric | ratio (target) |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| P4 sanitize {} records | serde_json parse, 1 thread: {:.0} MB/s | sanitize {:.0} MB/s, peak RSS {sanitize_rss:.0} MiB | {:.2}× (≥ 0.5×) |",
        summary.records,
        mb / parse.as_secs_f64(),
        mb / sanitize.as_secs_f64(),
        parse.as_secs_f64() / sanitize.as_secs_f64()
    );
    println!(
        "| P4 (same data) | serde_json parse, {} threads: {:.0} MB/s | sanitize {:.0} MB/s | {:.2}× |",
        rayon::current_num_threads(),
        mb / parse_parallel.as_secs_f64(),
        mb / sanitize.as_secs_f64(),
        parse_parallel.as_secs_f64() / sanitize.as_secs_f64()
    );

    if big_gb <= 0.0 {
        return;
    }
    // P7: peak memory over a large raw input.
    let per_record = bytes as f64 / summary.records as f64;
    let big_records = (big_gb * 1e9 / per_record) as usize;
    let big_raw = work.path().join("big-raw");
    let big = SimulateOptions {
        users: 100,
        sessions_per_user: big_records.div_ceil(100 * 400),
        snapshots_per_session: 400,
        seed: 7,
        ..SimulateOptions::default()
    };
    let big_summary = simulate(&big, &big_raw).expect("simulate");
    let big_bytes = bytes_under(&big_raw);
    drop(files);
    std::fs::remove_dir_all(&raw).ok();
    let clean = work.path().join("big-clean");
    // Each measurement runs in a fresh child; RUSAGE_CHILDREN keeps the maximum
    // over all children, so measure dataset in its own process tree.
    let (sanitize_time, rss_sanitize) = measure(
        Command::new(&fabric)
            .args(["sanitize", "--input-dir"])
            .arg(&big_raw)
            .arg("--output-dir")
            .arg(&clean)
            .arg("--report")
            .arg(work.path().join("big-report.json")),
    );
    std::fs::remove_dir_all(&big_raw).ok();
    let (dataset_time, rss_dataset) = measure(
        Command::new(&fabric)
            .args(["dataset", "--input-dir"])
            .arg(&clean)
            .arg("--output-file")
            .arg(work.path().join("big.jsonl"))
            .arg("--augment-mode"),
    );
    println!(
        "| P7 {:.2} GB raw ({} records) | peak RSS < 300 MB | sanitize {rss_sanitize:.0} MiB ({:.0} s), dataset {rss_dataset:.0} MiB ({:.0} s) | {} |",
        big_bytes as f64 / 1e9,
        big_summary.records,
        sanitize_time.as_secs_f64(),
        dataset_time.as_secs_f64(),
        if rss_sanitize.max(rss_dataset) < 300.0 {
            "met"
        } else {
            "not met"
        }
    );
}
