"""P1, P1b and P2 (spec 06): a workspace of 10,000 raw snapshot files and one
1 GiB data file, with the same three-stage pipeline for fabric and DVC.

P1  no-op rerun: fabric run vs dvc repro, and the floor: stat'ing the files once.
P1b one small file rewritten: the same two tools.
P2  hashing everything with an empty stat cache (fabric status after deleting
    .fabric/state) vs b3sum --num-threads 2 on the same files, warm and (when
    the machine lets us drop the page cache) cold.

Usage: scale.py FABRIC DVC B3SUM RUNS
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FABRIC, DVC, B3SUM, RUNS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
FILES, BIG = 10_000, 1 << 30


def run(cmd, cwd, **kw):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, shell=isinstance(cmd, str), **kw)


def timed(cmd, cwd):
    start = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - start


def median(cmd, cwd, before=None):
    samples = []
    for _ in range(RUNS):
        if before:
            before()
        samples.append(timed(cmd, cwd))
    return statistics.median(samples)


def drop_caches():
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


work = tempfile.mkdtemp(prefix="fabric-scale-")
try:
    run([FABRIC, "simulate", "--output-dir", "sim", "--users", "50", "--sessions-per-user", "1", "--snapshots-per-session", "200"], work)
    os.makedirs(f"{work}/raw")
    n = 0
    for name in sorted(os.listdir(f"{work}/sim")):
        for line in open(f"{work}/sim/{name}"):
            if n < FILES:
                with open(f"{work}/raw/{n:05d}.json", "w") as f:
                    f.write(line)
                n += 1
    shutil.rmtree(f"{work}/sim")
    with open(f"{work}/big.bin", "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(BIG >> 20):
            f.write(chunk)
    # The same three stages for both tools. DVC runs the commands `fabric
    # sanitize` and `fabric dataset`; Fabric runs the same code as the
    # built-in steps the prime-brain pipeline uses (`prime.sanitize`,
    # `prime.dataset`), which also keep step memos. The outputs are the same
    # bytes either way.
    sanitize_cmd = f"{FABRIC} sanitize --input-dir raw --output-dir clean --report rep.json"
    dataset_cmd = f"{FABRIC} dataset --input-dir clean --output-file d/x.jsonl"
    with open(f"{work}/Fabric.toml", "w") as f:
        f.write('[stage.sanitize]\nstep = "prime.sanitize"\ndeps = ["raw"]\nouts = ["clean", "rep.json"]\n\n')
        f.write('[stage.size]\ncmd = "wc -c big.bin > big.txt"\ndeps = ["big.bin"]\nouts = ["big.txt"]\n\n')
        f.write('[stage.dataset]\nstep = "prime.dataset"\ndeps = ["clean"]\n'
                'outs = ["d/x.jsonl", "d/x-test.jsonl", "d/x.card.json"]\n')
    dvc_stages = {
        "sanitize": (sanitize_cmd, ["raw"], ["clean", "rep.json"]),
        "size": ("wc -c big.bin > big.txt", ["big.bin"], ["big.txt"]),
        "dataset": (dataset_cmd, ["clean"], ["d"]),
    }
    with open(f"{work}/dvc.yaml", "w") as f:
        f.write("stages:\n")
        for name, (cmd, deps, outs) in dvc_stages.items():
            f.write(f"  {name}:\n    cmd: {cmd}\n    deps: {json.dumps(deps)}\n    outs: {json.dumps(outs)}\n")
    run("git init -q && " + f"{DVC} init -q && {DVC} config core.autostage false", work)
    run([FABRIC, "run", "-q"], work)
    run([DVC, "repro", "-q"], work)
    # Let the racy-timestamp window pass so the stat cache trusts every file.
    time.sleep(2.5)
    run([FABRIC, "run", "-q"], work)
    run([DVC, "repro", "-q"], work)

    floor = median("find raw clean d big.bin rep.json big.txt -printf '%s\\n' > /dev/null", work)
    fabric_noop = median([FABRIC, "run", "-q"], work)
    dvc_noop = median([DVC, "repro", "-q"], work)

    counter = [0]

    def touch_one():
        counter[0] += 1
        with open(f"{work}/raw/00001.json") as f:
            text = f.read()
        value = json.loads(text)
        value["sequence"] = 100000 + counter[0]
        with open(f"{work}/raw/00001.json", "w") as f:
            f.write(json.dumps(value) + "\n")

    fabric_one = median([FABRIC, "run", "-q"], work, before=touch_one)
    dvc_one = median([DVC, "repro", "-q"], work, before=touch_one)

    # Everything `fabric status` hashes: every stage's deps and outs.
    hash_files = "raw/* big.bin clean/* rep.json big.txt d/*"
    b3_warm = median(f"{B3SUM} --num-threads 2 {hash_files} > /dev/null", work)
    fabric_warm = median([FABRIC, "status"], work, before=lambda: os.path.exists(f"{work}/.fabric/state") and os.remove(f"{work}/.fabric/state"))
    cold = drop_caches()
    if cold:
        b3_cold = median(f"{B3SUM} --num-threads 2 {hash_files} > /dev/null", work, before=drop_caches)
        fabric_cold = median([FABRIC, "status"], work, before=lambda: (os.path.exists(f"{work}/.fabric/state") and os.remove(f"{work}/.fabric/state"), drop_caches()))

    print(f"P1/P1b/P2: {FILES} raw snapshot files + a 1 GiB file, 3 stages; median of {RUNS}")
    print("| workload | reference | fabric | ratio (target) |")
    print("| --- | --- | --- | --- |")
    print(f"| P1 no-op | stat floor {floor * 1000:.1f} ms; dvc repro {dvc_noop * 1000:.0f} ms | {fabric_noop * 1000:.1f} ms | {fabric_noop / floor:.2f}x floor (<= 1.5x); {dvc_noop / fabric_noop:.0f}x faster than DVC (>= 25x) |")
    print(f"| P1b one file rewritten | dvc repro {dvc_one * 1000:.0f} ms | {fabric_one * 1000:.0f} ms | {dvc_one / fabric_one:.1f}x faster than DVC (>= 20x) |")
    print(f"| P2 hashing, warm | b3sum --num-threads 2 {b3_warm * 1000:.0f} ms | {fabric_warm * 1000:.0f} ms | {b3_warm / fabric_warm:.2f}x b3sum (>= 1.0x) |")
    if cold:
        print(f"| P2 hashing, cold | b3sum --num-threads 2 {b3_cold * 1000:.0f} ms | {fabric_cold * 1000:.0f} ms | {b3_cold / fabric_cold:.2f}x b3sum (>= 1.0x) |")
    else:
        print("| P2 hashing, cold | (the page cache cannot be dropped here) | | |")
finally:
    shutil.rmtree(work, ignore_errors=True)
