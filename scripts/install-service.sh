#!/usr/bin/env bash
# Installs BatchRunner as a systemd service (README "Run as a service").
#
#   scripts/install-service.sh [options]                 publish, install, enable and start
#   scripts/install-service.sh --uninstall [--purge]     stop, disable, remove the service and the bridge network's
#                                                        firewall rules (--purge: also data and settings)
#
# Options:
#   --prefix DIR        where the build goes (default /opt/batchrunner)
#   --config-dir DIR    where batchrunner.env goes (default /etc/batchrunner)
#   --unit-dir DIR      where batchrunner.service goes (default /etc/systemd/system)
#   --from DIR          install this `dotnet publish` output instead of publishing src/BatchRunner.Server
#   --data-dir DIR      BATCHRUNNER_DATA_DIR written into a NEW env file (default /var/lib/batchrunner)
#   --urls URL          BATCHRUNNER_URLS written into a NEW env file (default http://127.0.0.1:8080)
#   --env KEY=VALUE     set KEY in the env file, new or existing (repeatable), e.g.
#                       --env BATCHRUNNER_ROLE=worker --env BATCHRUNNER_ADVERTISE_URL=http://10.0.0.11:8080
#   --no-start          enable the unit but do not start it now
#   --no-systemctl      only write files; never call systemctl (also when systemd is not running)
#
# The env file (mode 0600: it holds the API key) is written only when absent, with a generated API key;
# an existing one is never changed, so a reinstall (an upgrade) keeps the key, the data directory and
# whatever was set there. The unit's TimeoutStopSec follows the env file's
# BATCHRUNNER_SHUTDOWN_GRACE_SECONDS + BATCHRUNNER_MAX_STOP_GRACE_SECONDS (+60 s): rerun this script after changing them.
# --uninstall keeps the data directory and the env file; --purge removes both (it refuses while anything
# is still mounted below the data directory or its PostgreSQL still runs).
set -euo pipefail

prefix=/opt/batchrunner
config_dir=/etc/batchrunner
unit_dir=/etc/systemd/system
from=""
data_dir=/var/lib/batchrunner
urls=http://127.0.0.1:8080
start=1
use_systemctl=1
uninstall=0
purge=0
unit_name=batchrunner.service
env_sets=()

die() { echo "install-service: ERROR: $*" >&2; exit 1; }
log() { echo "install-service: $*" >&2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (try --help)"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) need_value "$@"; prefix="$2"; shift 2 ;;
        --config-dir) need_value "$@"; config_dir="$2"; shift 2 ;;
        --unit-dir) need_value "$@"; unit_dir="$2"; shift 2 ;;
        --from) need_value "$@"; from="$2"; shift 2 ;;
        --data-dir) need_value "$@"; data_dir="$2"; shift 2 ;;
        --urls) need_value "$@"; urls="$2"; shift 2 ;;
        --env) need_value "$@"; env_sets+=("$2"); shift 2 ;;
        --no-start) start=0; shift ;;
        --no-systemctl) use_systemctl=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

