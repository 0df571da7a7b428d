#!/usr/bin/env bash
# Restores a dump made by scripts/backup.sh into a fresh BatchRunner data directory.
#
#   scripts/restore.sh [-d NEW_DATA_DIR] BACKUP.dump
#
# NEW_DATA_DIR defaults to BATCHRUNNER_DATA_DIR, else /var/lib/batchrunner; it must not hold a cluster yet
# (DATA_DIR/postgres): stop BatchRunner and move the old directory away first. The script initialises the
# cluster the way BatchRunner's first start does (initdb as postgres, trust on the Unix socket, UTF8, no
# locale), starts it on a temporary socket with no TCP port, restores the dump into the "batchrunner"
# database in one transaction, and stops it. Then start BatchRunner with BATCHRUNNER_DATA_DIR=NEW_DATA_DIR:
# it applies any newer migrations itself. Copy the old DATA_DIR/jobs there too for the jobs' logs and outputs.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/embedded-postgres.sh"

parse_args "$0" BACKUP.dump "$@"
dump="$operand"
[ -r "$dump" ] || { echo "restore: cannot read $dump" >&2; exit 1; }
cluster="$data/postgres"
if [ -e "$cluster/PG_VERSION" ]; then
    echo "restore: $cluster already holds a cluster; restore only into a fresh data directory" >&2
    exit 1
fi

bin="$(pg_bin)"
mkdir -p "$cluster" "$data/postgres-run"
# The postgres user reads the dump and must be able to enter the data directory's parents.
tmp="$(mktemp -d)"
sock="$tmp/sock"
mkdir "$sock"
cp "$dump" "$tmp/restore.dump"
if [ "$(id -u)" -eq 0 ]; then
    chown -R "$pg_user:" "$cluster" "$data/postgres-run" "$tmp"
fi
chmod 700 "$cluster" "$data/postgres-run"
cleanup() {
    as_postgres "$bin/pg_ctl" -D "$cluster" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

as_postgres "$bin/initdb" -D "$cluster" -A trust -U postgres -E UTF8 --no-locale >/dev/null
as_postgres "$bin/pg_ctl" -D "$cluster" -l "$tmp/server.log" -w -t 60 \
    -o "-k $sock -p $pg_port -c listen_addresses=" start >/dev/null \
    || { cat "$tmp/server.log" >&2; exit 1; }
as_postgres "$bin/createdb" --host "$sock" --port "$pg_port" --username postgres "$pg_database"
as_postgres "$bin/pg_restore" --host "$sock" --port "$pg_port" --username postgres --dbname "$pg_database" \
    --single-transaction --exit-on-error "$tmp/restore.dump"
echo "restore: $dump -> $data (start BatchRunner with BATCHRUNNER_DATA_DIR=$data)"
