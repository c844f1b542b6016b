"""Experiments (issue #20): 8 variants of a 5-stage pipeline in which only
the last two stages read the varied param `p`. Each stage runs `work.py`:
a fixed amount of Python work, then its output. Three ways, each from a
workspace whose baseline (p = 0) is already computed:

- `fabric run -P p=V` for the 8 values, one after another, in the workspace;
- `fabric exp run --grid p=1,…,8 -j 2` (isolated copies sharing the store);
- `dvc exp run --queue -S p=V` for the 8 values, then `dvc queue start -j 2`,
  waited for until the 8 experiments are git refs (`refs/exps/`, read with
  `git for-each-ref`, which costs next to nothing), then checked with
  `dvc queue status`.

Usage: exp.py FABRIC DVC_SITE_PACKAGES WORK"""
import os
import subprocess
import sys
import tempfile
import time

FABRIC, DVC_SITE, WORK = sys.argv[1], sys.argv[2], int(sys.argv[3])
VALUES = list(range(1, 9))
# DVC's queue starts its workers as `dvc` processes: its scripts go on PATH.
ENV = dict(os.environ, PYTHONPATH=DVC_SITE, PATH=f"{DVC_SITE}/bin:{os.environ['PATH']}", GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@localhost",
           GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@localhost", DVC_NO_ANALYTICS="1")
DVC = ["dvc"]

WORK_PY = f'''import sys
n = {WORK}
acc = 0
for i in range(n):
    acc = (acc * 31 + i) % 1000003
inputs = "".join(open(path).read() for path in sys.argv[3:])
with open(sys.argv[1], "w") as out:
    if sys.argv[1].endswith(".json"):
        out.write(f'{{{{"score": {{len(inputs) + len(sys.argv[2])}}}}}}\\n')
    else:
        out.write(f"{{sys.argv[2]}} {{acc}} {{len(inputs)}}\\n")
'''
# (name, deps, reads p)
STAGES = [("s1", [], False), ("s2", ["s1"], False), ("s3", ["s2"], False), ("fit", ["s3"], True), ("score", ["fit"], True)]


def cmd(name, deps, reads_p, param):
    tag = f"{name}-{param}" if reads_p else name
    out = f"out/{name}.json" if name == "score" else f"out/{name}.txt"
    return f"python3 work.py {out} {tag} " + " ".join(f"out/{d}.txt" for d in deps), out


def run(args, cwd):
    subprocess.run(args, cwd=cwd, env=ENV, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fabric_workspace(dir):
    with open(f"{dir}/work.py", "w") as f:
        f.write(WORK_PY)
    with open(f"{dir}/Fabric.toml", "w") as f:
        f.write('[workspace]\nname = "grid"\n\n[params]\np = 0\n')
        for name, deps, reads_p in STAGES:
            command, out = cmd(name, deps, reads_p, "${params.p}")
            d = ", ".join(f'"out/{x}.txt"' for x in deps)
            kind = "metrics" if name == "score" else "outs"
            f.write(f'\n[stage.{name}]\ncmd = "mkdir -p out && {command}"\ndeps = ["work.py", {d}]\n{kind} = ["{out}"]\n')
    run([FABRIC, "run", "-q"], dir)


def dvc_workspace(dir):
    with open(f"{dir}/work.py", "w") as f:
        f.write(WORK_PY)
    with open(f"{dir}/params.yaml", "w") as f:
        f.write("p: 0\n")
    with open(f"{dir}/dvc.yaml", "w") as f:
        f.write("stages:\n")
        for name, deps, reads_p in STAGES:
            command, out = cmd(name, deps, reads_p, "${p}")
            f.write(f"  {name}:\n    cmd: mkdir -p out && {command}\n    deps: [work.py{''.join(f', out/{x}.txt' for x in deps)}]\n")
            if reads_p:
                f.write("    params: [p]\n")
            f.write(f"    {'metrics' if name == 'score' else 'outs'}: [{out}]\n")
    run(["git", "init", "-q"], dir)
    run(DVC + ["init", "-q"], dir)
    run(DVC + ["repro", "-q"], dir)
    run(["git", "add", "-A"], dir)
    run(["git", "commit", "-q", "-m", "baseline"], dir)


def timed(label, steps, results):
    start = time.perf_counter()
    steps()
    results.append((label, time.perf_counter() - start))


def dvc_experiments_done(dir):
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], cwd=dir, env=ENV,
                          capture_output=True, text=True, check=True).stdout.split()
    return len([ref for ref in refs if "/celery/" not in ref]) >= len(VALUES)


results = []
with tempfile.TemporaryDirectory() as seq, tempfile.TemporaryDirectory() as exp, tempfile.TemporaryDirectory() as dvc:
    fabric_workspace(seq)
    fabric_workspace(exp)
    dvc_workspace(dvc)
    timed("8 × fabric run -P p=V, one after another", lambda: [run([FABRIC, "run", "-q", "-P", f"p={v}"], seq) for v in VALUES], results)
    timed("fabric exp run --grid p=1,…,8 -j 2", lambda: run([FABRIC, "exp", "run", "--grid", "p=" + ",".join(map(str, VALUES)), "-j", "2"], exp), results)

    def dvc_grid():
        for v in VALUES:
            run(DVC + ["exp", "run", "--queue", "-S", f"p={v}"], dvc)
        run(DVC + ["queue", "start", "-j", "2"], dvc)
        while not dvc_experiments_done(dvc):
            time.sleep(0.2)
    timed("dvc exp run --queue ×8 + dvc queue start -j 2", dvc_grid, results)
    shown = subprocess.run([FABRIC, "exp", "show", "--sort", "score"], cwd=exp, env=ENV, capture_output=True, text=True, check=True).stdout
    assert shown.count("succeeded") == 8, shown
    status = subprocess.run(DVC + ["queue", "status"], cwd=dvc, env=ENV, capture_output=True, text=True, check=True).stdout
    assert status.count("Success") == len(VALUES), status
    run(DVC + ["queue", "stop"], dvc)

print(f"8 variants of a 5-stage pipeline (last two stages read the param), {os.cpu_count()} cores, WORK={WORK}")
print("| way | seconds | vs fabric exp |")
print("| --- | --- | --- |")
ours = dict(results)["fabric exp run --grid p=1,…,8 -j 2"]
for label, seconds in results:
    print(f"| {label} | {seconds:.2f} | {seconds / ours:.2f}x |")
