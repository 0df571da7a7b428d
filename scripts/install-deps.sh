#!/usr/bin/env bash
# Installs the system packages BatchRunner needs on Debian (12+) / Ubuntu.
#
#   scripts/install-deps.sh            runtime deps: runc, crun, PostgreSQL server,
#                                      iproute2, CNI plugins, iptables, ca-certificates,
#                                      e2fsprogs (mkfs.ext4 for the per-job disks)
#   scripts/install-deps.sh --test     also what the test suites use: docker-registry,
#                                      skopeo, umoci, busybox-static, apache2-utils,
#                                      prometheus (real-Prometheus test), docker-compose
#                                      (validates docker-compose.yml; needs no engine),
#                                      debootstrap (example images, scripts/example-images.sh)
#                                      systemd (systemd-analyze verify of the unit), curl
#   scripts/install-deps.sh --no-dotnet   skip the .NET SDK check
#
# Idempotent: every dependency is checked by the command or file it provides, and
# apt-get (update + install) runs only when something is missing. Needs root only
# when something has to be installed. Debian's own PostgreSQL service is not used
# (BatchRunner runs its own embedded cluster); while installing, services are kept
# from starting (policy-rc.d), so no stray postgres ends up listening on :5432.
set -euo pipefail

with_test=0
check_dotnet=1
for arg in "$@"; do
    case "$arg" in
        --test) with_test=1 ;;
        --no-dotnet) check_dotnet=0 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-deps: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "install-deps: $*" >&2; }

# PATH of a non-root user often lacks the sbin directories (runc lives in /usr/sbin).
have_cmd() {
    command -v "$1" >/dev/null 2>&1 && return 0
    local d
    for d in /usr/local/sbin /usr/sbin /sbin /usr/local/bin /usr/bin /bin; do
        [ -x "$d/$1" ] && return 0
    done
    return 1
}
have_glob() { compgen -G "$1" >/dev/null 2>&1; }
have_dpkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Each check: "<package>|<shell test that succeeds when it is present>"
checks=(
    "runc|have_cmd runc"
    "crun|have_cmd crun"
    "postgresql|have_glob '/usr/lib/postgresql/*/bin/initdb' && have_glob '/usr/lib/postgresql/*/bin/postgres' && have_glob '/usr/lib/postgresql/*/bin/pg_ctl' && id -u postgres"
    "iproute2|have_cmd ip"
    "containernetworking-plugins|test -x /usr/lib/cni/bridge && test -x /usr/lib/cni/host-local && test -x /usr/lib/cni/firewall"
    "iptables|have_cmd iptables"
    "ca-certificates|test -s /etc/ssl/certs/ca-certificates.crt"
    # Each job's disk is a sparse ext4 image on a loop device (resources.disk).
    "e2fsprogs|have_cmd mkfs.ext4"
)
if [ "$with_test" = 1 ]; then
    checks+=(
        "docker-registry|have_cmd docker-registry"
        "skopeo|have_cmd skopeo"
        "umoci|have_cmd umoci"
        "busybox-static|have_dpkg busybox-static && test -x /bin/busybox"
        "apache2-utils|have_cmd htpasswd"
        "prometheus|have_cmd prometheus"
        "docker-compose|have_cmd docker-compose && python3 -c 'import yaml'"
        # scripts/example-images.sh builds the examples' Python + numpy image with it (the CLI tests run that script)
        "debootstrap|have_cmd debootstrap"
        # systemd-analyze verify checks the batchrunner.service unit (systemd need not be running).
        "systemd|have_cmd systemd-analyze"
        # The README's curl examples are run as written.
        "curl|have_cmd curl"
    )
fi

missing_pkgs() {
    local entry
    for entry in "${checks[@]}"; do
        if ! eval "${entry#*|}" >/dev/null 2>&1; then
            printf '%s\n' "${entry%%|*}"
        fi
    done
}

mapfile -t missing < <(missing_pkgs)

if [ "${#missing[@]}" -eq 0 ]; then
    log "system packages present$([ "$with_test" = 1 ] && echo ' (incl. test tools)')"
else
    log "missing: ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        log "ERROR: installing packages needs root. Run as root:  sudo $0 $*"
        log "       or install them yourself:  apt-get install ${missing[*]}"
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "ERROR: apt-get not found; this script supports Debian/Ubuntu only."
        log "       Install the equivalents of: ${missing[*]}"
        exit 1
    fi

    export DEBIAN_FRONTEND=noninteractive
    # Keep package post-install scripts from starting services (Debian's postgresql
    # cluster, docker-registry) unless the host already has its own policy.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi

    apt_opts=(-y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
    log "apt-get update"
    apt-get "${apt_opts[@]}" update >/dev/null
    log "apt-get install ${missing[*]}"
    # busybox-static conflicts with Debian's dynamic busybox; apt replaces it.
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"

    mapfile -t still < <(missing_pkgs)
    if [ "${#still[@]}" -ne 0 ]; then
        log "ERROR: still missing after apt-get install: ${still[*]}"
        exit 1
    fi
    log "installed: ${missing[*]}"
fi

if [ "$check_dotnet" = 1 ]; then
    if ! command -v dotnet >/dev/null 2>&1; then
        for d in "${DOTNET_ROOT:-}" "$HOME/.dotnet" /usr/share/dotnet /usr/lib/dotnet /opt/dotnet; do
            if [ -n "$d" ] && [ -x "$d/dotnet" ]; then
                log "ERROR: found $d/dotnet but 'dotnet' is not on PATH: export PATH=\"$d:\$PATH\""
                exit 1
            fi
        done
        log "ERROR: the .NET SDK is not installed ('dotnet' not found)."
        log "       BatchRunner needs the .NET 10 SDK: install it following Microsoft's"
        log "       'Install .NET on Linux' instructions (package dotnet-sdk-10.0, or the"
        log "       dotnet-install script), then make sure 'dotnet --version' prints 10.x."
        exit 1
    fi
    if ! sdk_version="$(dotnet --version 2>/dev/null)"; then
        log "ERROR: 'dotnet' exists but no .NET SDK was found (only a runtime?). Install the .NET 10 SDK."
        exit 1
    fi
    if [ "${sdk_version%%.*}" -lt 10 ] 2>/dev/null; then
        log "ERROR: .NET SDK $sdk_version found, but BatchRunner needs the .NET 10 SDK or newer."
        exit 1
    fi
    log ".NET SDK $sdk_version"
fi
