#!/usr/bin/env bash
# The development database named by POSTGRES_DB (default diagramsite), created if it is missing,
# with the pgvector extension: `make run-web` calls it before migrating (migrate cannot create it).
set -euo pipefail
db="${POSTGRES_DB:-diagramsite}"
export PGHOST="${POSTGRES_HOST:-127.0.0.1}" PGPORT="${POSTGRES_PORT:-5432}" PGUSER="${POSTGRES_USER:-postgres}"
if [ -n "${POSTGRES_PASSWORD:-}" ]; then export PGPASSWORD="$POSTGRES_PASSWORD"; fi
if ! psql -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '${db//\'/\'\'}'" | grep -q 1; then
  createdb "$db"
  echo "created the database $db"
fi
psql -d "$db" -qc "CREATE EXTENSION IF NOT EXISTS vector"
