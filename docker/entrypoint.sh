#!/bin/sh
# Starts a diagramsite container, web or worker, then runs its command:
#   1. a random DJANGO_SECRET_KEY on the first start, kept in DJANGO_SECRET_KEY_FILE
#      (only where DJANGO_SECRET_KEY is not set);
#   2. waits for PostgreSQL;
#   3. with MIGRATE_ON_START=1 (the web service) applies migrations and loads the
#      starter examples; otherwise (the worker) waits until the web has migrated;
#   4. execs the command (daphne by default), so it gets the signals directly.
set -eu
cd "$(dirname "$0")/.."

ensure_secret_key() {
    key_file="${DJANGO_SECRET_KEY_FILE:-}"
    if [ -n "${DJANGO_SECRET_KEY:-}" ] || [ -z "$key_file" ] || [ -s "$key_file" ]; then
        return 0
    fi
    if [ -w "$(dirname "$key_file")" ]; then
        (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(50))' > "$key_file")
        echo "entrypoint: generated a random secret key in $key_file"
    fi
}

# The starter examples (the retrieval set) are loaded on a fresh installation's
# first start only (--if-empty), so later curation in the admin is never
# reverted. `manage.py import_examples examples/starter` updates them by hand.
# IMPORT_EXAMPLES_ON_START=0 turns it off.
import_starter_examples() {
    if [ "${IMPORT_EXAMPLES_ON_START:-1}" != 1 ] || [ ! -d examples/starter ]; then
        return 0
    fi
    if python manage.py help import_examples >/dev/null 2>&1; then
        python manage.py import_examples examples/starter --if-empty
    fi
}

if [ "${MIGRATE_ON_START:-0}" = 1 ]; then
    ensure_secret_key
fi
python docker/wait_for_db.py
if [ "${MIGRATE_ON_START:-0}" = 1 ]; then
    python manage.py migrate --noinput
    import_starter_examples
else
    python docker/wait_for_db.py --migrated
fi
exec "$@"
