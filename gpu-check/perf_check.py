"""Issue 14's start and throughput figures on the device machine (pure cgroup v2, crun), through HTTP only.

gpu-check/server-check.sh with CHECK=perf starts the server from the carried archive (pinned to PERF_CPUS, the node
declaring that many CPUs) and runs this. It imports a busybox image (the carried static busybox) with
POST /api/v1/images, then, side by side in one run and pinned to the same CPUs:

- start: R rounds, alternating, of one warm `/bin/true` job (POST, then GET every 5 ms until it has ended) against a
  bare `RUNTIME run` of a bundle made by `runc spec` with the same rootfs, limits (1 CPU, 256 MiB, 64 pids) and a
  read-only root, for each carried runtime (runc and crun). Reported: the client's submit -> succeeded, the record's
  createdAt -> startedAt (submit -> process running) and createdAt -> finishedAt;
- throughput: N trivial jobs submitted at once (4 client threads), jobs/s from the first createdAt to the last
  finishedAt, against the bare runtimes running N containers two at a time; the server's own CPU (utime + stime of
  its process from /proc/PID/stat) per job, its children's (the runtime processes it waited for) and PostgreSQL's
  (every postgres process, plus what the postmaster collected from exited backends) beside it.

Standard library only; Python 3.8+. Writes OUT/perf-results.json and OUT/perf-summary.md.
"""
import argparse
import concurrent.futures
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from server_check import Api, CheckFailed, build_oci_archive, log, parse_time, wait_healthy

IMAGE = "perf/busybox:1"
FINAL = ("succeeded", "failed", "cancelled")
TICK = os.sysconf("SC_CLK_TCK")


def median(xs):
    return round(statistics.median(xs), 1) if xs else None


def pct(xs, p):
    if not xs:
        return None
    s = sorted(xs)
    return round(s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))], 1)


def ms_between(job, a, b):
    x, y = parse_time(job.get(a)), parse_time(job.get(b))
    return (y - x).total_seconds() * 1000 if x and y else None


def cpu_seconds(pid, children=False):
    """utime + stime (and with children, cutime + cstime) of one process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    own = int(fields[11]) + int(fields[12])
    kids = int(fields[13]) + int(fields[14])
    return (kids if children else own) / TICK


def postgres_cpu_seconds():
    """Every live postgres process's CPU, plus what each has collected from its exited children (backends)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % pid) as f:
                if f.read().strip() != "postgres":
                    continue
            total += cpu_seconds(int(pid)) + cpu_seconds(int(pid), children=True)
        except (FileNotFoundError, ProcessLookupError, IndexError):
            pass
    return total


