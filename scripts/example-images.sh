#!/usr/bin/env bash
# Builds the images the examples in jobs/ need from Debian packages (no Docker Hub, no registry) and imports them into
# a BatchRunner server through POST /api/v1/images (`batchrunner images import`):
#
#   examples/busybox:1        the host's busybox-static, with an applet link each       (jobs/hello)
#   examples/python-numpy:1   Debian bookworm minbase + python3 + python3-numpy,         (jobs/csv-summary, train-logreg, sweep)
#                             made with debootstrap from the Debian mirror (about a minute the first time)
#
#   scripts/example-images.sh                 build what is missing, then import both
#   scripts/example-images.sh --only busybox  one of them (busybox | python-numpy)
#   scripts/example-images.sh --build-only    build (and cache) without importing
#
# Then run an example with the imported image, e.g.
#   batchrunner submit jobs/csv-summary/job.yaml --set image=examples/python-numpy:1 --follow --output-dir out/
#
# The server and key come from BATCHRUNNER_URL / BATCHRUNNER_API_KEY or `batchrunner login`, as for the CLI.
# Environment:
#   BATCHRUNNER_CLI             how to run the CLI (default: `batchrunner` when on PATH, else `dotnet run` of
#                               src/BatchRunner.Cli in this repository)
#   BATCHRUNNER_EXAMPLES_CACHE  where built image layouts are kept and reused
#                               (default: ${XDG_CACHE_HOME:-~/.cache}/batchrunner/example-images)
#   DEBIAN_MIRROR               default http://deb.debian.org/debian
# Needs root (debootstrap creates device nodes and chroots) and installs umoci, debootstrap and busybox-static with
# apt-get when they are missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
only="" build_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --only) only="${2:?--only needs busybox or python-numpy}"; shift 2 ;;
        --build-only) build_only=1; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "example-images: unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
case "$only" in ""|busybox|python-numpy) ;; *) echo "example-images: --only takes busybox or python-numpy" >&2; exit 2 ;; esac

log() { echo "example-images: $*" >&2; }
# Bump when what an image holds changes, so caches built by an older script are rebuilt.
version=1
cache="${BATCHRUNNER_EXAMPLES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/batchrunner/example-images}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
mkdir -p "$cache"

if [ -n "${BATCHRUNNER_CLI:-}" ]; then
    read -r -a cli <<<"$BATCHRUNNER_CLI"
elif command -v batchrunner >/dev/null 2>&1 && batchrunner --help 2>/dev/null | grep -q 'images'; then
    cli=(batchrunner)   # the CLI (the server's own binary is also called batchrunner; it has no `images` command)
else
    cli=(dotnet run --project "$root/src/BatchRunner.Cli" -c Release --)
fi

need() { # need COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] && return 0
    [ "$(id -u)" = 0 ] || { log "$1 is missing: apt-get install $2 (as root)"; exit 1; }
    log "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }
}
need umoci umoci

# build_busybox LAYOUT: one layer with busybox and its applets, /etc/passwd and /etc/group, /tmp.
build_busybox() {
    local layout="$1" work
    need busybox busybox-static
    local busybox=/bin/busybox
    [ -x "$busybox" ] || busybox=/usr/bin/busybox
    file -b "$busybox" 2>/dev/null | grep -q 'statically linked' || [ ! -x /usr/bin/file ] \
        || { log "$busybox is not static: apt-get install busybox-static"; exit 1; }
    work="$(mktemp -d "$cache/busybox.XXXXXX")"
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:1"
    umoci unpack --image "$work/oci:1" "$work/bundle" >/dev/null
    local rootfs="$work/bundle/rootfs"
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp" "$rootfs/root" "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/sbin"
    chmod 1777 "$rootfs/tmp"
    cp "$busybox" "$rootfs/bin/busybox"
    local applet
    for applet in $("$busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
    umoci repack --image "$work/oci:1" "$work/bundle"
    umoci config --image "$work/oci:1" --config.cmd /bin/sh --config.env PATH=/usr/sbin:/usr/bin:/sbin:/bin
    umoci gc --layout "$work/oci"
    mv "$work/oci" "$layout"
    rm -rf "$work"
}

# build_python_numpy LAYOUT: Debian bookworm minbase with python3 and python3-numpy as one layer.
build_python_numpy() {
    local layout="$1" work
    need debootstrap debootstrap
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; exit 1; }
    work="$(mktemp -d "$cache/python-numpy.XXXXXX")"
    log "debootstrap bookworm with python3, python3-numpy from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-numpy bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log" >&2; rm -rf "$work"; exit 1; }
    # Package caches and lists are not part of a runtime image.
    rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin
    umoci init --layout "$work/oci"
    umoci new --image "$work/oci:1"
    # unpack an empty image, move the tree in, repack: one gzip layer. (Not `umoci insert`: umoci 0.4.7 writes that
    # layer without the tar end-of-archive blocks, which BatchRunner's unpacker refuses as truncated.)
    umoci unpack --image "$work/oci:1" "$work/bundle" >/dev/null
    rm -rf "$work/bundle/rootfs"
    mv "$work/rootfs" "$work/bundle/rootfs"
    umoci repack --image "$work/oci:1" "$work/bundle"
    umoci config --image "$work/oci:1" --config.cmd python3 \
        --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.env PYTHONDONTWRITEBYTECODE=1
    umoci gc --layout "$work/oci"
    mv "$work/oci" "$layout"
    rm -rf "$work"
}

for image in busybox python-numpy; do
    [ -z "$only" ] || [ "$only" = "$image" ] || continue
    layout="$cache/$image-v$version"
    if [ -d "$layout" ]; then
        log "examples/$image:1: using the layout built before ($layout)"
    else
        log "building examples/$image:1"
        start=$SECONDS
        "build_${image//-/_}" "$layout"
        log "built examples/$image:1 in $((SECONDS - start)) s"
    fi
    [ "$build_only" = 1 ] && continue
    log "importing examples/$image:1"
    tar -C "$layout" -cf - . | "${cli[@]}" images import - --name "examples/$image:1"
done
