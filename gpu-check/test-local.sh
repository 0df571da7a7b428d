#!/bin/bash
# Local rehearsal of the full-server GPU check, on a build machine without a GPU (as root, under the shared lock):
#
#   flock /work/test.lock gpu-check/test-local.sh [--rebuild]
#   WORK_ON_OVERLAY=1 ...   WORK on an overlayfs mount, as on a host whose / is overlayfs (server-check.sh must
#                           then put a tmpfs there: the jobs' overlays cannot have their upper dir on overlayfs)
#
# 1. Builds gpu-check/out/server-check.tar.xz (unless present, or with --rebuild) and checks it is under 64 MiB.
# 2. Runs gpu-check/server-check.sh, unchanged, in a private mount namespace that looks like the GPU machine
#    where it matters (nothing outside the namespace changes):
#    - no PostgreSQL package: /usr/lib/postgresql and /usr/share/postgresql are empty, so only the carried
#      server can run; no tzdata: /usr/share/zoneinfo is empty; no postgres user in /etc/passwd;
#    - the libraries Ubuntu 24.04 has no package for (ICU 72, OpenLDAP 2.5, libunistring.so.2) and some a
#      minimal Ubuntu lacks (libpq.so.5, libxml2, libsasl2) are hidden (an overlay with whiteouts on
#      /usr/lib/x86_64-linux-gnu), so the carried copies must be found;
#    - GPUs: one test device named by a CDI spec (/dev/zero's numbers), a fake nvidia-smi for sampling and one
#      bound into GPU jobs, and a fake "torch" in a venv (gpu-check/rehearsal/torch) mounted as /opt/torch.
# 3. Checks the results: every step OK, the carried runc ran, and the hidden libraries came from the archive.
# Results in gpu-check/out/rehearsal-results. About 3 minutes plus the build.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ARCHIVE="$HERE/out/server-check.tar.xz"
OUT="$HERE/out/rehearsal-results"
LIMIT_BYTES=$((64 * 1024 * 1024))
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

if [ ! -f "$ARCHIVE" ] || [ "${1:-}" = "--rebuild" ]; then "$HERE/build-server.sh"; fi
size=$(stat -c %s "$ARCHIVE")
[ "$size" -lt "$LIMIT_BYTES" ] || { echo "FAILED: $ARCHIVE is $size bytes, over the 64 MiB carry limit" >&2; exit 1; }
echo "archive: $size bytes ($((size / 1048576)) MiB) < 64 MiB"

T=$(mktemp -d /tmp/br-gpu-rehearsal-XXXXXX)
chmod 0755 "$T"
cleanup() { rm -rf --one-file-system "$T"; }
trap cleanup EXIT

# --- test GPU
mkdir -p "$T/dev" "$T/cdi"
mknod -m 0666 "$T/dev/nvidia0" c 1 5
mknod -m 0666 "$T/dev/nvidiactl" c 1 3
cat > "$T/nvidia-smi" <<'EOF'
#!/bin/sh
case "$*" in
  *utilization.gpu*) echo "GPU-rehearsal-0, 73, 1234, 1024, 50, 120.5" ;;
  *) echo "rehearsal nvidia-smi: unsupported arguments: $*" >&2; exit 9 ;;
esac
EOF
cat > "$T/container-nvidia-smi" <<'EOF'
#!/bin/sh
echo "GPU 0: Rehearsal GPU (UUID: GPU-rehearsal-0)"
EOF
chmod 0755 "$T/nvidia-smi" "$T/container-nvidia-smi"
cat > "$T/cdi/rehearsal.json" <<EOF
{ "cdiVersion": "0.6.0", "kind": "nvidia.com/gpu",
  "devices": [
    { "name": "0",
      "annotations": { "batchrunner.io/gpu-uuid": "GPU-rehearsal-0", "batchrunner.io/gpu-model": "Rehearsal GPU", "batchrunner.io/gpu-memory-bytes": "1073741824" },
      "containerEdits": { "deviceNodes": [ { "path": "/dev/nvidia0", "hostPath": "$T/dev/nvidia0" } ] } } ],
  "containerEdits": {
    "deviceNodes": [ { "path": "/dev/nvidiactl", "hostPath": "$T/dev/nvidiactl" } ],
    "mounts": [ { "hostPath": "$T/container-nvidia-smi", "containerPath": "/usr/bin/nvidia-smi", "options": [ "ro", "nosuid", "nodev", "bind" ] } ] } }
EOF

