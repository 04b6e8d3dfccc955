"""Wait until PostgreSQL accepts connections (and, with --migrated, until every
migration is applied), using the same settings as the site. Exits 1 after
WAIT_FOR_DB_SECONDS (default 120) with the last error."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.db.migrations.executor import MigrationExecutor  # noqa: E402
from django.db.utils import Error as DatabaseError  # noqa: E402


def unapplied_migrations() -> int:
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))


def ready(want_migrated: bool) -> str:
    """"" when ready, else what we are waiting for."""
    try:
        connection.ensure_connection()
        pending = unapplied_migrations() if want_migrated else 0
    except DatabaseError as error:
        connection.close()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"PostgreSQL at {connection.settings_dict['HOST']}:{connection.settings_dict['PORT']} ({reason})"
    return f"{pending} migrations to be applied by the web service" if pending else ""


def main() -> int:
    want_migrated = "--migrated" in sys.argv[1:]
    deadline = time.monotonic() + float(os.environ.get("WAIT_FOR_DB_SECONDS", "120"))
    last_reported = ""
    while waiting_for := ready(want_migrated):
        if time.monotonic() > deadline:
            print(f"wait_for_db: gave up waiting for {waiting_for}", file=sys.stderr)
            return 1
        if waiting_for != last_reported:
            print(f"wait_for_db: waiting for {waiting_for}", flush=True)
            last_reported = waiting_for
        time.sleep(2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
