#!/bin/bash
# Builds, on a Debian 12 machine with the .NET SDK, the one archive the full-server GPU check carries to the
# GPU machine (Ubuntu 24.04: no .NET, no PostgreSQL, no runc/crun, no package registries):
#
#   gpu-check/build-server.sh               → gpu-check/out/server-check.tar.xz (git-ignored), ~2 min on 2 cores
#   gpu-check/build-server.sh --part-sizes  also each part's compressed size (compresses twice: ~4 min)
#
# The archive must stay under the device tool's 64 MiB carry limit; this script fails if it does not.
#   batchrunner/                        self-contained server publish (no IL trimming: see README)
#   postgresql/usr/lib/postgresql/15/   Debian's PostgreSQL server: bin/{postgres,initdb,pg_ctl} and the core
#                                       modules of lib/ (no JIT, no contrib)
#   postgresql/usr/share/postgresql/15/ what initdb and the server read (the usr/lib ↔ usr/share layout is kept:
#                                       PostgreSQL finds its share dir relative to its own binary)
#   runtimes/runc, runtimes/crun        this machine's runc and crun
#   tools/busybox                       Debian's static busybox: CHECK=perf's job image and bare bundles
#   lib/                                every shared library those binaries need except glibc's own
#                                       (server-check.sh uses only the ones the GPU machine lacks)
#   MANIFEST.txt                        versions, sizes, and which libraries Ubuntu 24.04 has no package for
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
OUTDIR="$HERE/out"
ARCHIVE="$OUTDIR/server-check.tar.xz"
LIMIT_BYTES=$((64 * 1024 * 1024))
PG_VERSION=${PG_VERSION:-15}
PG_LIB=/usr/lib/postgresql/$PG_VERSION
PG_SHARE=/usr/share/postgresql/$PG_VERSION

STAGE="$OUTDIR/server-check"
rm -rf "$STAGE" "$ARCHIVE"
mkdir -p "$STAGE"/{lib,tools,runtimes/runc,runtimes/crun} "$STAGE/postgresql$PG_LIB"/{bin,lib} "$STAGE/postgresql$PG_SHARE"

# --- the server. Self-contained, not trimmed: IL trimming (TrimMode=partial) halves the archive's server part
# but the trimmed server aborts at start ("Reflection-based serialization has been disabled"), and Hangfire and
# Npgsql use reflection the local run could not all reach. Only files the runtime never loads are left out.
dotnet publish "$REPO/src/BatchRunner.Server/BatchRunner.Server.csproj" -c Release -r linux-x64 --self-contained \
  -p:DebugType=none -p:SatelliteResourceLanguages=en -p:GenerateDocumentationFile=false \
  -o "$STAGE/batchrunner" 2>&1 | grep -vE 'warning (CA|IL)[0-9]+' | tail -2
# Debugger and crash-dump support, the standalone GCs (only with DOTNET_GCName) and the LTTng trace provider.
( cd "$STAGE/batchrunner" && rm -f createdump libmscordaccore.so libmscordbi.so libclrgc.so libclrgcexp.so \
    libcoreclrtraceptprovider.so ./*.xml )

# --- PostgreSQL: the server and what initdb loads (plpgsql, snowball dictionaries, encoding conversions,
# the walreceiver and pgoutput modules of core). JIT (llvmjit + bitcode, 26 MB) is left out: without it
# PostgreSQL simply does not JIT.
[ -x "$PG_LIB/bin/postgres" ] || { echo "no PostgreSQL $PG_VERSION in $PG_LIB: run scripts/install-deps.sh" >&2; exit 1; }
cp -p "$PG_LIB"/bin/{postgres,initdb,pg_ctl} "$STAGE/postgresql$PG_LIB/bin/"
for m in plpgsql dict_snowball libpqwalreceiver pgoutput euc2004_sjis2004; do cp -p "$PG_LIB/lib/$m.so" "$STAGE/postgresql$PG_LIB/lib/"; done
cp -p "$PG_LIB"/lib/*_and_*.so "$STAGE/postgresql$PG_LIB/lib/"
( cd "$PG_SHARE" && tar -cf - --exclude=./man --exclude=./extension . ) | tar -xf - -C "$STAGE/postgresql$PG_SHARE"
mkdir -p "$STAGE/postgresql$PG_SHARE/extension"
cp -p "$PG_SHARE"/extension/plpgsql* "$STAGE/postgresql$PG_SHARE/extension/"

# --- OCI runtimes (Debian 12: runc 1.1.5, crun 1.8.1).
cp "$(readlink -f "$(command -v runc || echo /usr/sbin/runc)")" "$STAGE/runtimes/runc/runc"
cp "$(readlink -f "$(command -v crun || echo /usr/bin/crun)")" "$STAGE/runtimes/crun/crun"

# --- a static busybox for CHECK=perf (Debian's busybox-static: no libraries).
BUSYBOX=$(readlink -f /bin/busybox)
file "$BUSYBOX" | grep -q 'statically linked' || { echo "/bin/busybox is not static: apt-get install busybox-static" >&2; exit 1; }
cp "$BUSYBOX" "$STAGE/tools/busybox"

# --- shared libraries: the closure of every carried ELF file, glibc excluded (the GPU machine's glibc 2.39 is
# newer than Debian 12's 2.36, and glibc is backward compatible).
GLIBC='^(libc|libm|libdl|libpthread|librt|libresolv|libutil|libanl|libmvec|ld-linux-x86-64)\.so'
elves=("$STAGE/postgresql$PG_LIB"/bin/* "$STAGE/postgresql$PG_LIB"/lib/*.so "$STAGE"/runtimes/*/*)
ldd "${elves[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | grep -vE "$GLIBC" \
  | while read -r soname path; do cp -L "$path" "$STAGE/lib/$soname"; done
