#!/usr/bin/env bash
# Experiments (issue #20): a grid of 8 variants of a 5-stage pipeline whose
# last two stages read the varied param, three ways in one run: the 8
# variants one after another with `fabric run -P`, `fabric exp run --grid
# … -j 2`, and `dvc exp run --queue` ×8 + `dvc queue start -j 2` (DVC from
# PyPI, installed into .fabric/bench-dvc). Knob: BENCH_WORK (default 2000000,
# the loop count of each stage's Python work).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d .fabric/bench-dvc/dvc ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-input \
    --target .fabric/bench-dvc "dvc[webdav]==3.67.1"
fi
cargo build --release --locked
python3 benches/exp.py "$PWD/target/release/fabric" "$PWD/.fabric/bench-dvc" "${BENCH_WORK:-2000000}"
