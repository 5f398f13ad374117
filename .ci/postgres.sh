#!/usr/bin/env bash
# Start a local PostgreSQL on 127.0.0.1 for the postgres-marked tests; print the one line to source.
#
#   if bash .ci/postgres.sh > .ci/pg.env; then source .ci/pg.env; else echo "skipped"; fi
#
# stdout carries only `export VIDPIPE_TEST_POSTGRES_URL=...`; all messages go to stderr.
# Idempotent: an installed package, an existing cluster, a running server, an existing role or
# database are all fine. Installs the Debian package `postgresql` with apt-get when no server is
# installed (root or passwordless sudo).
# The role may create databases: tests make a fresh, randomly named database per run and drop it.
#
# Settings (environment): VIDPIPE_PG_USER (vidpipe), VIDPIPE_PG_PASSWORD (vidpipe, a local test
# password only), VIDPIPE_PG_DB (vidpipe_test), VIDPIPE_PG_PORT (the cluster's port, else 5432).
set -euo pipefail

PG_USER="${VIDPIPE_PG_USER:-vidpipe}"
PG_PASSWORD="${VIDPIPE_PG_PASSWORD:-vidpipe}"
PG_DB="${VIDPIPE_PG_DB:-vidpipe_test}"
WAIT_SECONDS=30

log() { echo "postgres.sh: $*" >&2; }
fail() {
    log "FAILED: $*"
    exit 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo > /dev/null && sudo -n true 2> /dev/null; then
        sudo -n "$@"
    else
        fail "need root (or passwordless sudo) to run: $*"
    fi
}

as_postgres() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    elif command -v sudo > /dev/null && sudo -n -u postgres true 2> /dev/null; then
        sudo -n -u postgres "$@"
    else
        fail "need root, the postgres user or passwordless sudo to administer the server"
    fi
}

install_server() {
    if command -v pg_lsclusters > /dev/null &&
        ls /usr/lib/postgresql/*/bin/postgres > /dev/null 2>&1; then
        return
    fi
    command -v apt-get > /dev/null || fail "PostgreSQL is not installed and apt-get is unavailable"
    log "installing the Debian package postgresql (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 ||
        fail "apt-get update failed (no access to the package mirror?)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql >&2 || fail "apt-get install postgresql failed"
}

# Prints "version name port status" of the cluster to use, creating one if there is none.
pick_cluster() {
    local line
    line="$(pg_lsclusters --no-header 2> /dev/null | sort -k1,1nr | head -n1 || true)"
    if [ -z "$line" ]; then
        local version
        version="$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' |
            sort -nr | head -n1)"
        [ -n "$version" ] || fail "no PostgreSQL server binaries under /usr/lib/postgresql"
        log "creating cluster $version/main"
        as_root pg_createcluster "$version" main --port "${VIDPIPE_PG_PORT:-5432}" >&2 ||
            fail "pg_createcluster $version main failed"
        line="$(pg_lsclusters --no-header | sort -k1,1nr | head -n1)"
    fi
    awk '{print $1, $2, $3, $4}' <<< "$line"
}

install_server
CLUSTER_LINE="$(pick_cluster)"
read -r VERSION CLUSTER PORT STATUS <<< "$CLUSTER_LINE"
log "cluster $VERSION/$CLUSTER on port $PORT is $STATUS"
if [ "$STATUS" != online ]; then
    # pg_ctlcluster uses systemd when it runs, pg_ctl otherwise (containers); an already running
    # server makes it exit 2, which is fine.
    as_root pg_ctlcluster "$VERSION" "$CLUSTER" start >&2 || {
        code=$?
        [ "$code" = 2 ] || fail "pg_ctlcluster $VERSION $CLUSTER start exited $code (see \
/var/log/postgresql/postgresql-$VERSION-$CLUSTER.log)"
    }
fi

for _ in $(seq "$WAIT_SECONDS"); do
    pg_isready -q -h 127.0.0.1 -p "$PORT" && break
    sleep 1
done
pg_isready -q -h 127.0.0.1 -p "$PORT" ||
    fail "server not accepting connections on 127.0.0.1:$PORT after ${WAIT_SECONDS}s"

psql_admin() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PORT" -d postgres "$@"; }

# Role and database: create if missing; the password is reset so a rerun always matches.
psql_admin -v user="$PG_USER" -v password="$PG_PASSWORD" >&2 << 'SQL' || fail "cannot create role"
SELECT format('CREATE ROLE %I LOGIN CREATEDB', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE :"user" WITH LOGIN CREATEDB PASSWORD :'password';
SQL
psql_admin -v user="$PG_USER" -v db="$PG_DB" >&2 << 'SQL' || fail "cannot create database"
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL

PGPASSWORD="$PG_PASSWORD" psql -X -q -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" \
    -c 'SELECT 1' > /dev/null 2>&1 || fail "cannot log in as $PG_USER on 127.0.0.1:$PORT"

log "ready: $(PGPASSWORD="$PG_PASSWORD" psql -X -At -h 127.0.0.1 -p "$PORT" -U "$PG_USER" \
    -d "$PG_DB" -c 'SHOW server_version')"
URL="postgresql+psycopg2://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
echo "export VIDPIPE_TEST_POSTGRES_URL=$URL"
