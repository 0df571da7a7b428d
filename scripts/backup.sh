#!/usr/bin/env bash
# A consistent online backup of BatchRunner's embedded PostgreSQL: its jobs, attempts, outputs lists, node
# records and Hangfire queue, while BatchRunner keeps running.
#
#   scripts/backup.sh [-d DATA_DIR] OUTPUT.dump
#
# DATA_DIR defaults to BATCHRUNNER_DATA_DIR, else /var/lib/batchrunner. The dump is pg_dump's custom format
# (compressed; one snapshot, so every table is from the same instant), made with the server's own Debian
# binaries over its Unix socket as the postgres user; it is written to OUTPUT.dump.tmp and renamed when
# complete. Restore it with scripts/restore.sh. Job logs and output files are not in the database: they
# stay in DATA_DIR/jobs (copy that directory too, e.g. with tar or rsync, to keep them).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib/embedded-postgres.sh"

parse_args "$0" OUTPUT.dump "$@"
out="$operand"
socket="$data/postgres-run"
[ -S "$socket/.s.PGSQL.$pg_port" ] || { echo "backup: no running embedded PostgreSQL at $socket (is BatchRunner running with data directory $data?)" >&2; exit 1; }

bin="$(pg_bin)"
mkdir -p "$(dirname "$out")"
# pg_dump runs as postgres but its output is written by this shell, so OUTPUT may be anywhere we can write.
as_postgres "$bin/pg_dump" --host "$socket" --port "$pg_port" --username postgres --format custom "$pg_database" > "$out.tmp"
mv "$out.tmp" "$out"
echo "backup: $data -> $out ($(stat -c %s "$out") bytes)"