for p in "$prefix" "$config_dir" "$unit_dir" "$data_dir"; do
    case "$p" in
        /*) ;;
        *) die "paths must be absolute: $p" ;;
    esac
    case "$p" in
        *'|'*|*'&'*|*\\*|*' '*) die "unsupported character in path: $p" ;;
    esac
    [ "$p" != / ] || die "refusing to use / as a BatchRunner directory"
done
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge goes with --uninstall"
for kv in "${env_sets[@]}"; do
    [[ "$kv" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env wants KEY=VALUE: $kv"
    # systemd would read quotes, backslashes and \$ in an EnvironmentFile as syntax: keep values plain.
    case "${kv#*=}" in
        *\"*|*"'"*|*\\*|*'$'*|*'`'*|*$'\n'*) die "--env ${kv%%=*}: quotes, backslashes, \$, \` and newlines are not supported here; edit the env file" ;;
    esac
done

env_file="$config_dir/batchrunner.env"
unit_file="$unit_dir/$unit_name"
# systemctl only where systemd runs (not in containers or CI, where it is not PID 1).
if [ "$use_systemctl" = 1 ] && [ ! -d /run/systemd/system ]; then
    log "systemd is not running here: writing files only (no systemctl)"
    use_systemctl=0
fi

# The value of KEY in the env file (systemd EnvironmentFile syntax: KEY=VALUE, optional quotes), or $2.
env_value() {
    local v=""
    [ -f "$env_file" ] && v="$(sed -n "s/^[[:space:]]*$1=//p" "$env_file" | tail -n1)"
    v="${v%\"}"; v="${v#\"}"; v="${v%\'}"; v="${v#\'}"
    echo "${v:-$2}"
}

if [ "$uninstall" = 1 ]; then
    if [ "$use_systemctl" = 1 ]; then
        # `stop` waits for a clean shutdown (grace period, embedded PostgreSQL stopped).
        systemctl disable --now "$unit_name" >/dev/null 2>&1 || log "the unit was not enabled or not running"
    fi
    # The bridge network's firewall rules outlive the service on purpose (README "How it works"); an uninstall
    # takes them (and the bridge) away, with the service's own settings, so the bridge it names.
    if [ -x "$prefix/batchrunner" ]; then
        dotnet_root=""
        if command -v dotnet >/dev/null 2>&1; then dotnet_root="$(dirname "$(readlink -f "$(command -v dotnet)")")"; fi
        if (
            set -a
            if [ -f "$env_file" ]; then . "$env_file"; fi
            set +a
            if [ -n "$dotnet_root" ]; then export DOTNET_ROOT="${DOTNET_ROOT:-$dotnet_root}"; fi
            exec "$prefix/batchrunner" cleanup-network
        ) >&2; then
            log "removed the bridge network's firewall rules"
        else
            log "WARNING: 'batchrunner cleanup-network' failed: remove the BRUNNER-* iptables chains by hand"
        fi
    fi
    rm -f "$unit_file"
    [ "$use_systemctl" = 0 ] || systemctl daemon-reload
    rm -rf "$prefix"
    log "removed $unit_file and $prefix"
    if [ "$purge" = 0 ]; then
        log "kept the data directory $(env_value BATCHRUNNER_DATA_DIR /var/lib/batchrunner) and $env_file (--purge removes them)"
        exit 0
    fi
    data="$(env_value BATCHRUNNER_DATA_DIR /var/lib/batchrunner)"
    case "$data" in
        /?*) ;;
        *) die "BATCHRUNNER_DATA_DIR in $env_file is not an absolute path: '$data'; remove it yourself" ;;
    esac
    if [ -d "$data" ]; then
        data="$(cd "$data" && pwd -P)"
        [ "$data" != / ] || die "refusing to purge /"
        # Deleting through a mount would damage what it shows (an image layer, a dataset).
        if awk -v d="$data" '$5 == d || index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            die "something is still mounted below $data (a container of a running BatchRunner?); stop it first"
        fi
        pidfile="$data/postgres/postmaster.pid"
        if [ -f "$pidfile" ] && kill -0 "$(head -n1 "$pidfile")" 2>/dev/null; then
            die "the embedded PostgreSQL in $data/postgres still runs (pid $(head -n1 "$pidfile")); stop BatchRunner first"
        fi
        rm -rf "$data"
        log "purged the data directory $data"
    fi
    rm -f "$env_file"
    rmdir "$config_dir" 2>/dev/null || true
    log "purged $env_file"
    exit 0
fi

# --- install ---------------------------------------------------------------------------------------
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v dotnet >/dev/null 2>&1 || die "'dotnet' not found: BatchRunner needs the .NET 10 runtime (the SDK to publish); see scripts/install-deps.sh"
dotnet_root="$(dirname "$(readlink -f "$(command -v dotnet)")")"

staging="$prefix.new"
rm -rf "$staging"
mkdir -p "$(dirname "$prefix")"
if [ -n "$from" ]; then
    [ -x "$from/batchrunner" ] && [ -f "$from/batchrunner.dll" ] || die "--from $from: no batchrunner build there"
    cp -a "$from/." "$staging/"
else
    log "publishing src/BatchRunner.Server -> $prefix"
    DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 dotnet publish "$root/src/BatchRunner.Server" -c Release -o "$staging" --nologo -v quiet >&2
fi
install -m 0755 "$root/scripts/systemd/batchrunner-stop-post" "$staging/batchrunner-stop-post"
# Swap whole directories: a running service keeps the files it has open, and the unit never sees half a build.
if [ -d "$prefix" ]; then
    rm -rf "$prefix.old"
    mv "$prefix" "$prefix.old"
fi
mv "$staging" "$prefix"
rm -rf "$prefix.old"
log "installed the build in $prefix"

if [ -f "$env_file" ]; then
    log "keeping the existing $env_file"
    if [ -n "$(find "$env_file" -perm /077)" ]; then
        log "WARNING: $env_file is readable by others and holds the API key: chmod 600 $env_file"
    fi
else
    mkdir -p "$config_dir"
    key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    (
        umask 077
        cat >"$env_file.tmp" <<ENV
# BatchRunner service settings, read by $unit_name (systemd EnvironmentFile: KEY=VALUE, no shell syntax).
# Every BATCHRUNNER_* variable of README "Configuration" can be set here; restart to apply:
#   systemctl restart batchrunner
# After changing BATCHRUNNER_SHUTDOWN_GRACE_SECONDS or BATCHRUNNER_MAX_STOP_GRACE_SECONDS, rerun
# scripts/install-service.sh (TimeoutStopSec follows them).
BATCHRUNNER_API_KEY=$key
BATCHRUNNER_DATA_DIR=$data_dir
BATCHRUNNER_URLS=$urls
BATCHRUNNER_SHUTDOWN_GRACE_SECONDS=30
# Several machines (README "Several machines"): a shared PostgreSQL, this node's role and the address
# other nodes reach it at.
#BATCHRUNNER_CONNECTION_STRING=Host=db.example;Database=batchrunner;Username=batchrunner;Password=...
#BATCHRUNNER_ROLE=all
#BATCHRUNNER_ADVERTISE_URL=http://this-host.example:8080
#BATCHRUNNER_NODE_NAME=
#BATCHRUNNER_LOG_FORMAT=json
ENV
        mv "$env_file.tmp" "$env_file"
    )
    log "wrote $env_file (mode 0600) with a new API key"
fi

for kv in "${env_sets[@]}"; do
    key="${kv%%=*}"
    # Replace the KEY= line (or a commented-out #KEY= line) in place, else append; the file stays 0600.
    awk -v k="$key" -v line="$kv" '
        !done && ($0 ~ "^[[:space:]]*#?[[:space:]]*" k "=") { print line; done = 1; next }
        { print }
        END { if (!done) print line }' "$env_file" >"$env_file.tmp"
    chmod 0600 "$env_file.tmp"
    mv "$env_file.tmp" "$env_file"
    log "set $key in $env_file"
done

grace="$(env_value BATCHRUNNER_SHUTDOWN_GRACE_SECONDS 30)"
case "$grace" in
    ''|*[!0-9]*) die "BATCHRUNNER_SHUTDOWN_GRACE_SECONDS in $env_file is not a whole number: '$grace'" ;;
esac
max_stop="$(env_value BATCHRUNNER_MAX_STOP_GRACE_SECONDS 300)"
case "$max_stop" in
    ''|*[!0-9]*) die "BATCHRUNNER_MAX_STOP_GRACE_SECONDS in $env_file is not a whole number: '$max_stop'" ;;
esac
# A running job gets the shutdown grace to finish, then its own stop grace (signal, then SIGKILL), then the rest stops.
timeout_stop=$((grace + max_stop + 60))

mkdir -p "$unit_dir"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@CONFIG_DIR@|$config_dir|g" -e "s|@DOTNET_ROOT@|$dotnet_root|g" \
    -e "s|@TIMEOUT_STOP_SEC@|$timeout_stop|g" "$root/scripts/systemd/batchrunner.service.in" >"$unit_file.tmp"
chmod 0644 "$unit_file.tmp"
mv "$unit_file.tmp" "$unit_file"
log "wrote $unit_file (TimeoutStopSec=$timeout_stop: shutdown grace ${grace} s + job stop grace up to ${max_stop} s + 60 s)"

if [ "$use_systemctl" = 0 ]; then
    log "not calling systemctl; to run it: systemctl daemon-reload && systemctl enable --now $unit_name"
    exit 0
fi
systemctl daemon-reload
systemctl enable "$unit_name" >/dev/null
if [ "$start" = 0 ]; then
    log "enabled $unit_name (not started: --no-start)"
elif systemctl is-active --quiet "$unit_name"; then
    log "restarting $unit_name (running jobs get the grace period, then are requeued)"
    systemctl restart "$unit_name"
else
    log "starting $unit_name (returns once the API answers)"
    systemctl start "$unit_name"
fi
log "done: systemctl status batchrunner; journalctl -u batchrunner; the API key is BATCHRUNNER_API_KEY in $env_file"
