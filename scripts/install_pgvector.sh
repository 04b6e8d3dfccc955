#!/usr/bin/env bash
# Installs the pgvector extension into the local PostgreSQL if it is missing.
# Debian 12 has no pgvector package, so we build Debian trixie's source package
# against the running server's headers. Idempotent: does nothing when present.
set -euo pipefail

PGHOST="${POSTGRES_HOST:-127.0.0.1}"
PGUSER="${POSTGRES_USER:-postgres}"
have_vector() {
  psql -h "$PGHOST" -U "$PGUSER" -d postgres -tAc \
    "select 1 from pg_available_extensions where name = 'vector'" 2>/dev/null | grep -q 1
}

if have_vector; then
  echo "pgvector: already installed"
  exit 0
fi

pg_major=$(psql -h "$PGHOST" -U "$PGUSER" -d postgres -tAc "show server_version_num" | cut -c1-2)
echo "pgvector: building for PostgreSQL $pg_major"
cat > /etc/apt/sources.list.d/diagramsite-pgvector-src.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "postgresql-server-dev-$pg_major" make gcc dpkg-dev >/dev/null
work=$(mktemp -d)
(cd "$work" && apt-get source --download-only -qq pgvector && dpkg-source -x --no-check ./*.dsc src >/dev/null)
make -C "$work/src" OPTFLAGS="" PG_CONFIG="/usr/lib/postgresql/$pg_major/bin/pg_config" >/dev/null
make -C "$work/src" install PG_CONFIG="/usr/lib/postgresql/$pg_major/bin/pg_config" >/dev/null
rm -rf "$work"
have_vector && echo "pgvector: installed"
