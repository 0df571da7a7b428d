#!/bin/bash
# Full-server GPU check (issue 20), run as root from the repository root on the GPU machine, with the archive
# gpu-check/build-server.sh made on the build machine carried along (gpu-check/out/server-check.tar.xz):
#
#   OUT=/some/output/dir gpu-check/server-check.sh
#
# Unpacks the archive into WORK, makes its libraries available where the host lacks them, starts the server
# (self-contained .NET) with its embedded PostgreSQL from the carried binaries, then server_check.py builds the
# jobs' image from the host's PyTorch environment, imports it over HTTP and runs the GPU jobs (see README.md).
# About 2-3 minutes; hard limit 9 minutes. Output in OUT: run.log, summary.md, results.json, server.log,
# postgres.log, jobs/*.log.
#
# Environment (defaults for the GPU machine):
#   OUT          results directory                       (gpu-check/out/server-results)
#   WORK         scratch directory, emptied first         (/tmp/br-server-check)
#   ARCHIVE      the carried archive                      (gpu-check/out/server-check.tar.xz)
#   TORCH_DIR    host directory of the PyTorch environment, mounted read-only in jobs at /opt/torch  (/opt/torch)
#   TORCH_PYTHON its python3                              ($TORCH_DIR/.venv/bin/python3)
#   PORT         the server's port on 127.0.0.1           (18080)
#   RUNTIME      BATCHRUNNER_RUNTIME: auto, runc or crun  (auto: crun on a pure cgroup v2 host)
#   CHECK        gpu (the GPU checks, server_check.py) or perf (issue 14's start and throughput figures,
#                perf_check.py: no GPU needed; the server runs with its default workers)   (gpu)
#   PERF_CPUS    with CHECK=perf: the CPU list the server, its PostgreSQL and the bare runs are pinned to,
#                the node declaring that many CPUs                                          (0,1: two cores)
#   PERF_ROUNDS, PERF_JOBS  with CHECK=perf: start rounds and throughput jobs               (30, 300)
# Only for the local rehearsal (test-local.sh): GPU_CDI_DIR (test devices named by a CDI spec), NVIDIA_SMI (a fake
# nvidia-smi for sampling), SERVER_CPUS (the node's declared CPUs), MATMUL_SECONDS, FAKE=1 (labels the results).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out/server-results}
WORK=$(realpath -m "${WORK:-/tmp/br-server-check}")
ARCHIVE=${ARCHIVE:-$HERE/out/server-check.tar.xz}
TORCH_DIR=${TORCH_DIR:-/opt/torch}
TORCH_PYTHON=${TORCH_PYTHON:-$TORCH_DIR/.venv/bin/python3}
PORT=${PORT:-18080}
START=$(date +%s)
PGBIN=""
PGUSER=""
SERVER_PID=""
WORK_TMPFS=""
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "== stopping the server (SIGTERM)"
    kill -TERM "$SERVER_PID"
    for _ in $(seq 90); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$SERVER_PID" 2>/dev/null && { echo "the server did not stop in 45 s: SIGKILL"; kill -KILL "$SERVER_PID"; }
  fi
  # A server that died leaves its PostgreSQL running (pg_ctl daemonises it).
  if [ -n "$PGBIN" ] && [ -n "$PGUSER" ] && [ -f "$WORK/data/postgres/postmaster.pid" ]; then
    LD_LIBRARY_PATH=$WORK/missing-lib runuser -u "$PGUSER" -- "$PGBIN/pg_ctl" -D "$WORK/data/postgres" -m fast -w -t 30 stop || true
  fi
  # The cluster logs into DATA/postgres/log (the logging collector, one file per weekday).
  cat "$WORK"/data/postgres/log/*.log > "$OUT/postgres.log" 2>/dev/null || true
  if [ -n "$WORK_TMPFS" ]; then umount "$WORK" || echo "could not unmount the tmpfs on $WORK"; WORK_TMPFS=""; fi
}
trap stop_server EXIT
fail() { echo "STEP $1: FAILED: $2"; echo "== server-check FAILED after $(( $(date +%s) - START )) s"; exit 1; }
ok() { echo "STEP $1: OK${2:+: $2}"; }

echo "== host"
uname -a; id; (. /etc/os-release && echo "$PRETTY_NAME"); ldd --version | head -1
echo "cgroup: $(stat -fc %T /sys/fs/cgroup) ($( [ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo v1/hybrid))"
[ "$(id -u)" = 0 ] || fail preconditions "run as root (containers and the embedded PostgreSQL's user switch need it)"
[ -f "$ARCHIVE" ] || fail preconditions "$ARCHIVE missing: run gpu-check/build-server.sh on the build machine and carry gpu-check/out/server-check.tar.xz"
[ -x "$TORCH_PYTHON" ] || fail preconditions "no $TORCH_PYTHON (set TORCH_DIR / TORCH_PYTHON)"
"$TORCH_PYTHON" -c 'import sys; assert sys.version_info >= (3, 8)' || fail preconditions "$TORCH_PYTHON is not a Python >= 3.8"
CHECK=${CHECK:-gpu}
if [ "$CHECK" = perf ]; then
  echo "CHECK=perf: start and throughput figures; no GPU needed"
elif [ -n "${GPU_CDI_DIR:-}" ]; then
  echo "LOCAL REHEARSAL: GPUs from the CDI spec in $GPU_CDI_DIR, sampled with $NVIDIA_SMI"
else
  nvidia-smi -L 2>&1 | tee "$OUT/nvidia-smi-L.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || fail preconditions "nvidia-smi -L failed: no working NVIDIA driver here"
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then fail preconditions "port $PORT is taken (set PORT)"; fi

echo "== unpack $ARCHIVE ($(stat -c %s "$ARCHIVE") bytes) into $WORK"
# A previous run killed outright may have left mounts under WORK: never delete through them. WORK itself may be
# a mount point (the tmpfs below, or one the caller chose): it is emptied, not removed.
mkdir -p "$WORK" && chmod 0755 "$WORK"
findmnt -rn -o TARGET | awk -v w="$WORK" 'index($0, w "/") == 1' | sort -r | while read -r m; do umount -l "$m" || true; done
find "$WORK" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} + || fail unpack "cannot empty $WORK"
# The jobs' overlays need an upper directory that is not on overlayfs, and the carried binaries an exec mount.
if [ "$(stat -f -c %T "$WORK")" = overlayfs ]; then
  mount -t tmpfs -o mode=0755,size=50% tmpfs "$WORK" || fail unpack "$WORK is on overlayfs and a tmpfs cannot be mounted there"
  WORK_TMPFS=1; echo "$WORK is on overlayfs: using a tmpfs there"
fi
findmnt -T "$WORK" -no OPTIONS | tr ',' '\n' | grep -qx noexec && fail unpack "$WORK is on a noexec mount: set WORK to another directory"
t=$(date +%s%N)
# Python's tarfile and lzma, not xz: a minimal Ubuntu may lack xz-utils, and the venv's Python is there for sure.
"$TORCH_PYTHON" -c '
import sys, tarfile
kw = {"filter": "tar"} if hasattr(tarfile, "data_filter") else {}
with tarfile.open(sys.argv[1], "r:xz") as t:
    t.extractall(sys.argv[2], **kw)' "$ARCHIVE" "$WORK" || fail unpack "could not unpack $ARCHIVE"
W=$WORK/server-check
ok unpack "$(du -sh "$W" | cut -f1) in $(( ($(date +%s%N) - t) / 1000000 )) ms"
cat "$W/MANIFEST.txt"
PGBIN=$(ls -d "$W"/postgresql/usr/lib/postgresql/*/bin | head -1)

