"""Slurm executor overhead (issue #14): 200 trivial stages through
`fabric run --executor slurm` against the same 200 commands submitted with
`sbatch` in a shell loop and waited for by polling `squeue`, on the same
single-node cluster, alternated. Usage: slurm.py FABRIC RUNS [STAGES]."""
import os
import statistics
import subprocess
import sys
import tempfile
import time

FABRIC, RUNS = sys.argv[1], int(sys.argv[2])
STAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 200


def queue_empty():
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, check=True).stdout
    return not out.strip()


def sbatch_loop(work):
    os.makedirs(f"{work}/out", exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        f"for i in $(seq {STAGES}); do sbatch --parsable --chdir={work} --output=/dev/null --wrap=\"touch out/s$i\" >/dev/null; done",
        shell=True, check=True)
    while not queue_empty():
        time.sleep(0.05)
    return time.perf_counter() - start


def fabric(work):
    with open(f"{work}/Fabric.toml", "w") as f:
        f.write('[workspace]\nname = "bench"\nexecutor = "slurm"\n')
        for i in range(STAGES):
            f.write(f'\n[stage.s{i}]\ncmd = "touch out/s{i}"\nouts = ["out/s{i}"]\n')
    os.makedirs(f"{work}/out", exist_ok=True)
    start = time.perf_counter()
    subprocess.run([FABRIC, "run", "-q", "-j", str(STAGES)], cwd=work, check=True)
    return time.perf_counter() - start


ref, ours = [], []
for i in range(RUNS):
    for name, measure, into in [("sbatch", sbatch_loop, ref), ("fabric", fabric, ours)][:: 1 if i % 2 == 0 else -1]:
        with tempfile.TemporaryDirectory() as work:
            into.append(measure(work))
r, o = statistics.median(ref), statistics.median(ours)
print(f"{STAGES} trivial stages on a single-node Slurm cluster ({os.cpu_count()} cores); median of {RUNS}")
print("| workload | reference | fabric | overhead |")
print("| --- | --- | --- | --- |")
print(f"| {STAGES} jobs, submit + track + collect | sbatch loop + squeue wait {r:.2f} s | fabric run --executor slurm {o:.2f} s "
      f"| {o / r:.2f}x; {(o - r) / STAGES * 1000:+.1f} ms per stage |")
