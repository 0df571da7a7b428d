"""The API half of the full-server GPU check (gpu-check/server-check.sh starts the server, then runs this).

Builds the jobs' root filesystem from the host's PyTorch environment, imports it with POST /api/v1/images, and
checks through HTTP only: two gpus:1 jobs on a one-GPU node (the first a ~10 s matmul loop, the second waits
for it), each seeing exactly one device; usage.gpus; the per-job GPU series in /metrics while the job runs
and not after; a gpus:0 job without GPU; gpus:2 refused with 400. Writes OUT/results.json and OUT/summary.md.

Standard library only (the GPU machine has no package registry); runs on Python 3.8+.
Every wait has a deadline; each check prints "STEP <name>: OK|FAILED: <why>".
"""
import argparse
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

IMAGE_NAME = "gpu-check/torch-host:1"
CONTAINER_TORCH_DIR = "/opt/torch"
# Driver files come only from the server's GPU injection, never from the image.
DRIVER_FILE = re.compile(r"^(libcuda\.|libcudadebugger\.|libnvidia-|libnvcuvid\.|libnvoptix\.|nvidia-)")

# What each job runs (python3 -c JOB_SCRIPT SECONDS): what it sees of GPUs, then SECONDS of 8192² matmuls.
JOB_SCRIPT = r'''
import json, os, re, subprocess, sys, time
seconds = float(sys.argv[1])
r = {"devices": sorted(d for d in os.listdir("/dev") if d.startswith("nvidia")),
     "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
     "nvidia_visible_devices": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
try:
    p = subprocess.run(["nvidia-smi", "-L"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    r["nvidia_smi_L"] = p.stdout.strip().splitlines()
    r["nvidia_smi_exit"] = p.returncode
except Exception as e:
    r["nvidia_smi_L"] = []
    r["nvidia_smi_exit"] = "%s: %s" % (type(e).__name__, e)
t = time.time()
import torch
r["torch_import_seconds"] = round(time.time() - t, 2)
r["torch"] = torch.__version__
r["cuda_available"] = torch.cuda.is_available()
r["device_count"] = torch.cuda.device_count() if r["cuda_available"] else 0
if r["cuda_available"] and seconds > 0:
    r["device_name"] = torch.cuda.get_device_name(0)
    n = 8192
    a = torch.randn(n, n, device="cuda")
    b = torch.randn(n, n, device="cuda")
    torch.cuda.synchronize()
    t = time.time()
    iters = 0
    while time.time() - t < seconds:
        c = a @ b
        iters += 1
        if iters % 10 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    elapsed = time.time() - t
    r.update(matmuls=iters, matmul_seconds=round(elapsed, 2), tflops=round(2 * n ** 3 * iters / elapsed / 1e12, 1),
             max_memory_allocated_bytes=torch.cuda.max_memory_allocated())
print("RESULT " + json.dumps(r), flush=True)
'''


class CheckFailed(Exception):
    """A step that later steps cannot do without."""


def log(msg):
    print(msg, flush=True)


class Api:
    def __init__(self, url, key):
        self.url = url.rstrip("/")
        self.key = key

    def request(self, method, path, body=None, headers=None, timeout=60, auth=True):
        h = dict(headers or {})
        if auth:
            h["Authorization"] = "Bearer " + self.key
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def json(self, method, path, body=None, expect=(200,), **kw):
        status, text = self.request(method, path, body, **kw)
        if status not in expect:
            raise CheckFailed("%s %s answered %d: %s" % (method, path, status, text[:2000]))
        return json.loads(text) if text else None

    def job(self, job_id):
        return self.json("GET", "/api/v1/jobs/" + job_id)

    def metrics(self):
        status, text = self.request("GET", "/metrics", auth=False)
        if status != 200:
            raise CheckFailed("/metrics answered %d" % status)
        return text


