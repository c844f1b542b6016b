#!/usr/bin/env bash
# P1, P1b, P2 (spec 06). References: DVC from PyPI in a local venv
# (benches/.venv-dvc, git-ignored) and b3sum from crates.io (cargo install).
# Knob: BENCH_RUNS (default 3). Needs ~2 GB of free disk in $TMPDIR.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x benches/.venv-dvc/bin/dvc ] || { python3 -m venv benches/.venv-dvc && benches/.venv-dvc/bin/pip install --quiet dvc; }
command -v b3sum >/dev/null || cargo install --locked b3sum
cargo build --release --locked
python3 benches/scale.py "$PWD/target/release/fabric" "$PWD/benches/.venv-dvc/bin/dvc" "$(command -v b3sum)" "${BENCH_RUNS:-3}"