if ldd "${elves[@]}" 2>/dev/null | grep -q 'not found'; then echo "a carried binary has a missing library here" >&2; exit 1; fi

# --- manifest: what is in it and which of the libraries no Ubuntu 24.04 package provides under that soname.
# (Ubuntu 24.04 ships ICU 74, OpenLDAP's libldap.so.2/liblber.so.2 and libunistring.so.5; every other soname
# here exists in Ubuntu 24.04, though a minimal install may lack some: server-check.sh asks ldd on the host.)
DEBIAN_ONLY='^lib(icuuc|icui18n|icudata)\.so\.72$|^lib(ldap|lber)-2\.5\.so\.0$|^libunistring\.so\.2$'
{
  echo "BatchRunner full-server GPU check archive, built $(date -u +%FT%TZ) on $(. /etc/os-release; echo "$PRETTY_NAME")"
  echo "commit: $(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD -- src || echo ' (+ local changes)')"
  echo ".NET: $(grep -o '"version": "[^"]*"' "$STAGE/batchrunner/batchrunner.runtimeconfig.json" | head -1 | cut -d'"' -f4) (self-contained)"
  echo "postgres: $("$STAGE/postgresql$PG_LIB/bin/postgres" --version)"
  echo "runc: $("$STAGE/runtimes/runc/runc" --version | head -1)"
  echo "crun: $("$STAGE/runtimes/crun/crun" --version | head -1)"
  echo "libraries with no Ubuntu 24.04 package of that soname: $(ls "$STAGE/lib" | grep -E "$DEBIAN_ONLY" | tr '\n' ' ')"
  echo "all carried libraries: $(ls "$STAGE/lib" | tr '\n' ' ')"
  echo "uncompressed sizes:"
  du -sh "$STAGE"/{batchrunner,postgresql,runtimes/runc,runtimes/crun,lib} | sed "s|$STAGE/|  |"
} > "$STAGE/MANIFEST.txt"

# xz -9: the best ratio here (decompression needs 65 MiB of memory, ~3 s on the GPU machine).
tar -C "$OUTDIR" -cf - server-check | xz -T0 -9 > "$ARCHIVE"
size=$(stat -c %s "$ARCHIVE")
if [ "${1:-}" == "--part-sizes" ]; then
  echo "== sizes (uncompressed, then each part alone with xz -9)"
  for part in batchrunner postgresql runtimes lib; do
    printf '  %-12s %6s  %5.1f MiB\n' "$part" "$(du -sh "$STAGE/$part" | cut -f1)" \
      "$(tar -C "$STAGE" -cf - "$part" | xz -T0 -9 | wc -c | awk '{print $1 / 1048576}')"
  done
fi
printf 'archive: %s, %d bytes (%.1f MiB of the 64 MiB limit)\n' "$ARCHIVE" "$size" "$(echo "$size" | awk '{print $1 / 1048576}')"
cat "$STAGE/MANIFEST.txt"
rm -rf "$STAGE"
if [ "$size" -ge "$LIMIT_BYTES" ]; then
  echo "FAILED: the archive is over the device tool's 64 MiB carry limit" >&2
  exit 1
fi
