#!/usr/bin/env bash
# P6 (spec 06): sustained ingest throughput with durable acknowledgements,
# 32 concurrent connections on loopback, measured with wrk (Debian package),
# side by side with the design before one-log group commit (BASELINE_REV,
# built once into target/bench-baseline), each on this machine's disk and on
# a disk whose fsync costs SLOW_FSYNC_US (2600 µs): benches/slow_fsync.c, an
# LD_PRELOAD stand-in that waits before every real fsync/fdatasync.
# Knobs: BENCH_SECONDS (default 10), BENCH_RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -q wrk >/dev/null; }
cargo build --release --locked
baseline_rev=${BASELINE_REV:-67f94b9}
baseline=target/bench-baseline/release/fabric
if [ ! -x "$baseline" ]; then
  tree=$(mktemp -d)
  git worktree add --detach "$tree" "$baseline_rev" >/dev/null
  (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target/bench-baseline" cargo build --release --locked)
  git worktree remove --force "$tree"
fi
work=$(mktemp -d)
cc -shared -fPIC -O2 -o "$work/slow_fsync.so" benches/slow_fsync.c -ldl
seconds=${BENCH_SECONDS:-10}
server=
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT

echo "| design | fsync | run | snapshots/s (durable) | p50 | p99 | records on disk |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for design in baseline current; do
  binary=./target/release/fabric
  [ "$design" = baseline ] && binary=$baseline
  for disk in real slowed; do
    dir="$work/$design-$disk"
    preload=
    [ "$disk" = slowed ] && preload="$work/slow_fsync.so"
    LD_PRELOAD=$preload "$binary" serve --bind 127.0.0.1:0 --dir "$dir/raw" > "$dir.url" 2>/dev/null &
    server=$!
    until [ -s "$dir.url" ]; do sleep 0.1; done
    url=$(sed 's/listening on //' "$dir.url")
    for run in $(seq "${BENCH_RUNS:-3}"); do
      out=$(wrk -t2 -c32 -d"${seconds}s" --latency -s benches/ingest.lua "$url" -- "$run")
      rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
      p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
      non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
      stored=$(cat "$dir"/raw/*.jsonl | wc -l)
      echo "| $design | $disk | $run | $rate | $p50 | $p99 | $stored${non2xx:+ (non-2xx: $non2xx)} |"
    done
    kill "$server"; wait "$server" 2>/dev/null || true
  done
done
