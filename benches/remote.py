"""Remote cache (issue #15): fabric push / pull / run --pull against
dvc push / pull, to the same lighttpd WebDAV server, in the same run.

Two workloads: the default pipeline's outputs (the files Fabric.lock
records, copied as data), and BIG_MB of random bytes in one file plus FILES
small files. Each tool tracks the same bytes: fabric as the outs of a stage
that writes them, DVC as `dvc add`ed data. Pushes go to an empty collection;
pulls go into a fresh clone with an empty cache. Peak memory is the maximum
resident set of the measured process (os.wait4).

Usage: remote.py FABRIC DVC_PYTHONPATH REPO BIG_MB FILES"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

FABRIC, DVC_PATH, REPO = sys.argv[1], sys.argv[2], sys.argv[3]
BIG_MB, FILES = int(sys.argv[4]), int(sys.argv[5])


def measured(args, cwd, env=None):
    """Runs a command; returns (seconds, peak RSS in MiB, peak anonymous
    memory in MiB). Peak RSS (the kernel's, from os.wait4) counts the pages
    of files the process maps, such as a large file mapped to hash it (page
    cache the kernel can drop); the anonymous part (RssAnon, sampled every
    10 ms) is the memory the process itself holds."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = [0]

    def sample():
        while process.returncode is None:
            try:
                with open(f"/proc/{process.pid}/status") as status:
                    for line in status:
                        if line.startswith("RssAnon:"):
                            peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"{args} failed in {cwd}:\n{process.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024, peak_anon[0] / 1024


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def webdav_server(work):
    """lighttpd with mod_webdav on a free loopback port, serving work/dav."""
    for collection in ["fabric", "dvc"]:
        os.makedirs(f"{work}/dav/{collection}")
    os.makedirs(f"{work}/tmp")
    port = free_port()
    with open(f"{work}/lighttpd.conf", "w") as f:
        f.write(f'''server.document-root = "{work}/dav"
server.bind = "127.0.0.1"
server.port = {port}
server.errorlog = "{work}/error.log"
server.upload-dirs = ("{work}/tmp")
server.modules = ("mod_webdav")
webdav.activate = "enable"
webdav.is-readonly = "disable"
webdav.opts = ("propfind-depth-infinity" => "enable")
''')
    server = subprocess.Popen(["lighttpd", "-D", "-f", f"{work}/lighttpd.conf"])
    deadline = time.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return server, port
        except OSError:
            if time.time() > deadline:
                sys.exit("lighttpd did not start")
            time.sleep(0.02)


GENERATE = '''import os, random, sys
target, big_mb, files, copy_from = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(target + "/many", exist_ok=True)
rng = random.Random(57)
if big_mb:
    with open(target + "/big.bin", "wb") as f:
        for _ in range(big_mb):
            f.write(rng.randbytes(1 << 20))
for i in range(files):
    with open(f"{target}/many/{i:05}.txt", "wb") as f:
        f.write(rng.randbytes(1024))
if copy_from != "-":
    import shutil
    shutil.copytree(copy_from, target + "/pipeline", dirs_exist_ok=True)
'''


def default_outputs(work):
    """The files the repository's Fabric.lock records, copied into one tree."""
    import tomllib
    with open(f"{REPO}/Fabric.lock", "rb") as f:
        lock = tomllib.load(f)
    target = f"{work}/default-outs"
    for entry in lock["stage"].values():
        for out in entry.get("out", {}):
            source = f"{REPO}/{out}"
            if os.path.isdir(source):
                shutil.copytree(source, f"{target}/{out}", dirs_exist_ok=True)
            elif os.path.isfile(source):
                os.makedirs(os.path.dirname(f"{target}/{out}"), exist_ok=True)
                shutil.copy(source, f"{target}/{out}")
    return target


def fabric_workspace(work, url, big_mb, files, copy_from):
    ws = f"{work}/fabric"
    os.makedirs(ws)
    with open(f"{ws}/gen.py", "w") as f:
        f.write(GENERATE)
    outs = ['"data/many"'] + (['"data/big.bin"'] if big_mb else []) + (['"data/pipeline"'] if copy_from != "-" else [])
    with open(f"{ws}/Fabric.toml", "w") as f:
        f.write(f'[workspace.remote]\nurl = "{url}"\ntimeout = 600\n\n'
                f'[stage.data]\ncmd = "python3 gen.py data {big_mb} {files} {copy_from}"\ndeps = ["gen.py"]\n'
                f'outs = [{", ".join(outs)}]\n')
    subprocess.run([FABRIC, "run", "-q"], cwd=ws, check=True)
    return ws


def fabric_clone(ws, name):
    clone = f"{os.path.dirname(ws)}/{name}"
    os.makedirs(clone)
    for file in ["Fabric.toml", "Fabric.lock", "gen.py"]:
        shutil.copy(f"{ws}/{file}", clone)
    return clone


def dvc_repo(work, url, big_mb, files, copy_from):
    repo = f"{work}/dvc"
    os.makedirs(repo)
    subprocess.run([sys.executable, f"{repo}/../gen.py", f"{repo}/data", str(big_mb), str(files), copy_from], check=True)
    env = dvc_env()
    run = lambda *args: subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, check=True,
                                       stdout=subprocess.DEVNULL)
    run("init", "--no-scm", "-q")
    run("config", "core.analytics", "false")
    run("remote", "add", "-d", "r", url)
    run("add", "-q", "data")
    return repo


