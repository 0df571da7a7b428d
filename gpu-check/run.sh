#!/bin/bash
# Real-GPU check, run as root on the GPU machine from the repository root (after gpu-check/build.sh ran on
# a build machine and gpu-check/out/ was copied along):   OUT=/some/dir gpu-check/run.sh
# Prints the host facts, then runs GpuProbe (GPU inventory, one container with 1 GPU running nvidia-smi -L
# and a PyTorch CUDA matmul with NVML sampling, one container without GPUs, a device-name experiment).
# Everything goes to $OUT (run.log, probe-result.json, per-container stdout/stderr/config.json).
# Takes about 1-2 minutes; hard limit 7 minutes.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$HERE/out/results}
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1
fail() { echo "STEP $1: FAILED: $2"; }

echo "== host"
uname -a; id; grep -E '^Cap(Eff|Bnd)' /proc/self/status
echo "cgroup: $(stat -fc %T /sys/fs/cgroup) ($( [ -f /sys/fs/cgroup/cgroup.controllers ] && echo v2 || echo v1/hybrid))"
grep -E ' (/|/tmp|/opt|/opt/torch) ' /proc/self/mountinfo | cut -d' ' -f5,9,10
echo "overlay supported: $(grep -cw overlay /proc/filesystems)"
echo "== GPU"
nvidia-smi -L 2>&1 | tee "$OUT/nvidia-smi-L.txt" || fail nvidia-smi "nvidia-smi -L failed"
cat /proc/driver/nvidia/version 2>&1
ls -l /dev/nvidia* 2>&1
ls /etc/cdi /var/run/cdi 2>&1

echo "== runc"
RUNC="$HERE/out/runc/runc"
[ -x "$RUNC" ] || { fail runc "$RUNC missing: run gpu-check/build.sh on the build machine first"; exit 1; }
if ! ldconfig -p | grep -q 'libseccomp.so.2 '; then
  echo "libseccomp.so.2 missing here: installing the build machine's copy into /usr/local/lib"
  cp "$HERE"/out/runc/libseccomp.so.2* /usr/local/lib/ && ldconfig || fail runc "could not install libseccomp.so.2"
fi
"$RUNC" --version || { fail runc "runc does not run here"; exit 1; }

echo "== crun"
CRUN="$HERE/out/crun/crun"; CRUN_ARG=()
if [ -x "$CRUN" ]; then
  # Install only the libraries this machine lacks (ldd says "not found"), from the build machine's copies.
  for lib in $(ldd "$CRUN" 2>/dev/null | awk '/not found/ {print $1}'); do
    echo "installing $lib into /usr/local/lib"; cp "$HERE/out/crun/lib/$lib" /usr/local/lib/ || fail crun "no copy of $lib"
  done
  ldconfig
  if "$CRUN" --version; then CRUN_ARG=(--crun "$CRUN"); else fail crun "crun does not run here"; fi
else
  echo "no crun in out/: the crun steps are skipped"
fi

echo "== python with torch"
PY=""; PYPATH=""
for p in /opt/torch/bin/python3 /opt/torch/bin/python /opt/torch/venv/bin/python3; do [ -x "$p" ] && { PY=$p; break; }; done
if [ -z "$PY" ]; then
  PY=$(command -v python3 || echo python3)
  SITE=$(find /opt/torch -maxdepth 5 -type d -name torch -path '*/torch' 2>/dev/null | head -1)
  [ -n "$SITE" ] && PYPATH=$(dirname "$SITE")
fi
echo "python: $PY  PYTHONPATH: ${PYPATH:-<none>}"
PYTHONPATH="$PYPATH" timeout 120 "$PY" -c 'import torch; print("host torch", torch.__version__, "cuda available", torch.cuda.is_available())' 2>&1 | tail -3

echo "== probe"
timeout 420 "$HERE/out/probe/GpuProbe" --runc "$RUNC" --out "$OUT" --python "$PY" ${PYPATH:+--pythonpath "$PYPATH"} "${CRUN_ARG[@]}"
rc=$?
[ $rc -eq 124 ] && fail probe "GpuProbe ran past 420 s"
echo "== done (probe exit $rc); results in $OUT"
exit $rc