# --- a "PyTorch environment": a venv of this host's python3 with the stand-in torch
python3 -m venv --without-pip "$T/torch/.venv"
SITE=$("$T/torch/.venv/bin/python3" -c 'import site; print(site.getsitepackages()[0])')
cp -r "$HERE/rehearsal/torch" "$SITE/"
chmod -R a+rX "$T/torch"

# --- the GPU machine's situation, in a private mount namespace
cat > "$T/namespace.sh" <<'EOF'
set -euo pipefail
mount -t tmpfs -o mode=0755 none /usr/lib/postgresql
mount -t tmpfs -o mode=0755 none /usr/share/postgresql
mount -t tmpfs -o mode=0755 none /usr/share/zoneinfo
grep -v '^postgres:' /etc/passwd > "$T/passwd"; mount --bind "$T/passwd" /etc/passwd
grep -v '^postgres:' /etc/group > "$T/group"; mount --bind "$T/group" /etc/group
L=/usr/lib/x86_64-linux-gnu
mkdir -p "$T/ovl/upper" "$T/ovl/work"
for f in "$L"/libicu*.so.72* "$L"/libldap-2.5.so.0* "$L"/liblber-2.5.so.0* "$L"/libunistring.so.2* \
         "$L"/libpq.so.5* "$L"/libxml2.so.2* "$L"/libsasl2.so.2*; do
  if [ -e "$f" ] || [ -L "$f" ]; then mknod "$T/ovl/upper/$(basename "$f")" c 0 0; fi
done
mount -t overlay overlay -o "lowerdir=$L,upperdir=$T/ovl/upper,workdir=$T/ovl/work" "$L"
if [ "${WORK_ON_OVERLAY:-}" = 1 ]; then
  mkdir -p "$T/wl" "$T/wu" "$T/ww" "$T/work"
  mount -t overlay overlay -o "lowerdir=$T/wl,upperdir=$T/wu,workdir=$T/ww" "$T/work"
  echo "WORK is on overlayfs: $(stat -f -c %T "$T/work")"
fi
echo "rehearsal namespace: no PostgreSQL, no zoneinfo, no postgres user; hidden: $(ls "$T/ovl/upper" | tr '\n' ' ')"
id postgres 2>/dev/null && { echo "the postgres user is still visible" >&2; exit 1; }
set +e
"$HERE/server-check.sh"
rc=$?
# The server's own mounts (job rootfs overlays) live in this namespace: it must have removed them on shutdown.
left=$(findmnt -rn -o TARGET | grep -F "$T/work/")
[ "${WORK_ON_OVERLAY:-}" = 1 ] && [ "$(stat -f -c %T "$T/work")" != overlayfs ] && left="$left (the tmpfs on WORK)"
[ -z "$left" ] || { echo "CHECK mounts: FAILED: left under WORK after the server stopped: $left"; rc=1; }
exit $rc
EOF

rm -rf "$OUT"
set +e
env T="$T" HERE="$HERE" OUT="$OUT" WORK_ON_OVERLAY="${WORK_ON_OVERLAY:-}" WORK="$T/work" ARCHIVE="$ARCHIVE" TORCH_DIR="$T/torch" \
    GPU_CDI_DIR="$T/cdi" NVIDIA_SMI="$T/nvidia-smi" SERVER_CPUS=8 MATMUL_SECONDS=5 FAKE=1 \
    unshare --mount --propagation private bash "$T/namespace.sh"
rc=$?
set -e

echo "== rehearsal checks"
failed=0
check() { if eval "$2"; then echo "CHECK $1: OK"; else echo "CHECK $1: FAILED"; failed=1; fi; }
check "server-check passed" "[ $rc = 0 ] && head -1 '$OUT/summary.md' | grep -q 'all steps OK'"
check "the carried runc ran the jobs" "grep -q 'OCI runtime: runc .*($T/work/server-check/runtimes/runc/runc)' '$OUT/server.log'"
check "the carried PostgreSQL ran (initdb'd a fresh cluster)" "grep -q 'Initialising embedded PostgreSQL' '$OUT/server.log' && grep -q 'database system is ready' '$OUT/postgres.log'"
check "hidden libraries came from the archive" "grep -q 'libicuuc.so.72' '$OUT/host-lacked-libraries.txt' && grep -q 'libldap-2.5.so.0' '$OUT/host-lacked-libraries.txt'"
echo "== rehearsal $([ $failed = 0 ] && echo OK || echo FAILED); results in $OUT"
exit $failed
