"""P5: examples/s of fabric train vs scikit-learn and a bare onnxruntime loop.

Usage (from benches/training.sh): training.py RUNS EPOCHS
All three train the same layers (80 -> 64 -> 32 -> heads) with Adam, batch 256,
one thread, on datasets/prime-brain-v1.jsonl.
"""
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

RUNS, EPOCHS = int(sys.argv[1]), int(sys.argv[2])
DATASET = "datasets/prime-brain-v1.jsonl"
BATCH, LR, HIDDEN = 256, 0.003, (64, 32)

examples = [json.loads(line) for line in open(DATASET)]
X = np.array([e["features"] for e in examples], dtype=np.float32)
n = len(X)


def fabric():
    out = subprocess.run(
        ["./target/release/fabric", "train", "--dataset", DATASET, "--output-dir", tempfile.mkdtemp(),
         "--epochs", str(EPOCHS), "--threads", "1", "--batch-size", str(BATCH), "--learning-rate", str(LR)],
        capture_output=True, text=True, check=True)
    return float(re.search(r"\(([0-9.]+) examples/s\)", out.stderr).group(1))


def sklearn():
    y = np.array([e["command"]["type"] for e in examples])
    model = MLPClassifier(hidden_layer_sizes=HIDDEN, solver="adam", batch_size=BATCH, learning_rate_init=LR,
                          max_iter=EPOCHS, shuffle=True, tol=0.0, n_iter_no_change=EPOCHS + 1, random_state=57)
    with threadpool_limits(1):
        start = time.perf_counter()
        model.fit(X, y)
        elapsed = time.perf_counter() - start
    return n * EPOCHS / elapsed


graph = tempfile.mktemp(suffix=".onnx")
subprocess.run(["./target/release/fabric", "train", "--dataset", DATASET, "--output-dir", tempfile.mkdtemp(),
                "--epochs", "1", "--save-train-graph", graph], capture_output=True, check=True)


def ort_loop():
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    # Initial parameters: the graph's initializers are the param inputs' defaults;
    # zeros of the right shapes serve as well for a throughput measurement.
    state = {}
    for name, info in inputs.items():
        if name.startswith(("param.", "adam.")):
            shape = [d if isinstance(d, int) else 1 for d in info.shape]
            state[name] = (np.random.default_rng(0).uniform(-0.1, 0.1, shape) if name.startswith("param.")
                           else np.zeros(shape)).astype(np.float32)
    heads = {name[2:]: info.shape[1] for name, info in inputs.items() if name.startswith("y.")}
    labels = {h: np.eye(c, dtype=np.float32)[np.random.default_rng(1).integers(0, c, n)] for h, c in heads.items()}
    labels["command"] = np.eye(heads["command"], dtype=np.float32)[np.zeros(n, dtype=int)]
    weight = np.ones(n, dtype=np.float32)
    lr = np.array(LR, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(57)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        order = rng.permutation(n)
        for i in range(0, n, BATCH):
            idx = order[i:i + BATCH]
            feed = {"features": X[idx], "weight": weight[idx], "lr": lr}
            for h in heads:
                feed["y." + h] = labels[h][idx]
            feed.update(state)
            values = dict(zip(names, session.run(names, feed)))
            state = {k: values[k + ".out"] for k in state}
    return n * EPOCHS / (time.perf_counter() - start)


def median(f):
    return statistics.median(f() for _ in range(RUNS))


ours, sk, loop = median(fabric), median(sklearn), median(ort_loop)
print(f"P5 training: {n} examples, {EPOCHS} epochs, batch {BATCH}, 1 thread, median of {RUNS}")
print("| workload | reference | fabric | ratio (target) |")
print("| --- | --- | --- | --- |")
print(f"| P5 train | scikit-learn MLPClassifier {sk:,.0f} ex/s | fabric train {ours:,.0f} ex/s | {ours / sk:.2f}x (>= 1.5x) |")
print(f"| P5 train | Python onnxruntime loop, same graph {loop:,.0f} ex/s | fabric train {ours:,.0f} ex/s | {ours / loop:.2f}x (>= 0.9x) |")