def parse_time(s):
    """ISO 8601 from .NET (7 fractional digits, Z) on Python 3.8+."""
    if not s:
        return None
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", s)
    if not m:
        raise ValueError("unexpected time " + s)
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    tz = m.group(3) or "Z"
    tz = "+00:00" if tz == "Z" else tz
    return datetime.datetime.fromisoformat("%s.%s%s" % (m.group(1), frac, tz))


def until(probe, done, timeout, what, interval=0.5):
    deadline = time.time() + timeout
    last = probe()
    while not done(last):
        if time.time() > deadline:
            raise CheckFailed("timed out after %d s waiting for %s; last: %s" % (timeout, what, str(last)[:1500]))
        time.sleep(interval)
        last = probe()
    return last


def wait_healthy(api, server_pid, interval):
    """/healthz's document once it answers 200; fails at once if the server process has exited."""
    def probe():
        if server_pid is not None and not os.path.exists("/proc/%d" % server_pid):
            raise CheckFailed("the server exited; see server.log")
        try:
            return api.request("GET", "/healthz", auth=False, timeout=5)
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            return (0, str(e))
    status, text = until(probe, lambda r: r[0] == 200, 120, "/healthz to answer 200", interval)
    return json.loads(text)


# ---------------------------------------------------------------------------------------------------------------
# The jobs' root filesystem: the host's Python that the venv in TORCH_DIR uses (interpreter, standard library), every
# shared library the interpreter and the venv's native modules load from outside TORCH_DIR (ldd), /bin/sh, and a
# minimal /etc. TORCH_DIR itself is not copied: jobs mount it read-only as the dataset "torch". This is what the
# probe's overlay of the host's / gave its containers, narrowed to what these jobs use.
# ---------------------------------------------------------------------------------------------------------------

