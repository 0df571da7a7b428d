#!/usr/bin/env bash
# Creates BatchRunner's role and database on an existing PostgreSQL server (README "Several machines")
# and prints the connection string to give every node (BATCHRUNNER_CONNECTION_STRING).
#
#   scripts/init-database.sh [--role batchrunner] [--database batchrunner] [--host HOST] [--port 5432]
#
#   --role NAME       the login role BatchRunner uses (default batchrunner): an ordinary role, no superuser,
#                     no CREATEDB/CREATEROLE; it owns the database, which is all the migrations need
#   --database NAME   the database (default batchrunner), owned by the role; other roles cannot connect
#   --host, --port    where the NODES reach the server: only written into the printed connection string
#
# The server to set up is reached as its superuser with psql: as root, through `runuser -u postgres`
# (peer authentication on the local socket, Debian's and Ubuntu's default); as another user, as that user.
# libpq's PGHOST and PGPORT choose the server (default: the local socket, port 5432).
# The role's password is BATCHRUNNER_DB_PASSWORD when set, else generated. Idempotent: an existing role
# keeps its password unless BATCHRUNNER_DB_PASSWORD is set; an existing database is given to the role.
# The password goes to psql on its standard input, never on a command line.
set -euo pipefail

role=batchrunner
database=batchrunner
host=""
port=5432

die() { echo "init-database: ERROR: $*" >&2; exit 1; }
log() { echo "init-database: $*" >&2; }
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (try --help)"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --role) need_value "$@"; role="$2"; shift 2 ;;
        --database) need_value "$@"; database="$2"; shift 2 ;;
        --host) need_value "$@"; host="$2"; shift 2 ;;
        --port) need_value "$@"; port="$2"; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

# Plain lower-case identifiers: no quoting questions in SQL or in the connection string.
for name in "$role" "$database"; do
    [[ "$name" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] || die "'$name': use lower-case letters, digits and _ (at most 63, not starting with a digit)"
done
[[ "$port" =~ ^[0-9]+$ ]] || die "--port must be a number: $port"
[ -n "$host" ] || host="$(hostname -f 2>/dev/null || hostname)"

command -v psql >/dev/null 2>&1 || die "psql not found: install the postgresql-client package"
psql_cmd=(psql -X -q -v ON_ERROR_STOP=1 -d postgres)
if [ "$(id -u)" -eq 0 ] && [ -z "${PGUSER:-}" ]; then
    id -u postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to connect as (set PGUSER and run as a superuser's OS user)"
    # runuser starts from a clean environment: hand the libpq variables that choose the server over.
    psql_cmd=(runuser -u postgres -- env ${PGHOST:+PGHOST=$PGHOST} ${PGPORT:+PGPORT=$PGPORT} "${psql_cmd[@]}")
fi

set_password=false
if [ -n "${BATCHRUNNER_DB_PASSWORD:-}" ]; then
    password="$BATCHRUNNER_DB_PASSWORD"
    set_password=true
    case "$password" in
        *"'"*|*\\*|*";"*|*$'\n'*) die "BATCHRUNNER_DB_PASSWORD must not contain quotes, backslashes, ';' or newlines" ;;
    esac
else
    password="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi

# On stdin: \set keeps the password off every command line; :'x' and :"x" quote literals and identifiers.
result="$(cd / && "${psql_cmd[@]}" -t -A <<SQL
\\set role '$role'
\\set database '$database'
\\set pw '$password'
\\set set_pw $set_password
select not exists (select 1 from pg_roles where rolname = :'role') as create_role \\gset
\\if :create_role
create role :"role" login nosuperuser nocreatedb nocreaterole password :'pw';
select 'created' as role_state \\gset
\\elif :set_pw
alter role :"role" login password :'pw';
select 'password-set' as role_state \\gset
\\else
alter role :"role" login;
select 'kept' as role_state \\gset
\\endif
select not exists (select 1 from pg_database where datname = :'database') as create_db \\gset
\\if :create_db
create database :"database" owner :"role" encoding 'UTF8' template template0;
\\else
alter database :"database" owner to :"role";
\\endif
revoke all on database :"database" from public;
grant all on database :"database" to :"role";
\\echo :role_state
SQL
)" || die "psql failed (see above); is the server running, and may this user connect as its superuser?"

case "$result" in
    *created*) log "created role $role and database $database (owned by $role)" ;;
    *password-set*) log "role $role existed: password set from BATCHRUNNER_DB_PASSWORD; database $database is owned by $role" ;;
    *) log "role $role existed and keeps its password; database $database is owned by $role"
       password="<the role's existing password>" ;;
esac
log "let the nodes in: listen_addresses in postgresql.conf, and in pg_hba.conf a line like"
log "  host  $database  $role  10.0.0.0/24  scram-sha-256"
echo "Host=$host;Port=$port;Database=$database;Username=$role;Password=$password"
