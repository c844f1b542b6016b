#!/usr/bin/env bash
# P6 (spec 06): sustained ingest throughput with durable acknowledgements,
# 32 concurrent connections on loopback, measured with wrk (Debian package).
# Knobs: BENCH_SECONDS (default 10), BENCH_RUNS (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -q wrk >/dev/null; }
cargo build --release --locked
seconds=${BENCH_SECONDS:-10}
work=$(mktemp -d)
trap 'kill $server 2>/dev/null; rm -rf "$work"' EXIT
./target/release/fabric serve --bind 127.0.0.1:0 --dir "$work/raw" > "$work/url" 2>/dev/null &
server=$!
until [ -s "$work/url" ]; do sleep 0.1; done
url=$(sed 's/listening on //' "$work/url")
echo "| run | snapshots/s (durable) | p50 | p99 |"
echo "| --- | --- | --- | --- |"
for run in $(seq "${BENCH_RUNS:-3}"); do
  out=$(wrk -t2 -c32 -d"${seconds}s" --latency -s benches/ingest.lua "$url" -- "$run")
  rate=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
  p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  echo "| $run | $rate | $p50 | $p99 |${non2xx:+ non-2xx: $non2xx}"
done
stored=$(cat "$work"/raw/*.jsonl | wc -l)
echo "records on disk: $stored (every acknowledged request is a new snapshot)"