def under(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def symlink_chain(path):
    """Every path a chain of symlinks passes through, ending with the real file."""
    seen = []
    p = os.path.abspath(path)
    while os.path.islink(p) and p not in seen:
        seen.append(p)
        p = os.path.normpath(os.path.join(os.path.dirname(p), os.readlink(p)))
    seen.append(os.path.realpath(p))
    return seen


def elf_files(root, skip=()):
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
        for f in files:
            if ".so" in f:
                p = os.path.join(d, f)
                if not os.path.islink(p) and os.path.isfile(p):
                    out.append(p)
    return out


def ldd_closure(files):
    """Resolved libraries (path as ld.so names it) of every file; 'not found' sonames separately."""
    found, missing = set(), set()

    def one(batch):
        p = subprocess.run(["ldd"] + batch, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        return p.stdout

    batches = [files[i:i + 64] for i in range(0, len(files), 64)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 2)) as pool:
        for text in pool.map(one, batches):
            for line in text.splitlines():
                line = line.strip()
                m = re.match(r"^(\S+) => (/\S+) \(0x", line)
                if m:
                    found.add(m.group(2))
                    continue
                m = re.match(r"^(\S+) => not found", line)
                if m:
                    missing.add(m.group(1))
                    continue
                m = re.match(r"^(/\S+) \(0x", line)  # the dynamic loader
                if m:
                    found.add(m.group(1))
    return found, missing


class Stage:
    def __init__(self, root):
        self.root = root
        self.files = 0

    def dest(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def add(self, path):
        """path as itself (a symlink stays a symlink) under its canonical parent, then its target if it is a link."""
        canonical = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        dst = self.dest(canonical)
        if os.path.lexists(dst):
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if os.path.islink(canonical):
            os.symlink(os.readlink(canonical), dst)
            self.add(os.path.realpath(canonical))
        else:
            shutil.copy2(canonical, dst)
        self.files += 1

    def add_tree(self, path, skip=()):
        """A directory as it is (symlinks stay symlinks), less the subdirectories in skip."""
        canonical = os.path.realpath(path)
        dst = self.dest(canonical)
        if os.path.exists(dst):
            return
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copytree(canonical, dst, symlinks=True,
                        ignore=lambda d, names: [n for n in names if os.path.join(d, n) in skip])
        for _, _, files in os.walk(dst):
            self.files += len(files)


def build_rootfs(torch_dir, torch_python, stage_dir):
    t0 = time.time()
    info = json.loads(subprocess.check_output([torch_python, "-c",
        "import json, sys; print(json.dumps({'path': sys.path, 'version': sys.version.split()[0], 'base_prefix': sys.base_prefix}))"],
        universal_newlines=True))
    stage = Stage(stage_dir)
    # Merged-usr hosts: /bin, /lib, /lib64, /sbin are links into /usr; the image has the same links.
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.islink("/" + name):
            os.makedirs(stage_dir, exist_ok=True)
            os.symlink(os.readlink("/" + name), stage.dest("/" + name))
    chain = [p for p in symlink_chain(torch_python) if not under(p, torch_dir)]
    for p in chain:
        stage.add(p)
    on_path = set(os.path.realpath(p) for p in info["path"] if p)
    py_dirs = sorted(p for p in on_path if os.path.isdir(p) and not under(p, torch_dir))  # parents before children
    # Not copied: the interpreter's own site-packages (inside its stdlib dir; not on the venv's path), and the
    # standard library's regression tests and static-linking files (pyenv or uv builds ship them; 170 MB here).
    unused = set(os.path.join(p, x) for p in py_dirs for x in ("site-packages", "dist-packages")) - on_path
    for p in py_dirs:
        if os.path.isfile(os.path.join(p, "os.py")):
            unused.update(os.path.join(p, x) for x in os.listdir(p) if x == "test" or x.startswith("config-"))
    for p in py_dirs:
        stage.add_tree(p, unused)
    for p in info["path"]:
        if p.endswith(".zip") and os.path.isfile(p) and not under(p, torch_dir):
            stage.add(p)
    sh = symlink_chain("/bin/sh")
    for p in sh:
        stage.add(p)
    elves = [chain[-1], sh[-1]] + [f for d in py_dirs for f in elf_files(d, unused)] + elf_files(torch_dir)
    libs, not_found = ldd_closure(elves)
    skipped = []
    for lib in sorted(libs):
        if under(lib, torch_dir):
            continue
        if DRIVER_FILE.match(os.path.basename(lib)) or under(lib, "/usr/local/nvidia"):
            skipped.append(lib)
            continue
        stage.add(lib)
    # /etc: users for root and nobody; the host's loader configuration (the GPU injection's ldconfig hook reads it).
    etc = stage.dest("/etc")
    os.makedirs(os.path.join(etc, "ld.so.conf.d"), exist_ok=True)
    with open(os.path.join(etc, "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    with open(os.path.join(etc, "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    if os.path.isfile("/etc/ld.so.conf"):
        shutil.copy2("/etc/ld.so.conf", os.path.join(etc, "ld.so.conf"))
    if os.path.isdir("/etc/ld.so.conf.d"):
        for f in os.listdir("/etc/ld.so.conf.d"):
            if f.endswith(".conf") and os.path.isfile(os.path.join("/etc/ld.so.conf.d", f)):
                shutil.copy2(os.path.join("/etc/ld.so.conf.d", f), os.path.join(etc, "ld.so.conf.d", f))
    for d in ("tmp", "root", "dev", "proc", "sys", "outputs", CONTAINER_TORCH_DIR.lstrip("/")):
        os.makedirs(os.path.join(stage_dir, d), exist_ok=True)
    os.chmod(os.path.join(stage_dir, "tmp"), 0o1777)
    ld_cache = subprocess.run(["/sbin/ldconfig", "-r", stage_dir], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    size = sum(os.lstat(os.path.join(d, f)).st_size for d, _, fs in os.walk(stage_dir) for f in fs)
    return {
        "python": info["version"], "python_base_prefix": info["base_prefix"], "interpreter": chain,
        "python_dirs": py_dirs, "elf_files_scanned": len(elves), "libraries": len(libs),
        "not_found_by_ldd": sorted(not_found), "driver_files_left_to_injection": skipped,
        "ldconfig": "ok" if ld_cache.returncode == 0 else ld_cache.stdout.strip()[:500],
        "files": stage.files, "bytes": size, "seconds": round(time.time() - t0, 1),
    }


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def build_oci_archive(stage_dir, work, image_name=IMAGE_NAME, archive_name="torch-host.oci.tar"):
    """An OCI image layout (one uncompressed layer) in a tar: what POST /api/v1/images takes."""
    t0 = time.time()
    layout = os.path.join(work, "layout")
    shutil.rmtree(layout, ignore_errors=True)
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    layer = os.path.join(layout, "blobs", "sha256", "layer.tmp")
    entries = sorted(os.listdir(stage_dir))
    subprocess.check_call(["tar", "-C", stage_dir, "--numeric-owner", "--owner=0", "--group=0", "-cf", layer] + entries)
    layer_digest = sha256_file(layer)
    layer_size = os.path.getsize(layer)
    os.rename(layer, os.path.join(layout, "blobs", "sha256", layer_digest))
    config = write_blob(layout, json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]},
    }).encode())
    manifest = write_blob(layout, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + layer_digest, "size": layer_size}],
    }).encode())
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
                   annotations={"org.opencontainers.image.ref.name": image_name.rsplit(":", 1)[1]})]}, f)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    archive = os.path.join(work, archive_name)
    subprocess.check_call(["tar", "-C", layout, "-cf", archive, "oci-layout", "index.json", "blobs"])
    shutil.rmtree(layout)
    return archive, {"layer_bytes": layer_size, "layer_digest": "sha256:" + layer_digest,
                     "archive_bytes": os.path.getsize(archive), "seconds": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------------------------------------------

class Check:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.url, args.key)
        self.results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(), "fake": args.fake, "steps": {}}
        self.failed = []
        self.t0 = time.time()

    def step(self, name, ok, detail=""):
        self.results["steps"][name] = {"ok": bool(ok), "detail": detail, "at_seconds": round(time.time() - self.t0, 1)}
        log("STEP %s: %s%s" % (name, "OK" if ok else "FAILED", (": " + detail) if detail else ""))
        if not ok:
            self.failed.append(name)
        return ok

    def fatal(self, name, e):
        self.step(name, False, str(e))
        raise CheckFailed(name)

    def wait_healthy(self):
        return wait_healthy(self.api, self.args.server_pid, 0.5)

    def submit(self, name, gpus, seconds, cpus, memory):
        spec = {
            "name": name, "image": IMAGE_NAME, "pullPolicy": "never",
            "command": [self.args.container_python, "-c", JOB_SCRIPT, str(seconds)],
            "resources": {"gpus": gpus, "cpus": cpus, "memory": memory},
            "volumes": [{"dataset": "torch", "path": CONTAINER_TORCH_DIR}],
            "timeoutSeconds": 300,
        }
        job = self.api.json("POST", "/api/v1/jobs", spec, expect=(201,))
        log("submitted %s: %s (gpus %d)" % (name, job["id"], gpus))
        return job["id"]

    def wait_final(self, job_id, timeout):
        return until(lambda: self.api.job(job_id), lambda j: j["state"] in ("succeeded", "failed", "cancelled"), timeout,
                     "job %s to end" % job_id, 0.5)

    def job_result(self, name, job):
        status, stdout = self.api.request("GET", "/api/v1/jobs/%s/logs?stream=stdout" % job["id"])
        _, stderr = self.api.request("GET", "/api/v1/jobs/%s/logs?stream=stderr" % job["id"])
        os.makedirs(os.path.join(self.args.out, "jobs"), exist_ok=True)
        with open(os.path.join(self.args.out, "jobs", name + ".log"), "w") as f:
            f.write("== job\n%s\n== stdout\n%s\n== stderr\n%s\n" % (json.dumps(job, indent=1), stdout, stderr))
        lines = [l for l in stdout.splitlines() if l.startswith("RESULT ")]
        seen = json.loads(lines[-1][len("RESULT "):]) if lines else None
        self.results.setdefault("jobs", {})[name] = {"job": job, "seen": seen, "stderr_tail": stderr[-3000:]}
        return seen

    def one_gpu(self, name, job, seen, uuid):
        """Succeeded, and saw exactly one GPU: one /dev/nvidiaN, CUDA_VISIBLE_DEVICES=0, one nvidia-smi line, one CUDA device."""
        if job["state"] != "succeeded" or seen is None:
            return self.step(name + "-one-device", False, "state %s, reason %s, message %s; no RESULT line (see jobs/%s.log)"
                             % (job["state"], job.get("reason"), job.get("message"), name))
        gpu_nodes = [d for d in seen["devices"] if re.match(r"^nvidia\d+$", d)]
        smi = [l for l in seen["nvidia_smi_L"] if l.startswith("GPU ")]
        ok = (len(gpu_nodes) == 1 and seen["cuda_visible_devices"] == "0" and len(smi) == 1
              and seen["cuda_available"] and seen["device_count"] == 1 and seen.get("nvidia_visible_devices") == uuid)
        return self.step(name + "-one-device", ok, "devices %s, CUDA_VISIBLE_DEVICES=%s, NVIDIA_VISIBLE_DEVICES=%s, nvidia-smi -L %s, "
                         "torch %s cuda %s count %s %s, %s matmuls in %s s (%s TFLOPS)" % (
                             seen["devices"], seen["cuda_visible_devices"], seen.get("nvidia_visible_devices"), smi,
                             seen["torch"], seen["cuda_available"], seen["device_count"], seen.get("device_name"),
                             seen.get("matmuls"), seen.get("matmul_seconds"), seen.get("tflops")))

    def run(self):
        a = self.args
        try:
            try:
                stage_dir = os.path.join(a.work, "rootfs")
                shutil.rmtree(stage_dir, ignore_errors=True)
                rootfs = build_rootfs(a.torch_dir, a.torch_python, stage_dir)
                archive, oci = build_oci_archive(stage_dir, a.work)
                shutil.rmtree(stage_dir)
                self.results["image_build"] = dict(rootfs, **oci)
                self.step("image-build", True, "%d files, %.0f MB layer from the host's Python %s and %d libraries, in %.1f s; "
                          "driver files left to the GPU injection: %d" % (rootfs["files"], oci["layer_bytes"] / 1e6, rootfs["python"],
                                                                        rootfs["libraries"], rootfs["seconds"] + oci["seconds"],
                                                                        len(rootfs["driver_files_left_to_injection"])))
            except (subprocess.CalledProcessError, OSError, ValueError) as e:
                self.fatal("image-build", e)

            try:
                health = self.wait_healthy()
            except CheckFailed as e:
                self.fatal("server-healthy", e)
            self.results["healthz"] = health
            gpus = (health.get("gpus") or {})
            self.step("server-healthy", health.get("status") == "ok", "database %s, runtime %s %s (%s), GPUs %s from %s: %s" % (
                health.get("database"), (health.get("runtime") or {}).get("name"), (health.get("runtime") or {}).get("version"),
                (health.get("runtime") or {}).get("selection"), gpus.get("count"), gpus.get("source"),
                [d.get("model") for d in gpus.get("devices", [])]))
            if gpus.get("count") != 1:
                self.fatal("one-gpu-node", "this check expects a node with exactly one GPU; the server found %s" % gpus.get("count"))
            uuid = gpus["devices"][0]["uuid"]

            t = time.time()
            with open(archive, "rb") as body:
                status, text = self.api.request("POST", "/api/v1/images?name=" + IMAGE_NAME, body,
                                                headers={"Content-Type": "application/x-tar", "Content-Length": str(os.path.getsize(archive))},
                                                timeout=600)
            import_seconds = round(time.time() - t, 1)
            self.results["image_import"] = {"status": status, "body": text[:2000], "seconds": import_seconds}
            if status != 201:
                self.fatal("image-import", "POST /api/v1/images answered %d: %s" % (status, text[:1000]))
            self.step("image-import", True, "201 in %.1f s: %s" % (import_seconds, text))

            # gpus:2 on a one-GPU node: refused at submission, naming the resource.
            spec = {"image": IMAGE_NAME, "command": ["true"], "resources": {"gpus": 2}}
            status, text = self.api.request("POST", "/api/v1/jobs", spec)
            errors = json.loads(text).get("errors", {}) if text.startswith("{") else {}
            self.results["gpus2"] = {"status": status, "body": text}
            self.step("gpus-2-refused", status == 400 and "resources.gpus" in errors, "%d %s" % (status, errors.get("resources.gpus")))

            # The second GPU job and the gpus:0 job go in once the first runs: two jobs submitted together may start in
            # either order (several workers fetch at once), and the check is about the one submitted second waiting.
            first = self.submit("first-gpu", 1, a.matmul_seconds, a.cpus, a.memory)
            until(lambda: self.api.job(first), lambda j: j["state"] in ("running", "succeeded", "failed", "cancelled"), 180,
                  "the first GPU job to run", 0.25)
            second = self.submit("second-gpu", 1, 3, a.cpus, a.memory)
            nogpu = self.submit("no-gpu", 0, 0, 1, "4Gi")

            # While the first runs: the second stays queued, and /metrics has the first's GPU series.
            second_states, series = set(), None
            deadline = time.time() + 300
            while time.time() < deadline:
                if self.api.job(first)["state"] != "running":
                    break
                state2 = self.api.job(second)["state"]
                # Counted only if the first was still running after it was read: the GPU is freed as the first ends.
                if self.api.job(first)["state"] == "running":
                    second_states.add(state2)
                if series is None:
                    m = self.api.metrics()
                    lines = [l for l in m.splitlines() if 'job_id="%s"' % first in l]
                    if any(l.startswith("batchrunner_gpu_job_info{") for l in lines):
                        series = {"job_lines": lines,
                                  "gpu_lines": [l for l in m.splitlines() if l.startswith("batchrunner_gpu_") and "job_id" not in l]}
                time.sleep(0.5)
            self.results["metrics_while_running"] = series
            self.results["second_states_while_first_ran"] = sorted(second_states)
            self.step("metrics-while-running", series is not None,
                      "%d series with the job's id, e.g. %s; GPU series: %s" % (len(series["job_lines"]), [l for l in series["job_lines"] if l.startswith("batchrunner_gpu_job_info")],
                                                                                 [l for l in series["gpu_lines"] if "utilization" in l or "memory_used" in l])
                      if series else "no batchrunner_gpu_job_info series with job_id=%s while it ran" % first)
            self.step("second-waits", second_states <= {"queued"} and bool(second_states),
                      "the second job's states while the first ran: %s" % sorted(second_states))

            j1 = self.wait_final(first, 300)
            ended = time.time()
            cleared = until(lambda: [l for l in self.api.metrics().splitlines() if 'job_id="%s"' % first in l],
                            lambda lines: not lines, 30, "the first job's series to go from /metrics", 0.25)
            self.step("metrics-removed-after", cleared == [], "no series with its job_id (GPU or container) %.1f s after it ended" % (time.time() - ended))
            seen1 = self.job_result("first-gpu", j1)
            self.one_gpu("first-gpu", j1, seen1, uuid)
            g = (j1.get("usage") or {}).get("gpus") or {}
            self.results["usage_gpus"] = g
            self.step("usage-gpus", g.get("samples", 0) >= 2 and (g.get("peakUtilizationPercent") or 0) > 0
                      and g.get("meanUtilizationPercent") is not None and (g.get("peakMemoryBytes") or 0) > 0,
                      "usage.gpus = %s" % json.dumps(g))

            j2 = self.wait_final(second, 300)
            seen2 = self.job_result("second-gpu", j2)
            self.one_gpu("second-gpu", j2, seen2, uuid)
            s2, f1 = parse_time(j2.get("startedAt")), parse_time(j1.get("finishedAt"))
            self.step("second-ran-after-first", s2 is not None and f1 is not None and s2 >= f1,
                      "first finished %s, second started %s" % (j1.get("finishedAt"), j2.get("startedAt")))

            j3 = self.wait_final(nogpu, 300)
            seen3 = self.job_result("no-gpu", j3)
            self.step("no-gpu-sees-none", j3["state"] == "succeeded" and seen3 is not None and not seen3["devices"]
                      and not seen3["cuda_available"] and not seen3.get("nvidia_visible_devices"),
                      "state %s; devices %s, torch cuda available %s, nvidia-smi: %s" % (
                          j3["state"], seen3 and seen3["devices"], seen3 and seen3["cuda_available"], seen3 and seen3["nvidia_smi_exit"]))
            self.results["timeline_seconds"] = {
                "first_queue_to_start": self.seconds_between(j1, "createdAt", "startedAt"),
                "first_run": self.seconds_between(j1, "startedAt", "finishedAt"),
                "second_run": self.seconds_between(j2, "startedAt", "finishedAt"),
                "no_gpu_run": self.seconds_between(j3, "startedAt", "finishedAt"),
            }
        except CheckFailed as e:
            if str(e) not in self.results["steps"]:
                self.step("aborted", False, str(e))
        except Exception as e:  # a bug or an unexpected answer: recorded, never a silent "all OK"
            self.step("aborted", False, "%s: %s" % (type(e).__name__, e))
            raise
        finally:
            self.results["seconds"] = round(time.time() - self.t0, 1)
            self.results["failed_steps"] = self.failed
            self.write()
        return 1 if self.failed else 0

    @staticmethod
    def seconds_between(job, a, b):
        x, y = parse_time(job.get(a)), parse_time(job.get(b))
        return round((y - x).total_seconds(), 2) if x and y else None

    def write(self):
        with open(os.path.join(self.args.out, "results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)
        r = self.results
        lines = ["# Full-server GPU check: %s (%s)" % ("all steps OK" if not self.failed else "FAILED: " + ", ".join(self.failed),
                                                     "LOCAL REHEARSAL with test devices, a fake nvidia-smi and a fake torch" if r["fake"] else "real GPU"),
                 "", "started %s, %.0f s" % (r["started"], r["seconds"]), ""]
        for name, s in r["steps"].items():
            lines.append("- `%s` %s: %s" % (name, "OK" if s["ok"] else "**FAILED**", s["detail"]))
        if "timeline_seconds" in r:
            lines += ["", "timeline (s): " + json.dumps(r["timeline_seconds"])]
        with open(os.path.join(self.args.out, "summary.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--torch-dir", required=True, help="host directory mounted as the dataset 'torch' at /opt/torch")
    p.add_argument("--torch-python", required=True, help="the venv's python3 on the host, inside --torch-dir")
    p.add_argument("--server-pid", type=int)
    p.add_argument("--matmul-seconds", type=float, default=10)
    p.add_argument("--cpus", type=float, default=2)
    p.add_argument("--memory", default="12Gi")
    p.add_argument("--fake", action="store_true", help="label the results as a local rehearsal")
    a = p.parse_args()
    a.torch_dir = os.path.abspath(a.torch_dir)
    a.torch_python = os.path.abspath(a.torch_python)
    if not under(a.torch_python, a.torch_dir):
        p.error("--torch-python must be inside --torch-dir")
    a.container_python = CONTAINER_TORCH_DIR + a.torch_python[len(a.torch_dir):]
    os.makedirs(a.out, exist_ok=True)
    return Check(a).run()


if __name__ == "__main__":
    sys.exit(main())
