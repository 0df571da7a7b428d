#!/usr/bin/env bash
# Builds and starts the BatchRunner server.
#
#   scripts/start.sh [server args...]      e.g. scripts/start.sh --urls http://0.0.0.0:8080
#
# 1. scripts/install-deps.sh (installs missing runc/crun/PostgreSQL/... when root;
#    as non-root it only checks and warns),
# 2. dotnet publish src/BatchRunner.Server -c Release -o artifacts/server
#    (skipped when BATCHRUNNER_SKIP_PUBLISH=1 and a build exists),
# 3. exec artifacts/server/batchrunner "$@".
# Configuration comes from BATCHRUNNER_* environment variables (see README.md).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1

if [ "$(id -u)" -eq 0 ]; then
    bash ./scripts/install-deps.sh
elif ! bash ./scripts/install-deps.sh; then
    echo "start: WARNING: dependencies incomplete (see above); starting anyway" >&2
fi

out="$root/artifacts/server"
if [ "${BATCHRUNNER_SKIP_PUBLISH:-0}" = 1 ] && [ -x "$out/batchrunner" ]; then
    echo "start: BATCHRUNNER_SKIP_PUBLISH=1, using existing $out" >&2
else
    echo "start: publishing src/BatchRunner.Server -> artifacts/server" >&2
    dotnet publish src/BatchRunner.Server -c Release -o "$out" --nologo -v quiet >&2
fi

# The apphost looks for the runtime in DOTNET_ROOT or the global install location,
# not on PATH: point it at the dotnet on PATH when it lives somewhere else.
if [ -z "${DOTNET_ROOT:-}" ] && command -v dotnet >/dev/null 2>&1; then
    DOTNET_ROOT="$(dirname "$(readlink -f "$(command -v dotnet)")")"
    export DOTNET_ROOT
fi

exec "$out/batchrunner" "$@"
