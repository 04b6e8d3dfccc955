"""Real processes for end-to-end tests: GPU workers (on the CPU, tiny models)
and a daphne web server, pointed at the test database and this run's Redis prefix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent


def process_env(**overrides) -> dict[str, str]:
    """The environment of a child process that shares this test run's database,
    Redis prefix, media and tiny models."""
    env = dict(os.environ)
    env.update(
        {
            "POSTGRES_DB": settings.DATABASES["default"]["NAME"],
            "CHANNELS_PREFIX": settings.CHANNEL_LAYERS["default"]["CONFIG"]["prefix"],
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "DESCRIBER_MODEL": "tiny",
            "DESCRIBER_POLL_SECONDS": "0.5",
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "LOG_LEVEL": "INFO",
        }
    )
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def start_worker(log_path: Path, **env) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "manage.py", "runworker", settings.WORKER_CHANNEL],
        cwd=ROOT,
        env=process_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_daphne(port: int, log_path: Path, **env) -> subprocess.Popen:
    log = open(log_path, "ab")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "diagramsite.asgi:application"],
        cwd=ROOT,
        env=process_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(lambda: _port_open(port), timeout=30, what=f"daphne on port {port}")
    return process


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class PrivateRedis:
    """A redis-server of this test module's own, without persistence, that tests may kill."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self.answers, timeout=10, what=f"redis-server on port {self.port}")

    def answers(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_timeout=0.5).ping()
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        stop(self.process, signal.SIGKILL)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None
