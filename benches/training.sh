#!/usr/bin/env bash
# P5 (spec 06): training throughput of `fabric train` against scikit-learn's
# MLPClassifier (Adam, same layers, batch, one thread) and a bare Python
# onnxruntime loop over the same train-step graph. The references live only
# in a local venv (benches/.venv), never in the project's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup
if [ ! -x benches/.venv/bin/python ]; then
  python3 -m venv benches/.venv
fi
benches/.venv/bin/pip install --quiet --disable-pip-version-check numpy scikit-learn threadpoolctl onnxruntime==1.31.1
cargo build --release --locked
./target/release/fabric run dataset -q
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
benches/.venv/bin/python benches/training.py "${BENCH_RUNS:-3}" "${BENCH_EPOCHS:-20}"
