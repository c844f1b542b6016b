#!/usr/bin/env bash
# P3 (spec 06): scheduler overhead on 2,000 trivial stages against make -j2
# and ninja (Debian packages, installed if missing). Knob: BENCH_RUNS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ninja >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -q ninja-build >/dev/null; }
cargo build --release --locked
python3 benches/scheduler.py "$PWD/target/release/fabric" "${BENCH_RUNS:-3}"
