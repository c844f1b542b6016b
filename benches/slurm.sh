#!/usr/bin/env bash
# Slurm executor overhead per stage (issue #14): fabric against sbatch alone
# in a shell loop, on a single-node cluster this script starts and stops.
# Knobs: BENCH_RUNS (default 3), BENCH_STAGES (default 200). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
cluster=$(mktemp -d)/cluster
trap 'scripts/slurm-cluster stop "$cluster"' EXIT
export "$(scripts/slurm-cluster start "$cluster")"
python3 benches/slurm.py "$PWD/target/release/fabric" "${BENCH_RUNS:-3}" "${BENCH_STAGES:-200}"
