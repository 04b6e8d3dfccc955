"""Fault runs: the worker's job lifecycle under real faults, with real processes.

    python bench/fault_runs.py [--project DIR] [--scenario NAME ...] [--scale 20] [--seed 1] [--keep]

Starts a private PostgreSQL 15 (pgvector) and a private Redis on free ports under a temporary
directory, migrates, builds the tiny models, creates conversions through the project's own services
and runs `manage.py runworker describer-gpu` processes of the project in --project (default: this
checkout) against them. Scenarios (all by default):

    two-workers  two workers, 40 mixed jobs, every timing setting divided by --scale
    kill9        one worker, kill -9 of its process group at --kills seeded random moments after it is
                 ready, restarted at once each time; 30 jobs queued in a wave at each (re)start
    redis        two workers, 20 jobs, the private Redis killed for --outage seconds mid-run
    postgres     two workers, 20 jobs, the private PostgreSQL stopped (pg_ctl stop -m fast) as long

Final writes are counted by a trigger of this script's own (every UPDATE of describer_conversion that
makes status done/failed/cancelled, or writes a new finished_at with one of them), so the figures do
not depend on the code under test. A job "started" when its row ever carried generated output
(tokens_generated > 0 or output_raw not empty): HEAD sets started_at when a job is claimed, so
started_at alone cannot tell a job that ran from one that only waited in a worker's batch.

Prints a table per scenario and a summary; exits 1 when a "must hold" fails. The machine's own
PostgreSQL (5432) and Redis (6379) are never used.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SCENARIOS = ("two-workers", "kill9", "redis", "postgres")
FINAL_STATUSES = ("done", "failed", "cancelled")
FINAL_LIST = list(FINAL_STATUSES)  # psycopg adapts a list, not a tuple
DB_NAME = "faults"
KILL9_JOBS = 30
# Timing settings divided by --scale (the batch size is passed unscaled). Fallbacks for a
# settings.py that lacks one; DESCRIBER_HEARTBEAT_S is new (older code ignores it).
TIMING_FALLBACKS = {
    "DESCRIBER_HEARTBEAT_S": ("envfloat", 10),
    "DESCRIBER_STALE_AFTER_S": ("envint", 120),
    "DESCRIBER_TIME_LIMIT_S": ("envfloat", 300),
    "DESCRIBER_POLL_SECONDS": ("envfloat", 5),
    "DESCRIBER_BATCH_WINDOW_MS": ("envint", 50),
    "DESCRIBER_STREAM_INTERVAL_MS": ("envint", 100),
}
UNSCALED = {"DESCRIBER_BATCH_SIZE": ("envint", 16)}

AUDIT_SQL = """
CREATE SEQUENCE IF NOT EXISTS fault_updates;
CREATE TABLE IF NOT EXISTS fault_final_write (
    id bigserial PRIMARY KEY,
    conversion_id uuid NOT NULL,
    old_status text,
    new_status text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS fault_seen (
    conversion_id uuid PRIMARY KEY,
    progressed boolean NOT NULL DEFAULT false
);
CREATE OR REPLACE FUNCTION fault_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_json jsonb := to_jsonb(NEW);  -- tolerates columns other than status/finished_at going away
BEGIN
    PERFORM nextval('fault_updates');
    IF NEW.status IN ('done', 'failed', 'cancelled')
       AND (OLD.status IS DISTINCT FROM NEW.status OR NEW.finished_at IS DISTINCT FROM OLD.finished_at) THEN
        INSERT INTO fault_final_write (conversion_id, old_status, new_status) VALUES (NEW.id, OLD.status, NEW.status);
    END IF;
    IF (coalesce((row_json->>'tokens_generated')::bigint, 0) > 0 OR coalesce(row_json->>'output_raw', '') <> '')
       AND NOT EXISTS (SELECT 1 FROM fault_seen WHERE conversion_id = NEW.id) THEN
        INSERT INTO fault_seen (conversion_id, progressed) VALUES (NEW.id, true) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS fault_audit ON describer_conversion;
CREATE TRIGGER fault_audit AFTER UPDATE ON describer_conversion FOR EACH ROW EXECUTE FUNCTION fault_audit();
"""

FIGURES_SQL = """
SELECT c.id, to_jsonb(c)->>'kind', c.status, c.attempts, c.started_at IS NOT NULL,
       (SELECT count(*) FROM fault_final_write f WHERE f.conversion_id = c.id),
       (SELECT count(*) FROM describer_mermaidversion m WHERE m.conversion_id = c.id AND m.origin = 'model'),
       coalesce(s.progressed, false), left(coalesce(to_jsonb(c)->>'error_message', ''), 140)
FROM describer_conversion c LEFT JOIN fault_seen s ON s.conversion_id = c.id
ORDER BY c.created_at
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["runuser", "-u", "postgres", "--", *map(str, command)], check=True, capture_output=True, text=True, **kwargs
    )


