"""Cost curves (issue #18): how Fabric's no-op, one-change rerun and
from-clean times grow with the amount of work, each next to the references
that apply, measured in the same run.

Files: one stage over N small files (N = 1,000 / 10,000 / 100,000, in
directories of 1,000), declared as a directory dep (`data`) and, in a second
workspace, as a glob dep (`data/**/*.txt`). References: the stat floor (`find`
stat'ing every file once) and, for the directory dep, `dvc repro` on the same
stage. One change = one file rewritten (the stage reruns in both tools).
The no-op right after the first build, while the newest files are less than
2 s old, is shown too (it once re-read every file: the racy window).

Stages: N trivial stages (N = 200 / 2,000 / 20,000) in 40 layers, each
depending on two stages of the layer above, the first layer on a source file
each; every command is `cksum` of its inputs into its out, so a change flows
down. References: make -j2 and ninja -j2 on the same graph. One change = one
first-layer source rewritten (all three tools rerun the same stages).

No-op times are taken once the racy-timestamp window (2 s) has passed, as
medians of RUNS runs; from-clean and one-change are medians of RUNS runs too.
Usage: curves.py FABRIC DVC RUNS [SIZES...] (sizes like files=1000 stages=200)
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

FABRIC, DVC, RUNS = sys.argv[1], sys.argv[2], int(sys.argv[3])
SIZES = sys.argv[4:] or [
    "files=1000", "files=10000", "files=100000",
    "stages=200", "stages=2000", "stages=20000",
]
RACY = 2.5  # seconds: past Fabric's racy-timestamp window


def run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   shell=isinstance(cmd, str))


def timed(cmd, cwd):
    start = time.perf_counter()
    run(cmd, cwd)
    return time.perf_counter() - start


def settled_noop(cmd, cwd):
    """Median no-op once every file is older than the racy window."""
    time.sleep(RACY)
    run(cmd, cwd)  # the first settled run refreshes the stat cache
    return statistics.median(timed(cmd, cwd) for _ in range(max(RUNS, 5)))


def write_files(dir, n):
    for d in range((n + 999) // 1000):
        sub = os.path.join(dir, "data", f"d{d:03}")
        os.makedirs(sub)
        for i in range(min(1000, n - d * 1000)):
            with open(os.path.join(sub, f"f{i:04}.txt"), "w") as f:
                f.write(f"file {d}/{i}\n" * 4)


def change_file(dir, k):
    with open(os.path.join(dir, "data", "d000", "f0000.txt"), "a") as f:
        f.write(f"change {k}\n")


def files_curve(n):
    rows = []
    for kind, dep in (("directory dep", "data"), ("glob dep", "data/**/*.txt")):
        work = tempfile.mkdtemp(prefix="fabric-curve-")
        try:
            write_files(work, n)
            cmd = "find data -type f | wc -l > out/count"
            with open(os.path.join(work, "Fabric.toml"), "w") as f:
                f.write(f'[stage.count]\ncmd = "{cmd}"\ndeps = ["{dep}"]\nouts = ["out/count"]\n')
            os.makedirs(os.path.join(work, "out"))
            fabric = [FABRIC, "run", "-q"]
            clean_times = []
            for k in range(RUNS):
                shutil.rmtree(os.path.join(work, ".fabric"), ignore_errors=True)
                for leftover in ("Fabric.lock", "out/count"):
                    if os.path.exists(os.path.join(work, leftover)):
                        os.remove(os.path.join(work, leftover))
                clean_times.append(timed(fabric, work))
                if k == 0:
                    # The first no-op while the newest data files are less
                    # than 2 s old (issue #18's 10,000-file anomaly).
                    fresh = timed(fabric, work)
            noop = settled_noop(fabric, work)
            floor = statistics.median(timed("find data -printf '%s\\n' > /dev/null", work) for _ in range(max(RUNS, 5)))
            changes = []
            for k in range(RUNS):
                change_file(work, k)
                changes.append(timed(fabric, work))
            row = {"workload": f"{n:,} files, {kind}", "clean": statistics.median(clean_times),
                   "noop": noop, "fresh": fresh, "change": statistics.median(changes), "floor": floor}
            if kind == "directory dep":
                row.update(dvc_files(work, cmd, n))
            rows.append(row)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def dvc_files(fabric_work, cmd, n):
    """The same stage under DVC, in a copy of the data (its own git repo)."""
    work = tempfile.mkdtemp(prefix="dvc-curve-")
    try:
        shutil.copytree(os.path.join(fabric_work, "data"), os.path.join(work, "data"))
        os.makedirs(os.path.join(work, "out"))
        run("git init -q && git config user.email b@example.invalid && git config user.name bench", work)
        run([DVC, "init", "-q"], work)
        run([DVC, "config", "core.autostage", "false"], work)
        with open(os.path.join(work, "dvc.yaml"), "w") as f:
            f.write(f"stages:\n  count:\n    cmd: {cmd}\n    deps: [data]\n    outs: [out/count]\n")
        dvc = [DVC, "repro", "-q"]
        clean = timed(dvc, work)
        noop = settled_noop(dvc, work)
        changes = []
        for k in range(RUNS):
            change_file(work, k)
            changes.append(timed(dvc, work))
        return {"dvc_clean": clean, "dvc_noop": noop, "dvc_change": statistics.median(changes)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


LAYERS = 40


def stage_graph(n):
    width = n // LAYERS
    names = lambda layer: [f"s{layer}_{i}" for i in range(width)]
    graph = []
    for layer in range(LAYERS):
        for i, name in enumerate(names(layer)):
            if layer == 0:
                deps = [f"src/{name}"]
            else:
                deps = sorted({f"out/s{layer - 1}_{i}", f"out/s{layer - 1}_{(i * 7 + 3) % width}"})
            graph.append((name, deps))
    return graph, [f"out/{name}" for name in names(LAYERS - 1)]


def write_stages(dir, n):
    graph, finals = stage_graph(n)
    os.makedirs(os.path.join(dir, "src"))
    with open(os.path.join(dir, "Fabric.toml"), "w") as f:
        f.write("[workspace]\njobs = 2\n\n")
        for name, deps in graph:
            quoted = ", ".join(f'"{d}"' for d in deps)
            f.write(f'[stage.{name}]\ncmd = "cksum {" ".join(deps)} > out/{name}"\ndeps = [{quoted}]\nouts = ["out/{name}"]\n\n')
    with open(os.path.join(dir, "Makefile"), "w") as f:
        f.write("all: " + " ".join(finals) + "\n")
        for name, deps in graph:
            f.write(f"out/{name}: {' '.join(deps)}\n\t@cksum {' '.join(deps)} > out/{name}\n")
    with open(os.path.join(dir, "build.ninja"), "w") as f:
        f.write("rule cksum\n  command = cksum $in > $out\n")
        for name, deps in graph:
            f.write(f"build out/{name}: cksum {' '.join(deps)}\n")
    for name, deps in graph:
        for dep in deps:
            if dep.startswith("src/") and not os.path.exists(os.path.join(dir, dep)):
                with open(os.path.join(dir, dep), "w") as s:
                    s.write(f"{name}\n")


def stages_curve(n):
    work = tempfile.mkdtemp(prefix="fabric-curve-")
    try:
        write_stages(work, n)
        tools = {
            "fabric": [FABRIC, "run", "-q", "-j", "2"],
            "make": ["make", "-j2", "-s"],
            "ninja": ["ninja", "-j2"],
        }
        row = {"workload": f"{n:,} stages"}
        for tool, cmd in tools.items():
            clean_times, changes = [], []
            for k in range(RUNS):
                for entry in ("out", ".fabric", "Fabric.lock", ".ninja_log", ".ninja_deps"):
                    path = os.path.join(work, entry)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    elif os.path.exists(path):
                        os.remove(path)
                os.makedirs(os.path.join(work, "out"))
                clean_times.append(timed(cmd, work))
            noop = settled_noop(cmd, work)
            for k in range(RUNS):
                with open(os.path.join(work, "src", "s0_0"), "a") as s:
                    s.write(f"change {tool} {k}\n")
                changes.append(timed(cmd, work))
            row[f"{tool}_clean"] = statistics.median(clean_times)
            row[f"{tool}_noop"] = noop
            row[f"{tool}_change"] = statistics.median(changes)
        return row
    finally:
        shutil.rmtree(work, ignore_errors=True)


def ms(seconds):
    return f"{seconds * 1000:,.1f} ms" if seconds < 10 else f"{seconds:,.1f} s"


file_rows, stage_rows = [], []
for size in SIZES:
    kind, n = size.split("=")
    if kind == "files":
        file_rows += files_curve(int(n))
    else:
        stage_rows.append(stages_curve(int(n)))
    sys.stderr.write(f"done: {size}\n")

print(f"Cost curves, medians of {RUNS} (no-op: of {max(RUNS, 5)}, once the racy window has passed)\n")
if file_rows:
    print("| workload | stat floor | fabric no-op (× floor) | fabric no-op, data < 2 s old | dvc no-op | fabric one change | dvc one change | fabric from clean | dvc from clean |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in file_rows:
        dvc = lambda key: ms(r[key]) if key in r else "—"
        print(f"| {r['workload']} | {ms(r['floor'])} | {ms(r['noop'])} ({r['noop'] / r['floor']:.2f}×) | {ms(r['fresh'])} | {dvc('dvc_noop')} "
              f"| {ms(r['change'])} | {dvc('dvc_change')} | {ms(r['clean'])} | {dvc('dvc_clean')} |")
    print()
if stage_rows:
    print("| workload | fabric no-op | ninja no-op (fabric ×) | make no-op | fabric one change | ninja one change | make one change | fabric from clean | make from clean (fabric ×) | ninja from clean |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in stage_rows:
        print(f"| {r['workload']} | {ms(r['fabric_noop'])} | {ms(r['ninja_noop'])} ({r['fabric_noop'] / r['ninja_noop']:.1f}×) | {ms(r['make_noop'])} "
              f"| {ms(r['fabric_change'])} | {ms(r['ninja_change'])} | {ms(r['make_change'])} "
              f"| {ms(r['fabric_clean'])} | {ms(r['make_clean'])} ({r['fabric_clean'] / r['make_clean']:.2f}×) | {ms(r['ninja_clean'])} |")
