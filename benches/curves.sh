#!/usr/bin/env bash
# Cost curves (issue #18): no-op, one-change and from-clean times against
# 1,000-100,000 files and 200-20,000 stages, next to the stat floor, DVC
# (PyPI, in benches/.venv-dvc, git-ignored), make and ninja (Debian).
# Knobs: BENCH_RUNS (3); arguments pick sizes (files=N stages=N).
# Needs ~1 GB of free disk in $TMPDIR; takes about 20 minutes with 3 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ninja >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -q ninja-build >/dev/null; }
[ -x benches/.venv-dvc/bin/dvc ] || { python3 -m venv benches/.venv-dvc && benches/.venv-dvc/bin/pip install --quiet dvc; }
cargo build --release --locked
python3 benches/curves.py "$PWD/target/release/fabric" "$PWD/benches/.venv-dvc/bin/dvc" "${BENCH_RUNS:-3}" "$@"
