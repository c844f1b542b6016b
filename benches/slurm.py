"""Slurm executor overhead (issue #14): 200 trivial stages through
`fabric run --executor slurm` against the same 200 commands submitted with
`sbatch` in a shell loop and waited for by polling `squeue`, on the same
single-node cluster, alternated. Besides wall time, it measures CPU time:
of the submitting side (the measured process and everything it ran: sbatch,
squeue, scontrol, hashing) and of slurmctld (what the submissions and polls
cost the controller). Usage: slurm.py FABRIC RUNS [STAGES]; SLURM_CONF names
the cluster, whose slurmctld.pid sits next to it."""
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

FABRIC, RUNS = sys.argv[1], int(sys.argv[2])
STAGES = int(sys.argv[3]) if len(sys.argv) > 3 else 200


CTLD_PID = int(open(os.path.join(os.path.dirname(os.environ["SLURM_CONF"]), "slurmctld.pid")).read())


def ctld_cpu():
    """slurmctld's CPU seconds so far (user + system)."""
    fields = open(f"/proc/{CTLD_PID}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measured(run, work):
    """Wall seconds, submitting-side CPU seconds and slurmctld CPU seconds of run(work)."""
    cpu, ctld, start = children_cpu(), ctld_cpu(), time.perf_counter()
    run(work)
    return time.perf_counter() - start, children_cpu() - cpu, ctld_cpu() - ctld


def queue_empty():
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True, check=True).stdout
    return not out.strip()


def sbatch_loop(work):
    os.makedirs(f"{work}/out", exist_ok=True)
    subprocess.run(
        f"for i in $(seq {STAGES}); do sbatch --parsable --chdir={work} --output=/dev/null --wrap=\"touch out/s$i\" >/dev/null; done",
        shell=True, check=True)
    while not queue_empty():
        time.sleep(0.05)


def fabric(work):
    with open(f"{work}/Fabric.toml", "w") as f:
        f.write('[workspace]\nname = "bench"\nexecutor = "slurm"\n')
        for i in range(STAGES):
            f.write(f'\n[stage.s{i}]\ncmd = "touch out/s{i}"\nouts = ["out/s{i}"]\n')
    os.makedirs(f"{work}/out", exist_ok=True)
    subprocess.run([FABRIC, "run", "-q", "-j", str(STAGES)], cwd=work, check=True)


ref, ours = [], []
for i in range(RUNS):
    for name, run, into in [("sbatch", sbatch_loop, ref), ("fabric", fabric, ours)][:: 1 if i % 2 == 0 else -1]:
        with tempfile.TemporaryDirectory() as work:
            into.append(measured(run, work))


def median(runs, k):
    return statistics.median(run[k] for run in runs)


print(f"{STAGES} trivial stages on a single-node Slurm cluster ({os.cpu_count()} cores); median of {RUNS}")
print("| measure | sbatch loop + squeue wait | fabric run --executor slurm | fabric's overhead per stage |")
print("| --- | --- | --- | --- |")
for k, what in [(0, "wall time"), (1, "CPU, submitting side"), (2, "CPU, slurmctld")]:
    r, o = median(ref, k), median(ours, k)
    print(f"| {what} | {r:.2f} s | {o:.2f} s | {(o - r) / STAGES * 1000:+.1f} ms ({o / r:.2f}x) |")