echo "== libraries this host lacks"
# runc re-executes itself ("runc init") with an empty environment, so its libraries must be in the loader's
# cache: those the host lacks are copied into /usr/local/lib (as gpu-check/run.sh does). Everything else (the
# server, PostgreSQL) inherits LD_LIBRARY_PATH, so theirs are linked into WORK/missing-lib and the host stays as is.
for pass in 1 2 3 4 5; do
  missing=$(ldd "$W"/runtimes/*/* 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
  [ -z "$missing" ] && break
  for lib in $missing; do
    [ -f "$W/lib/$lib" ] || fail libraries "the runtimes need $lib, which this host lacks and the archive does not carry"
    echo "installing $lib into /usr/local/lib (for runc/crun)"; cp "$W/lib/$lib" /usr/local/lib/
  done
  ldconfig
done
mkdir -p "$WORK/missing-lib"
for pass in 1 2 3 4 5 6; do
  missing=$(LD_LIBRARY_PATH=$WORK/missing-lib ldd "$PGBIN"/* "$W"/postgresql/usr/lib/postgresql/*/lib/*.so \
              "$W"/batchrunner/batchrunner "$W"/batchrunner/*.so 2>/dev/null | awk '/not found/ {print $1}' | sort -u)
  [ -z "$missing" ] && break
  for lib in $missing; do
    [ -f "$W/lib/$lib" ] || fail libraries "PostgreSQL or the server needs $lib, which this host lacks and the archive does not carry"
    ln -sf "$W/lib/$lib" "$WORK/missing-lib/$lib"
  done
done
[ -z "$missing" ] || fail libraries "still missing after 6 passes: $missing"
LACKED=$(ls "$WORK/missing-lib" | tr '\n' ' ')
ok libraries "this host lacked, for PostgreSQL and the server: ${LACKED:-nothing}"
echo "$LACKED" > "$OUT/host-lacked-libraries.txt"

PATH=$W/runtimes/crun:$W/runtimes/runc:$PATH
export PATH
for rt in runc crun; do
  [ "$(command -v $rt)" = "$W/runtimes/$rt/$rt" ] && "$rt" --version >/dev/null || fail runtimes "the carried $rt does not run here"
  echo "$rt: $(command -v $rt): $("$rt" --version | head -1)"
done
PGUSER=postgres
id -u postgres >/dev/null 2>&1 || PGUSER=nobody
echo "embedded PostgreSQL runs as: $PGUSER ($(id "$PGUSER"))"

KEY=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

echo "== start the server on 127.0.0.1:$PORT"
GPU_ENV=()
[ -n "${GPU_CDI_DIR:-}" ] && GPU_ENV+=("BatchRunner__Gpus__CdiDirectories__0=$GPU_CDI_DIR")
[ -n "${NVIDIA_SMI:-}" ] && GPU_ENV+=("BatchRunner__Gpus__NvidiaSmiPath=$NVIDIA_SMI")
[ -n "${SERVER_CPUS:-}" ] && GPU_ENV+=("BATCHRUNNER_CPUS=$SERVER_CPUS")
# Per-job disk limits need loop devices and mkfs.ext4 (e2fsprogs): a container without /dev/loop-control would
# make the worker refuse to start, so the check then runs jobs without disk limits and says so.
if [ ! -e /dev/loop-control ] || ! command -v mkfs.ext4 >/dev/null 2>&1; then
  echo "per-job disk limits off here (no /dev/loop-control or no mkfs.ext4): BATCHRUNNER_DISK_ENFORCE=false"
  GPU_ENV+=("BATCHRUNNER_DISK_ENFORCE=false")
fi
PIN=()
if [ "$CHECK" = perf ]; then
  PERF_CPUS=${PERF_CPUS:-0,1}
  PIN=(taskset -c "$PERF_CPUS")
  GPU_ENV+=("BATCHRUNNER_CPUS=$(taskset -c "$PERF_CPUS" nproc)")
else
  GPU_ENV+=("BATCHRUNNER_WORKERS=4")
fi
"${PIN[@]}" env BATCHRUNNER_DATA_DIR="$WORK/data" BATCHRUNNER_API_KEY="$KEY" BATCHRUNNER_URLS="http://127.0.0.1:$PORT" \
    BATCHRUNNER_NODE_NAME=gpu-check BATCHRUNNER_RUNTIME="${RUNTIME:-auto}" \
    BATCHRUNNER_POSTGRES_BIN="$PGBIN" BATCHRUNNER_POSTGRES_USER="$PGUSER" LD_LIBRARY_PATH="$WORK/missing-lib" \
    BatchRunner__Isolation__Datasets__torch="$TORCH_DIR" BatchRunner__Gpus__SampleSeconds=1 \
    "${GPU_ENV[@]}" "$W/batchrunner/batchrunner" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
echo "server pid $SERVER_PID"

echo "== checks through the HTTP API"
FAKE_ARG=(); [ "${FAKE:-}" = 1 ] && FAKE_ARG=(--fake)
if [ "$CHECK" = perf ]; then
  timeout 420 "${PIN[@]}" "$TORCH_PYTHON" "$HERE/perf_check.py" --url "http://127.0.0.1:$PORT" --key "$KEY" --out "$OUT" \
    --work "$WORK" --server-pid "$SERVER_PID" --busybox "$W/tools/busybox" --cpus "$PERF_CPUS" \
    --runtime "runc=$W/runtimes/runc/runc" --runtime "crun=$W/runtimes/crun/crun" \
    --rounds "${PERF_ROUNDS:-30}" --jobs "${PERF_JOBS:-300}"
else
timeout 420 "$TORCH_PYTHON" "$HERE/server_check.py" --url "http://127.0.0.1:$PORT" --key "$KEY" --out "$OUT" --work "$WORK" \
  --torch-dir "$TORCH_DIR" --torch-python "$TORCH_PYTHON" --server-pid "$SERVER_PID" \
  --matmul-seconds "${MATMUL_SECONDS:-10}" "${FAKE_ARG[@]}"
fi
rc=$?
[ $rc -eq 124 ] && echo "STEP checks: FAILED: server_check.py ran past 420 s"
if ! kill -0 "$SERVER_PID" 2>/dev/null; then echo "the server exited early; the end of server.log:"; tail -30 "$OUT/server.log"; fi
grep -E '"(Level|LogLevel)":"(Error|Critical)"|^(fail|crit):' "$OUT/server.log" | head -20
stop_server
trap - EXIT
echo
cat "$OUT/summary.md" "$OUT/perf-summary.md" 2>/dev/null
echo "== server-check $([ $rc = 0 ] && echo OK || echo FAILED) after $(( $(date +%s) - START )) s; results in $OUT"
exit $rc
