"""The README's Development section: `make run-web` makes its database, migrates, loads the
starter examples and serves on the port asked for."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent


def test_make_run_web_creates_the_database_loads_the_examples_and_takes_a_port():
    # Run by `make test` itself: without the parent's flags, which make this one print its directory.
    env = {name: value for name, value in os.environ.items() if name not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    plan = subprocess.run(["make", "--no-print-directory", "-n", "run-web", "PORT=8123"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    steps = [line for line in plan.splitlines() if line.strip()]
    assert steps[-4:] == [
        "bash scripts/ensure_database.sh",
        ".venv/bin/python manage.py migrate",
        ".venv/bin/python manage.py import_examples examples/starter --if-empty",
        ".venv/bin/daphne -b 127.0.0.1 -p 8123 diagramsite.asgi:application",
    ]


def test_the_database_script_creates_a_missing_database_once_with_pgvector():
    name = f"dev_setup_{os.getpid()}"
    env = {**os.environ, "POSTGRES_DB": name}
    admin = psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)
    try:
        first = subprocess.run(["bash", "scripts/ensure_database.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
        again = subprocess.run(["bash", "scripts/ensure_database.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
        assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
        assert f"created the database {name}" in first.stdout and "created" not in again.stdout
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name) as connection:
            assert connection.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() == (1,)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()
