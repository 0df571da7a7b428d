# Shared by backup.sh and restore.sh: where the embedded PostgreSQL of a BatchRunner data directory lives
# and how to run its tools. Sourced, not run.
#
# BatchRunner's embedded cluster: data in DATA_DIR/postgres, Unix socket in DATA_DIR/postgres-run (port
# 5432 only names the socket file), database "batchrunner", user "postgres" with trust auth on the socket.
# The server binaries are Debian's /usr/lib/postgresql/<newest>/bin (BATCHRUNNER_POSTGRES_BIN overrides),
# the same ones BatchRunner runs, so pg_dump and pg_restore always match the server's version.

pg_database=batchrunner
pg_port=5432

# pg_bin: the server binaries directory.
pg_bin() {
    if [ -n "${BATCHRUNNER_POSTGRES_BIN:-}" ]; then echo "$BATCHRUNNER_POSTGRES_BIN"; return; fi
    local best="" v
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/pg_dump" ] || continue
        v="$(basename "$(dirname "$d")")"
        if [ -z "$best" ] || [ "$v" -gt "$(basename "$(dirname "$best")")" ] 2>/dev/null; then best="$d"; fi
    done
    [ -n "$best" ] || { echo "no PostgreSQL binaries in /usr/lib/postgresql/*/bin (install 'postgresql')" >&2; return 1; }
    echo "$best"
}

# The user the cluster runs as when BatchRunner runs as root (BATCHRUNNER_POSTGRES_USER, else postgres).
pg_user="${BATCHRUNNER_POSTGRES_USER:-postgres}"

# as_postgres CMD...: runs CMD as that user when we are root (the server and its socket belong to it),
# else as ourselves (BatchRunner then runs the cluster as our user too). The database role is always
# "postgres" (initdb -U postgres), whoever runs the server.
as_postgres() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u "$pg_user" -- "$@"; else "$@"; fi
}

# parse_args USAGE ARGS...: "[-d DATA_DIR] OPERAND"; sets data (-d, else BATCHRUNNER_DATA_DIR, else
# /var/lib/batchrunner, made absolute) and operand (made absolute).
parse_args() {
    local usage="usage: $1 [-d DATA_DIR] $2" opt
    shift 2
    data="" OPTIND=1
    while getopts "d:h" opt; do
        case "$opt" in d) data="$OPTARG" ;; *) echo "$usage" >&2; exit 2 ;; esac
    done
    shift $((OPTIND - 1))
    [ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
    operand="$(readlink -m "$1")"
    data="$(readlink -m "${data:-${BATCHRUNNER_DATA_DIR:-/var/lib/batchrunner}}")"
}
