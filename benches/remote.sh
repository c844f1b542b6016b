#!/usr/bin/env bash
# Remote cache (issue #15): fabric push / pull / run --pull against DVC's
# push / pull (dvc[webdav] from PyPI, installed into .fabric/bench-dvc) to
# the same lighttpd WebDAV server, on the default pipeline's outputs and on
# BENCH_BIG_MB (default 1024) MiB in one file plus BENCH_FILES (default
# 10000) small files. Needs lighttpd (scripts/setup --tests installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup --tests
if [ ! -d .fabric/bench-dvc/dvc ]; then
  python3 -m pip install --quiet --disable-pip-version-check --no-input \
    --target .fabric/bench-dvc "dvc[webdav]==3.67.1"
fi
cargo build --release --locked
target/release/fabric run -q   # the default pipeline's outputs, to push
python3 benches/remote.py "$PWD/target/release/fabric" "$PWD/.fabric/bench-dvc" "$PWD" \
  "${BENCH_BIG_MB:-1024}" "${BENCH_FILES:-10000}"