def sleep_until(predicate: Callable[[], bool], seconds: float, interval: float = 0.25) -> bool:
    """Sleep up to `seconds`; True as soon as `predicate()` holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    return predicate()


# --- Private PostgreSQL and Redis ------------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own in `root`, run as the postgres OS user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.logfile = root / "server.log"
        self.port = free_port()
        self.running = False

    def init(self) -> None:
        self.root.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        as_postgres(PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        extra = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "max_connections = 60",
        ]
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# fault_runs.py\n" + "\n".join(extra) + "\n")

    def start(self) -> None:
        as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-l", self.logfile, "-w", "-t", "60", "start",
                    start_new_session=True)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop")
        self.running = False

    def postmaster_pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cleanup(self) -> None:
        """Stop the cluster however it is: pg_ctl first, then its postmaster's PID."""
        if not self.data.exists():
            return
        try:
            as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "-t", "20", "stop")
        except subprocess.CalledProcessError:
            pass
        pid = self.postmaster_pid()
        if pid:
            _kill_pid(pid, signal.SIGKILL)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return as_postgres(
            PG_BIN / "psql", "-h", "127.0.0.1", "-p", str(self.port), "-d", database, "-v", "ON_ERROR_STOP=1",
            "-Atc", sql,
        ).stdout.strip()


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.root.mkdir(exist_ok=True)
        logfile = open(self.root / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.root), "--daemonize", "no"],
            stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
        )
        logfile.close()
        if not sleep_until(lambda: self.command("PING") == "+PONG", 15, 0.1):
            raise RuntimeError(f"private redis on port {self.port} did not answer PING")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def command(self, command: str) -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(command.encode() + b"\r\n")
                return sock.recv(64).decode().strip()
        except OSError:
            return None


