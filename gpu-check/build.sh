#!/bin/bash
# Builds, on a machine with the .NET SDK, what run.sh needs on the GPU machine (which has no SDK and no
# package registries): a self-contained single-file GpuProbe, and this machine's runc plus the shared
# libraries it needs that a minimal host may lack. Output: gpu-check/out/ (git-ignored), ~45 MB.
# (The full-server check carries its own archive: gpu-check/build-server.sh.)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUTDIR="$HERE/out"
rm -rf "$OUTDIR/probe" "$OUTDIR/runc" "$OUTDIR/crun"
mkdir -p "$OUTDIR/runc" "$OUTDIR/crun/lib"

dotnet publish "$HERE/GpuProbe/GpuProbe.csproj" -c Release -r linux-x64 --self-contained \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:DebugType=none \
  -o "$OUTDIR/probe"

RUNC=$(command -v runc || echo /usr/sbin/runc)
cp "$(readlink -f "$RUNC")" "$OUTDIR/runc/runc"
"$OUTDIR/runc/runc" --version | head -1
# Debian's runc is dynamically linked (libseccomp.so.2, libc). runc re-executes itself for `runc init` with
# a minimal environment, so LD_LIBRARY_PATH would not reach it: run.sh installs the copy into /usr/local/lib
# only when the GPU machine lacks libseccomp.so.2.
if ldd "$OUTDIR/runc/runc" >/dev/null 2>&1; then
  ldd "$OUTDIR/runc/runc" | awk '/libseccomp/ {print $3}' | while read -r lib; do cp -L "$lib" "$OUTDIR/runc/"; done
fi
ls -l "$OUTDIR/runc"

# crun (Debian 12: 1.8.1) and every shared library it links, for the `crun-*` steps on a pure cgroup v2
# host; run.sh installs into /usr/local/lib only the libraries that machine lacks.
CRUN=$(command -v crun || echo /usr/bin/crun)
if [ -x "$CRUN" ]; then
  cp "$(readlink -f "$CRUN")" "$OUTDIR/crun/crun"
  ldd "$OUTDIR/crun/crun" | awk '$3 ~ /^\// {print $3}' | grep -v -E '/(libc|ld-linux[^/]*)\.so' | while read -r lib; do cp -L "$lib" "$OUTDIR/crun/lib/"; done
  "$OUTDIR/crun/crun" --version | head -1
  ls -l "$OUTDIR/crun/lib"
fi

du -sh "$OUTDIR"/*