class Perf:
    def __init__(self, a):
        self.a = a
        self.api = Api(a.url, a.key)
        self.results = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(), "cpus": a.cpus,
                        "rounds": a.rounds, "jobs": a.jobs}
        self.pin = ["taskset", "-c", a.cpus] if a.cpus else []

    # --- set-up --------------------------------------------------------------------------------------------------
    def wait_healthy(self):
        return wait_healthy(self.api, self.a.server_pid, 0.2)

    def rootfs(self):
        stage = os.path.join(self.a.work, "perf-rootfs")
        shutil.rmtree(stage, ignore_errors=True)
        os.makedirs(os.path.join(stage, "bin"))
        os.makedirs(os.path.join(stage, "etc"))
        shutil.copy2(self.a.busybox, os.path.join(stage, "bin", "busybox"))
        for tool in ("sh", "true", "sleep"):
            os.symlink("busybox", os.path.join(stage, "bin", tool))
        with open(os.path.join(stage, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n")
        return stage

    def import_image(self, stage):
        archive, info = build_oci_archive(stage, self.a.work, IMAGE, "perf-busybox.oci.tar")
        with open(archive, "rb") as body:
            status, text = self.api.request("POST", "/api/v1/images?name=" + IMAGE, body,
                                            headers={"Content-Type": "application/x-tar",
                                                     "Content-Length": str(os.path.getsize(archive))}, timeout=120)
        if status != 201:
            raise CheckFailed("POST /api/v1/images answered %d: %s" % (status, text[:1000]))
        return info

    def bundle(self, runtime, stage, name):
        """A bundle made by `runc spec`, given the job's limits and a read-only root; the same for both runtimes."""
        b = os.path.join(self.a.work, "perf-bundles", name)
        shutil.rmtree(b, ignore_errors=True)
        os.makedirs(b)
        subprocess.check_call([runtime, "spec", "--bundle", b])
        with open(os.path.join(b, "config.json")) as f:
            spec = json.load(f)
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["/bin/true"]
        spec["root"] = {"path": stage, "readonly": True}
        spec["linux"]["resources"] = {"memory": {"limit": 256 << 20}, "cpu": {"quota": 100000, "period": 100000},
                                      "pids": {"limit": 64}}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(spec, f)
        return b

    # --- one of each ---------------------------------------------------------------------------------------------
    def job_spec(self, name):
        return {"name": name, "image": IMAGE, "pullPolicy": "never", "command": ["/bin/true"],
                "resources": {"cpus": 1, "memory": "256Mi", "pids": 64}}

    def one_job(self, name):
        t = time.perf_counter()
        job = self.api.json("POST", "/api/v1/jobs", self.job_spec(name), expect=(201,))
        while True:
            j = self.api.job(job["id"])
            if j["state"] in FINAL:
                client_ms = (time.perf_counter() - t) * 1000
                break
            if time.perf_counter() - t > 60:
                raise CheckFailed("job %s did not end in 60 s: %s" % (job["id"], j["state"]))
            time.sleep(0.005)
        if j["state"] != "succeeded":
            raise CheckFailed("job %s ended %s: %s" % (j["id"], j["state"], j.get("message")))
        return {"client_ms": client_ms, "created_to_started_ms": ms_between(j, "createdAt", "startedAt"),
                "created_to_finished_ms": ms_between(j, "createdAt", "finishedAt")}

    def bare(self, runtime, bundle, cid):
        state = os.path.join(self.a.work, "perf-state", os.path.basename(runtime))
        t = time.perf_counter()
        p = subprocess.run(self.pin + [runtime, "--root", state, "run", "--bundle", bundle, cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        ms = (time.perf_counter() - t) * 1000
        if p.returncode != 0:
            raise CheckFailed("bare %s run %s exited %d: %s" % (runtime, cid, p.returncode, p.stdout.decode()[-500:]))
        return ms

    # --- the figures ---------------------------------------------------------------------------------------------
    def start(self, bundles):
        ours, bare = [], {name: [] for name in bundles}
        for i in range(self.a.rounds):
            order = [("ours", None)] + [(name, b) for name, b in bundles.items()]
            if i % 2:
                order.reverse()
            for name, b in order:
                if name == "ours":
                    ours.append(self.one_job("perf-start-%d" % i))
                else:
                    bare[name].append(self.bare(self.a.runtimes[name], b, "perf-bare-%s-%d" % (name, i)))
        r = {"client_submit_to_succeeded_ms": median([x["client_ms"] for x in ours]),
             "client_p90_ms": pct([x["client_ms"] for x in ours], 90),
             "record_created_to_started_ms": median([x["created_to_started_ms"] for x in ours]),
             "record_created_to_finished_ms": median([x["created_to_finished_ms"] for x in ours])}
        for name, xs in bare.items():
            r["bare_%s_run_ms" % name] = median(xs)
            r["bare_%s_p90_ms" % name] = pct(xs, 90)
        return r

    def throughput(self, tag):
        n = self.a.jobs
        server0, kids0, pg0 = cpu_seconds(self.a.server_pid), cpu_seconds(self.a.server_pid, True), postgres_cpu_seconds()
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda i: self.api.json("POST", "/api/v1/jobs", self.job_spec("perf-%s-%d" % (tag, i)),
                                                        expect=(201,))["id"], range(n)))
        submit_s = time.perf_counter() - t0
        pending = set(ids)
        jobs = {}
        deadline = time.time() + 300
        while pending:
            if time.time() > deadline:
                raise CheckFailed("%d of %d jobs had not ended after 300 s" % (len(pending), n))
            page = self.api.json("GET", "/api/v1/jobs?name=perf-%s-*&limit=1000" % tag)
            for j in page["items"]:
                if j["state"] in FINAL and j["id"] in pending:
                    pending.discard(j["id"])
                    jobs[j["id"]] = j
            time.sleep(0.2)
        server1, kids1, pg1 = cpu_seconds(self.a.server_pid), cpu_seconds(self.a.server_pid, True), postgres_cpu_seconds()
        failed = [j for j in jobs.values() if j["state"] != "succeeded"]
        if failed:
            raise CheckFailed("%d jobs did not succeed, e.g. %s" % (len(failed), json.dumps(failed[0])[:800]))
        first = min(parse_time(j["createdAt"]) for j in jobs.values())
        last = max(parse_time(j["finishedAt"]) for j in jobs.values())
        span = (last - first).total_seconds()
        return {"jobs": n, "submit_seconds": round(submit_s, 2), "span_seconds": round(span, 2),
                "jobs_per_second": round(n / span, 1),
                "server_cpu_ms_per_job": round((server1 - server0) * 1000 / n, 1),
                "server_children_cpu_ms_per_job": round((kids1 - kids0) * 1000 / n, 1),
                "postgres_cpu_ms_per_job": round((pg1 - pg0) * 1000 / n, 1)}

    def bare_throughput(self, name, runtime, bundle):
        n = self.a.jobs
        t = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: self.bare(runtime, bundle, "perf-tput-%s-%d" % (name, i)), range(n)))
        return round(n / (time.perf_counter() - t), 1)

    def run(self):
        t = time.time()
        try:
            health = self.wait_healthy()
            self.results["healthz"] = health
            log("STEP server-healthy: OK: runtime %s" % json.dumps(health.get("runtime")))
            stage = self.rootfs()
            self.results["image"] = self.import_image(stage)
            log("STEP image-import: OK")
            bundles = {name: self.bundle(path, stage, name) for name, path in self.a.runtimes.items()}
            self.one_job("perf-warm")  # the image's layer unpacked, the caches warm
            for name, b in list(bundles.items()):
                try:
                    self.bare(self.a.runtimes[name], b, "perf-warm-%s" % name)
                except CheckFailed as e:  # crun on a hybrid-cgroup host: that baseline is left out, and said so
                    log("bare %s cannot run here, left out: %s" % (name, e))
                    self.results.setdefault("baselines_left_out", {})[name] = str(e)
                    del bundles[name]
            self.results["start"] = self.start(bundles)
            log("STEP start: OK: %s" % json.dumps(self.results["start"]))
            self.results["throughput"] = self.throughput("tput")
            for name, b in bundles.items():
                self.results["throughput"]["bare_%s_two_at_a_time_jobs_per_second" % name] = self.bare_throughput(name, self.a.runtimes[name], b)
            log("STEP throughput: OK: %s" % json.dumps(self.results["throughput"]))
            ok = True
        except CheckFailed as e:
            log("STEP perf: FAILED: %s" % e)
            self.results["error"] = str(e)
            ok = False
        self.results["seconds"] = round(time.time() - t, 1)
        self.write()
        return 0 if ok else 1

    def write(self):
        with open(os.path.join(self.a.out, "perf-results.json"), "w") as f:
            json.dump(self.results, f, indent=1, default=str)
        r = self.results
        s, tp = r.get("start", {}), r.get("throughput", {})
        rt = (r.get("healthz") or {}).get("runtime") or {}
        lines = ["# Start and throughput (issue 14) on %s, CPUs %s, runtime %s %s" % (os.uname().nodename, r["cpus"] or "all",
                                                                                      rt.get("name"), rt.get("version")), ""]
        if "error" in r:
            lines += ["**FAILED**: " + r["error"], ""]
        lines += ["| what | BatchRunner | bare runc | bare crun |", "|---|---|---|---|",
                  "| submit -> succeeded, warm /bin/true, median (p90) ms | %s (%s) | %s (%s) | %s (%s) |" % (
                      s.get("client_submit_to_succeeded_ms"), s.get("client_p90_ms"), s.get("bare_runc_run_ms"),
                      s.get("bare_runc_p90_ms"), s.get("bare_crun_run_ms"), s.get("bare_crun_p90_ms")),
                  "| record: createdAt -> startedAt / -> finishedAt, median ms | %s / %s | | |" % (
                      s.get("record_created_to_started_ms"), s.get("record_created_to_finished_ms")),
                  "| trivial jobs/s (bare: two at a time) | %s | %s | %s |" % (
                      tp.get("jobs_per_second"), tp.get("bare_runc_two_at_a_time_jobs_per_second"),
                      tp.get("bare_crun_two_at_a_time_jobs_per_second")),
                  "| CPU ms per job: server / its runtime children / PostgreSQL | %s / %s / %s | | |" % (
                      tp.get("server_cpu_ms_per_job"), tp.get("server_children_cpu_ms_per_job"), tp.get("postgres_cpu_ms_per_job")),
                  "", "%d start rounds, %d throughput jobs, %.0f s" % (r["rounds"], r["jobs"], r["seconds"])]
        for name, why in r.get("baselines_left_out", {}).items():
            lines.append("bare %s left out: %s" % (name, why))
        with open(os.path.join(self.a.out, "perf-summary.md"), "w") as f:
            f.write("\n".join(lines) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--busybox", required=True, help="a static busybox: the jobs' and the bare containers' only binary")
    p.add_argument("--runtime", action="append", default=[], help="NAME=PATH of a bare baseline runtime (repeatable)")
    p.add_argument("--cpus", default="", help="taskset CPU list the bare runs are pinned to (the server's own)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--jobs", type=int, default=300)
    a = p.parse_args()
    a.runtimes = dict(r.split("=", 1) for r in a.runtime)
    os.makedirs(a.out, exist_ok=True)
    return Perf(a).run()


if __name__ == "__main__":
    sys.exit(main())