def _kill_pid(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# --- Workers ------------------------------------------------------------------------------------


@dataclass
class Worker:
    name: str
    process: subprocess.Popen
    log_path: Path
    log_offset: int  # where this process's lines start in log_path
    started: float
    killed_by_us: bool = False
    exit_counted: bool = False

    def is_ready(self) -> bool:
        """The worker logged that it is ready (models loaded)."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self.log_offset)
                return re.search(rb"\bready\b", handle.read()) is not None
        except OSError:
            return False


class WorkerPool:
    """Worker processes of one scenario, each in its own process group."""

    def __init__(self, project: Path, env: dict[str, str], log_dir: Path) -> None:
        self.project = project
        self.env = env
        self.log_dir = log_dir
        self.workers: list[Worker] = []
        self.exits: list[str] = []  # "name rc" of processes that ended without us killing them

    def start(self, name: str) -> Worker:
        log_path = self.log_dir / f"{name}.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        logfile = open(log_path, "ab")  # noqa: SIM115 - the child holds it
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "describer-gpu"],
            cwd=self.project, env=self.env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
        )
        logfile.close()
        worker = Worker(name, process, log_path, offset, time.monotonic())
        self.workers.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        worker.killed_by_us = True
        if worker.process.poll() is None:
            try:
                os.killpg(worker.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.process.wait(30)

    def count_exits(self) -> list[Worker]:
        """Workers that ended on their own since the last call."""
        ended = []
        for worker in self.workers:
            if worker.process.poll() is not None and not worker.killed_by_us and not worker.exit_counted:
                worker.exit_counted = True
                self.exits.append(f"{worker.name} rc={worker.process.returncode}")
                ended.append(worker)
        return ended

    def alive(self) -> list[Worker]:
        return [worker for worker in self.workers if worker.process.poll() is None]

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                self.kill(worker)

    def log_paths(self) -> list[Path]:
        return sorted({worker.log_path for worker in self.workers})


# --- Settings of the project under test -----------------------------------------------------------


def settings_defaults(project: Path) -> dict[str, tuple[str, float]]:
    """NAME -> (envint/envfloat, default) for every `envX("NAME", default)` in diagramsite/settings.py."""
    tree = ast.parse((project / "diagramsite" / "settings.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 2):
            continue
        name = node.args[0]
        if node.func.id in ("envint", "envfloat") and isinstance(name, ast.Constant) and isinstance(name.value, str):
            try:  # arithmetic on literals only, e.g. 10 * 1024 * 1024
                value = eval(compile(ast.Expression(node.args[1]), "settings", "eval"), {"__builtins__": {}})
            except Exception:  # noqa: BLE001 - not a literal default: keep the fallback
                continue
            found[name.value] = (node.func.id, value)
    return found


def timing_env(project: Path, scale: float) -> tuple[dict[str, str], list[str]]:
    """The scaled timing settings as environment variables, and a line per setting for the report."""
    defaults = settings_defaults(project)
    env, notes = {}, []
    for name, fallback in {**TIMING_FALLBACKS, **UNSCALED}.items():
        kind, default = defaults.get(name, fallback)
        value = default if name in UNSCALED else default / scale
        text = str(max(1, round(value))) if kind == "envint" else f"{value:g}"
        env[name] = text
        source = "settings.py" if name in defaults else "fallback, not in settings.py"
        notes.append(f"{name}={text} (default {default:g}, {kind}, {source})")
    return env, notes


# --- The run: services, Django in this process, jobs, figures ------------------------------------


@dataclass
class Figures:
    scenario: str
    jobs: int = 0
    finished: int = 0
    lost: int = 0
    run_twice: int = 0
    failed: int = 0
    failed_never_started: int = 0
    worker_exits: int = 0
    kills: int = 0
    retried: int = 0  # attempts > 1
    wall_s: float = 0.0
    error_lines: int = 0
    traceback_lines: int = 0
    must_hold: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(self.must_hold.values())


COLUMNS = [
    ("scenario", "scenario"), ("jobs", "jobs"), ("finished", "finished"), ("lost", "lost"),
    ("run_twice", "run twice"), ("failed", "failed"), ("failed_never_started", "failed never started"),
    ("worker_exits", "worker exits"), ("kills", "kills"), ("retried", "attempts>1"), ("wall_s", "wall s"),
    ("error_lines", "ERROR lines"), ("traceback_lines", "Traceback lines"),
]


def table(rows: list[Figures]) -> str:
    cells = [[title for _, title in COLUMNS]]
    for row in rows:
        cells.append([f"{getattr(row, key):.1f}" if key == "wall_s" else str(getattr(row, key)) for key, _ in COLUMNS])
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


class FaultRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.project = Path(args.project).resolve()
        self.root = Path(tempfile.mkdtemp(prefix="fault-runs-"))
        os.chmod(self.root, 0o755)  # the postgres user must reach its data directory
        self.postgres = PrivatePostgres(self.root / "pg")
        self.redis = PrivateRedis(self.root / "redis")
        self.pools: list[WorkerPool] = []
        self.rng = random.Random(args.seed)
        self.cleaned = False
        self.env: dict[str, str] = {}

    # Setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"temp dir {self.root}; project {self.project}")
        self.postgres.init()
        self.postgres.start()
        available = self.postgres.psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
        if available != "1":
            raise RuntimeError("pgvector is not installed into PostgreSQL 15 (run `make system-deps`)")
        self.postgres.psql(f"CREATE DATABASE {DB_NAME}")
        self.postgres.psql("CREATE EXTENSION IF NOT EXISTS vector", DB_NAME)
        self.redis.start()
        log(f"private PostgreSQL on port {self.postgres.port}, Redis on port {self.redis.port}")
        self.env = self.child_env()
        self.manage("migrate", "--no-input", "-v", "0")
        self.manage("make_tiny_models", str(self.root / "tiny-models"), "-v", "0")
        self.setup_django()
        self.execute(AUDIT_SQL)

    def child_env(self) -> dict[str, str]:
        timings, notes = timing_env(self.project, self.args.scale)
        tokens = str(self.args.tokens)
        env = dict(os.environ)
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "diagramsite.settings",
                "POSTGRES_HOST": "127.0.0.1",
                "POSTGRES_PORT": str(self.postgres.port),
                "POSTGRES_DB": DB_NAME,
                "POSTGRES_USER": "postgres",
                "POSTGRES_PASSWORD": "",
                "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
                "CHANNELS_PREFIX": f"faults{uuid.uuid4().hex[:8]}",
                "MEDIA_ROOT": str(self.root / "media"),
                "DESCRIBER_MODEL": "tiny",
                "TINY_MODELS_DIR": str(self.root / "tiny-models"),
                "DESCRIBER_MIN_NEW_TOKENS": tokens,
                "DESCRIBER_MAX_NEW_TOKENS": tokens,
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "INFO",
                # Two workers on two cores: one thread each, or OpenMP's spinning threads fight.
                "OMP_NUM_THREADS": str(self.args.threads),
                **timings,
            }
        )
        log(f"  workers: cwd {self.project}, POSTGRES_HOST/PORT/DB/USER, REDIS_URL,"
            f" CHANNELS_PREFIX={env['CHANNELS_PREFIX']}, MEDIA_ROOT, DESCRIBER_MODEL=tiny, TINY_MODELS_DIR,"
            " HF_HUB_OFFLINE=1, LOG_LEVEL=INFO and:")
        for note in notes:
            log(f"  {note}")
        log(f"  DESCRIBER_MIN_NEW_TOKENS=DESCRIBER_MAX_NEW_TOKENS={tokens}, OMP_NUM_THREADS={self.args.threads}")
        return env

    def manage(self, *command: str) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", *command], cwd=self.project, env=self.env, capture_output=True, text=True
        )
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(command)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")

    def setup_django(self) -> None:
        """Django in this process, on the project under test and the private services."""
        for name in ("DJANGO_SETTINGS_MODULE", "POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER",
                     "POSTGRES_PASSWORD", "REDIS_URL", "CHANNELS_PREFIX", "MEDIA_ROOT"):
            os.environ[name] = self.env[name]
        sys.path.insert(0, str(self.project))
        import django

        django.setup()
        from django.contrib.auth import get_user_model

        self.owner = get_user_model().objects.get_or_create(username="fault-runs")[0]

    # Database helpers ---------------------------------------------------------------------------

    def execute(self, sql: str, params: tuple = ()) -> list[tuple] | None:
        """Run SQL in this process's connection; None while the database is unreachable."""
        from django.db import InterfaceError, OperationalError, connection

        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except (OperationalError, InterfaceError):
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                pass
            return None

    def unfinished_count(self) -> int | None:
        rows = self.execute("SELECT count(*) FROM describer_conversion WHERE status <> ALL(%s)", (FINAL_LIST,))
        return None if rows is None else rows[0][0]

    def finished_count(self) -> int | None:
        rows = self.execute("SELECT count(*) FROM describer_conversion WHERE status = ANY(%s)", (FINAL_LIST,))
        return None if rows is None else rows[0][0]

    def update_counter(self) -> int | None:
        rows = self.execute("SELECT last_value FROM fault_updates")
        return None if rows is None else rows[0][0]

    def reset(self) -> None:
        self.execute("TRUNCATE describer_conversion, fault_final_write, fault_seen CASCADE")
        self.redis.command("FLUSHALL")

    def create_jobs(self, count: int, first_index: int = 0) -> None:
        """Half diagram → text, half text → diagram, interleaved, through the project's services."""
        from describer import services
        from describer.images import normalise_upload

        for index in range(first_index, first_index + count):
            if index % 2 == 0:
                filename = f"flow-{index}.png"
                image = normalise_upload(diagram_png(f"Step {index}"), filename)
                services.conversion_create_from_image(owner=self.owner, image=image, original_filename=filename)
            else:
                text = (f"Order {index}: the clerk receives the order, checks the stock, ships the goods "
                        "when they are there and otherwise asks the supplier, then sends the invoice.")
                services.conversion_create_from_text(owner=self.owner, text=text)

    # Scenario plumbing -------------------------------------------------------------------------

    def pool(self, scenario: str) -> WorkerPool:
        log_dir = self.root / "logs" / scenario
        log_dir.mkdir(parents=True, exist_ok=True)
        pool = WorkerPool(self.project, self.env, log_dir)
        self.pools.append(pool)
        return pool

    def wait_all_finished(self, pool: WorkerPool, timeout: float) -> bool:
        """Until no job is unfinished, every worker has ended, or the timeout."""

        def settled() -> bool:
            pool.count_exits()
            return self.unfinished_count() == 0 or not pool.alive()

        sleep_until(settled, timeout)
        return self.unfinished_count() == 0

    def wait_quiet(self, pool: WorkerPool, quiet_s: float, limit_s: float = 60) -> None:
        """Let workers finish what they still hold in memory: wait until no row has been updated
        for `quiet_s` (a worker re-running a job another one finished writes progress)."""
        deadline = time.monotonic() + limit_s
        last, since = self.update_counter(), time.monotonic()
        while time.monotonic() < deadline and pool.alive():
            time.sleep(0.25)
            pool.count_exits()
            current = self.update_counter()
            if current != last:
                last, since = current, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return

    def figures(self, scenario: str, pool: WorkerPool, wall_s: float) -> Figures:
        rows = self.execute(FIGURES_SQL) or []
        figures = Figures(scenario, jobs=len(rows), wall_s=wall_s)
        for _id, _kind, status, attempts, _started_at, final_writes, model_versions, progressed, _error in rows:
            figures.finished += status in FINAL_STATUSES
            figures.lost += status not in FINAL_STATUSES
            figures.run_twice += final_writes > 1 or model_versions > 1
            figures.failed += status == "failed"
            figures.failed_never_started += status == "failed" and not progressed
            figures.retried += attempts > 1
        figures.worker_exits = len(pool.exits)
        figures.notes += [f"worker exited on its own: {ended}" for ended in pool.exits]
        figures.notes += self.job_notes(rows) + self.generation_notes()
        figures.error_lines, figures.traceback_lines = count_log_lines(pool.log_paths())
        return figures

    def job_notes(self, rows: list[tuple]) -> list[str]:
        notes = []
        for id_, kind, status, attempts, started_at, final_writes, model_versions, progressed, error in rows:
            if status == "failed" or status not in FINAL_STATUSES or final_writes > 1 or model_versions > 1:
                notes.append(
                    f"job {str(id_)[:8]} {kind} {status}: attempts={attempts} final_writes={final_writes} "
                    f"model_versions={model_versions} output_seen={progressed} started_at_set={started_at}"
                    + (f" error={error!r}" if error else "")
                )
        return notes

    def generation_notes(self) -> list[str]:
        """Median generation seconds per kind, from the jobs' own timings where they have them."""
        rows = self.execute(
            "SELECT to_jsonb(c)->>'kind', percentile_cont(0.5) WITHIN GROUP (ORDER BY"
            " (to_jsonb(c)->'timings'->>'generation_s')::float), count(*) FROM describer_conversion c"
            " WHERE to_jsonb(c)->'timings'->>'generation_s' IS NOT NULL GROUP BY 1 ORDER BY 1"
        )
        return [f"median generation {kind}: {median:.2f} s ({count} jobs)" for kind, median, count in rows or []]

    # Scenarios ---------------------------------------------------------------------------------

    def run_two_workers(self) -> Figures:
        pool, started = self.begin("two-workers", jobs=40)
        pool.start("worker-a")
        pool.start("worker-b")
        self.wait_all_finished(pool, self.args.timeout)
        wall = time.monotonic() - started
        self.wait_quiet(pool, self.args.quiet)
        figures = self.end("two-workers", pool, wall)
        self.require(figures, lost=0, run_twice=0, failed=0, worker_exits=0)
        return figures

    def run_kill9(self) -> Figures:
        """One worker killed --kills times, restarted at once. The 30 jobs arrive in a wave per
        worker start, so there is work at every kill and jobs can also finish between kills (queued
        all at once, the first batches would use up their attempts and the run end early)."""
        total, cycles = KILL9_JOBS, max(1, self.args.kills)
        pool, started = self.begin("kill9", jobs=total, queue_now=False)
        worker, kills, created = pool.start("worker"), 0, 0
        deadline = started + self.args.timeout
        for cycle in range(cycles):
            wave = total * (cycle + 1) // cycles - created
            self.create_jobs(wave, first_index=created)
            created += wave
            self.wait_ready(worker)
            delay = self.rng.uniform(0.2, self.args.kill_span)
            if not sleep_until(lambda: worker.process.poll() is not None, delay):
                pool.kill(worker)
                kills += 1
                log(f"  kill -9 #{kills} at {time.monotonic() - started:.1f} s ({delay:.1f} s after ready)")
            pool.count_exits()
            worker = pool.start(f"worker-{cycle + 1}")
            if time.monotonic() > deadline:
                break
        self.create_jobs(total - created, first_index=created)
        # The last worker runs what is left; one that ends on its own is restarted.
        while time.monotonic() < deadline and self.unfinished_count() != 0:
            self.wait_all_finished(pool, deadline - time.monotonic())
            pool.count_exits()
            if not pool.alive():
                pool.start(f"worker-end-{len(pool.workers)}")
        wall = time.monotonic() - started
        self.wait_quiet(pool, self.args.quiet)
        figures = self.end("kill9", pool, wall)
        figures.kills = kills
        figures.must_hold[f"kills >= {self.args.kills}"] = kills >= self.args.kills
        self.require(figures, lost=0, run_twice=0, failed_never_started=0)
        return figures

    def run_outage(self, scenario: str, stop: Callable[[], None], start: Callable[[], None]) -> Figures:
        pool, started = self.begin(scenario, jobs=20)
        pool.start("worker-a")
        pool.start("worker-b")
        # "Mid-run": once a fifth of the jobs is finished.
        sleep_until(lambda: (self.finished_count() or 0) >= 4 or not pool.alive(), self.args.timeout)
        log(f"  stopping {scenario} at {time.monotonic() - started:.1f} s for {self.args.outage:g} s")
        stop()
        time.sleep(self.args.outage)
        start()
        pool.count_exits()
        log(f"  {scenario} back at {time.monotonic() - started:.1f} s; workers alive: {len(pool.alive())}")
        self.wait_all_finished(pool, self.args.timeout)
        wall = time.monotonic() - started
        self.wait_quiet(pool, self.args.quiet)
        figures = self.end(scenario, pool, wall)
        if scenario == "redis":
            self.require(figures, worker_exits=0, lost=0, run_twice=0, failed=0)
        else:
            self.require(figures, worker_exits=0, lost=0, run_twice=0, failed_never_started=0)
        return figures

    def wait_ready(self, worker: Worker) -> None:
        """Until the worker logs that it is ready or writes to a job (it is the only one alive), or ends."""
        updates = self.update_counter()
        sleep_until(
            lambda: worker.is_ready() or self.update_counter() != updates or worker.process.poll() is not None, 60
        )

    def begin(self, scenario: str, *, jobs: int, queue_now: bool = True) -> tuple[WorkerPool, float]:
        log(f"scenario {scenario}: {jobs} mixed jobs" + ("" if queue_now else ", queued in waves"))
        self.reset()
        if queue_now:
            self.create_jobs(jobs)
        return self.pool(scenario), time.monotonic()

    def end(self, scenario: str, pool: WorkerPool, wall: float) -> Figures:
        pool.count_exits()
        pool.kill_all()
        return self.figures(scenario, pool, wall)

    def require(self, figures: Figures, **expected: int) -> None:
        for name, value in expected.items():
            figures.must_hold[f"{name.replace('_', ' ')} == {value}"] = getattr(figures, name) == value

    def run_scenario(self, name: str) -> Figures:
        if name == "two-workers":
            return self.run_two_workers()
        if name == "kill9":
            return self.run_kill9()
        if name == "redis":
            return self.run_outage("redis", self.redis.stop, self.redis.start)
        return self.run_outage("postgres", lambda: self.postgres.stop("fast"), self.postgres.start)

    # Cleanup -------------------------------------------------------------------------------------

    def cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        for pool in self.pools:
            pool.kill_all()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001 - Django may never have been set up
            pass
        self.redis.stop()
        self.postgres.cleanup()
        if self.args.keep:
            log(f"kept {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


def diagram_png(text: str, size: tuple[int, int] = (640, 400)) -> bytes:
    """A box-and-arrow picture, as tests/conftest.py draws them."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 240, 120), outline="black", width=3)
    draw.text((60, 70), text, fill="black")
    draw.line((240, 80, 400, 80), fill="black", width=3)
    draw.rectangle((400, 40, 600, 120), outline="black", width=3)
    draw.text((420, 70), "End", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def count_log_lines(paths: list[Path]) -> tuple[int, int]:
    errors = tracebacks = 0
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            errors += re.search(r"\bERROR\b", line) is not None
            tracebacks += "Traceback" in line
    return errors, tracebacks


def print_figures(figures: Figures, pool_logs: list[Path], tail_lines: int) -> None:
    print(table([figures]))
    for check, held in figures.must_hold.items():
        print(f"  must hold: {check:<28} {'ok' if held else 'FAILED'}")
    for note in figures.notes[:40]:
        print(f"  {note}")
    if len(figures.notes) > 40:
        print(f"  … {len(figures.notes) - 40} more")
    if not figures.ok:
        for path in pool_logs:
            lines = path.read_text(errors="replace").splitlines()
            print(f"--- last {tail_lines} lines of {path.name} ---")
            print("\n".join(lines[-tail_lines:]))
    print(flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=str(REPO), help="checkout whose manage.py runs (default: this one)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="repeatable; default: all")
    parser.add_argument("--scale", type=float, default=20, help="divide the timing settings by this (default 20)")
    parser.add_argument("--tokens", type=int, default=600, help="forced output length of every job (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the kill moments (default 1)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9s in the kill9 scenario (default 10)")
    parser.add_argument("--kill-span", type=float, default=8, help="a kill comes 0.2..SPAN s after ready (default 8)")
    parser.add_argument("--outage", type=float, default=20, help="seconds Redis/PostgreSQL stay down (default 20)")
    parser.add_argument("--timeout", type=float, default=300, help="give up on a scenario after this (default 300 s)")
    parser.add_argument("--quiet", type=float, default=3, help="at the end, wait until no row changed this long")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each worker (default 1)")
    parser.add_argument("--tail", type=int, default=40, help="log lines shown per worker when a must-hold fails")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, data) for inspection")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = FaultRun(args)
    atexit.register(run.cleanup)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    results: list[Figures] = []
    began = time.monotonic()
    try:
        run.setup()
        for name in args.scenario or SCENARIOS:
            figures = run.run_scenario(name)
            results.append(figures)
            print_figures(figures, run.pools[-1].log_paths(), args.tail)
    except KeyboardInterrupt:
        log("interrupted: stopping everything this script started")
        return 130
    finally:
        run.cleanup()
    print(f"Summary ({args.project}, scale {args.scale:g}, {args.tokens} tokens a job, seed {args.seed}; "
          f"{time.monotonic() - began:.0f} s in all)")
    print(table(results))
    failed = [f"{row.scenario}: {check}" for row in results for check, held in row.must_hold.items() if not held]
    print("must hold: " + ("all held" if not failed else "FAILED: " + "; ".join(failed)))
    if args.json:
        Path(args.json).write_text(json.dumps([figures.__dict__ for figures in results], indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