def dvc_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = DVC_PATH
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def dvc_clone(repo):
    clone = f"{os.path.dirname(repo)}/dvc-clone"
    shutil.copytree(repo, clone, ignore=shutil.ignore_patterns("data", "cache", "tmp"))
    return clone


def compare(label, big_mb, files, copy_from, port):
    with tempfile.TemporaryDirectory() as work:
        with open(f"{work}/gen.py", "w") as f:
            f.write(GENERATE)
        stamp = str(time.time_ns())
        ws = fabric_workspace(work, f"webdav+http://127.0.0.1:{port}/fabric/{stamp}", big_mb, files, copy_from)
        os.makedirs(f"{WORK}/dav/fabric/{stamp}")
        os.makedirs(f"{WORK}/dav/dvc/{stamp}")
        repo = dvc_repo(work, f"webdav://127.0.0.1:{port}/dvc/{stamp}", big_mb, files, copy_from)
        dvc = [sys.executable, "-m", "dvc"]
        rows = []
        push_f = measured([FABRIC, "push"], ws)
        push_d = measured(dvc + ["push", "-j", "8"], repo, dvc_env())
        rows.append(("push", push_d, push_f))
        pull_f = measured([FABRIC, "pull"], fabric_clone(ws, "pull"))
        clone = dvc_clone(repo)
        pull_d = measured(dvc + ["pull", "-j", "8"], clone, dvc_env())
        rows.append(("pull", pull_d, pull_f))
        run_f = measured([FABRIC, "run", "--pull"], fabric_clone(ws, "run-pull"))
        rows.append(("run --pull (vs dvc pull)", pull_d, run_f))
        tracked = [os.path.join(d, f) for d, _, fs in os.walk(f"{ws}/data") for f in fs]
        label = f"{label} ({len(tracked)} files, {sum(map(os.path.getsize, tracked)) / 2**20:.0f} MiB)"
        for what, (d_s, d_m, d_a), (f_s, f_m, f_a) in rows:
            print(f"| {label} | {what} | {d_s:.2f} s, {d_m:.0f} / {d_a:.0f} MiB | {f_s:.2f} s, {f_m:.0f} / {f_a:.0f} MiB "
                  f"| {d_s / f_s:.2f}x |", flush=True)


WORK = tempfile.mkdtemp()
server, port = webdav_server(WORK)
try:
    print(f"lighttpd mod_webdav on 127.0.0.1 ({os.cpu_count()} cores); time, peak RSS / peak anonymous memory "
          "of the measured process")
    print("| workload | operation | dvc | fabric | fabric faster by |")
    print("| --- | --- | --- | --- | --- |")
    compare("default pipeline's outputs", 0, 0, default_outputs(WORK), port)
    compare(f"{BIG_MB} MiB file + {FILES} files of 1 KiB", BIG_MB, FILES, "-", port)
finally:
    server.kill()
    shutil.rmtree(WORK, ignore_errors=True)
