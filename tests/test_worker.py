"""The GPU worker as a real process (tiny models on the CPU), with PostgreSQL as
the queue: end to end, racing workers, kill -9 and restart."""

from __future__ import annotations

import signal
import time

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from describer.models import Conversion
from tests.conftest import diagram_png
from tests.processes import start_worker, stop, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Unconstrained: 24 tokens of the random model under the grammar end inside the title line
# (tests/test_constrained.py runs a worker under the grammars).
FAST = {"DESCRIBER_MIN_NEW_TOKENS": 16, "DESCRIBER_MAX_NEW_TOKENS": 24, "DESCRIBER_CONSTRAINED": "0"}
# Long enough to be killed mid-way on the CPU.
SLOW = {"DESCRIBER_MIN_NEW_TOKENS": 4000, "DESCRIBER_MAX_NEW_TOKENS": 4000, "DESCRIBER_TIME_LIMIT_S": 600}


@pytest.fixture
def worker_log(tmp_path):
    path = tmp_path / "worker.log"
    yield path
    if path.exists():
        print(path.read_text()[-4000:])  # shown when a test fails


@pytest.fixture
def run_worker(worker_log, tiny_models_dir):
    started = []

    def run(**env):
        process = start_worker(worker_log, TINY_MODELS_DIR=tiny_models_dir, **{**FAST, **env})
        started.append(process)
        return process

    yield run
    for process in started:
        stop(process, signal.SIGKILL)


def refreshed(conversion: Conversion) -> Conversion:
    conversion.refresh_from_db()
    return conversion


def finished(conversion: Conversion) -> bool:
    return refreshed(conversion).is_finished


def upload(client) -> Conversion:
    response = client.post("/upload/", {"image": SimpleUploadedFile("flow.png", diagram_png(), "image/png")})
    assert response.status_code == 302
    return Conversion.objects.latest("created_at")


def test_an_upload_is_described_end_to_end_by_a_worker_process(alice, run_worker):
    conversion = upload(alice)
    assert conversion.status == Conversion.Status.QUEUED
    run_worker()

    wait_for(lambda: finished(conversion), timeout=120, what="the conversion to finish")

    assert conversion.status == Conversion.Status.DONE, conversion.error_message
    assert conversion.output_raw
    assert conversion.output_text.startswith("# ")
    assert conversion.output_structure["steps"]
    assert conversion.tokens_generated >= 16
    assert conversion.attempts == 1
    assert {"queue_wait_s", "retrieval_s", "first_token_s", "generation_s", "tokens_per_s"} <= set(conversion.timings)
    page = alice.get(conversion.get_absolute_url())
    assert conversion.output_structure["title"] in page.content.decode()
    assert "ws-connect" not in page.content.decode()  # a finished page renders from the database


def test_jobs_queued_while_no_worker_runs_are_done_when_one_starts(alice, run_worker):
    conversions = [upload(alice) for _ in range(3)]
    run_worker()
    wait_for(lambda: all(finished(c) for c in conversions), timeout=120, what="all three conversions")
    assert {c.status for c in conversions} == {Conversion.Status.DONE}


def test_two_workers_racing_over_twenty_jobs_run_each_exactly_once(alice, run_worker, make_conversion, user):
    conversions = [make_conversion(title=f"job {n}") for n in range(20)]
    run_worker(DESCRIBER_MIN_NEW_TOKENS=4, DESCRIBER_MAX_NEW_TOKENS=4)
    run_worker(DESCRIBER_MIN_NEW_TOKENS=4, DESCRIBER_MAX_NEW_TOKENS=4)

    wait_for(lambda: all(finished(c) for c in conversions), timeout=240, what="twenty conversions")

    assert {c.status for c in conversions} == {Conversion.Status.DONE}
    # Every start counts an attempt: one attempt each means no job ran twice.
    assert [c.attempts for c in conversions] == [1] * 20
    assert len({c.worker for c in conversions}) == 2, "both workers should have taken jobs"


def kill_mid_job(run_worker, conversion: Conversion) -> None:
    worker = run_worker(**SLOW)
    wait_for(lambda: refreshed(conversion).output_raw, timeout=120, what="the job to start writing")
    stop(worker, signal.SIGKILL)
    assert refreshed(conversion).status == Conversion.Status.RUNNING


def test_a_job_of_a_killed_worker_completes_after_a_restart(alice, run_worker):
    conversion = upload(alice)
    kill_mid_job(run_worker, conversion)

    run_worker(DESCRIBER_STALE_AFTER_S=1, DESCRIBER_HEARTBEAT_S=0.2)
    wait_for(lambda: finished(conversion), timeout=120, what="the retried conversion")

    assert conversion.status == Conversion.Status.DONE, conversion.error_message
    assert conversion.attempts == 2


def test_a_job_of_a_killed_worker_fails_cleanly_after_the_retry_limit(alice, run_worker):
    conversion = upload(alice)
    kill_mid_job(run_worker, conversion)

    run_worker(DESCRIBER_STALE_AFTER_S=1, DESCRIBER_HEARTBEAT_S=0.2, DESCRIBER_MAX_ATTEMPTS=1)
    wait_for(lambda: finished(conversion), timeout=120, what="the conversion to be given up")

    assert conversion.status == Conversion.Status.FAILED
    assert "worker stopped" in conversion.error_message


def test_a_missing_model_fails_the_job_with_a_readable_message_and_the_worker_lives(alice, run_worker, tmp_path):
    first = upload(alice)
    worker = run_worker(DESCRIBER_MODEL=str(tmp_path / "no-such-model"))
    wait_for(lambda: finished(first), timeout=120, what="the first conversion to fail")
    second = upload(alice)
    wait_for(lambda: finished(second), timeout=60, what="the second conversion to fail")

    assert worker.poll() is None, "the worker must stay alive"
    for conversion in (first, second):
        assert conversion.status == Conversion.Status.FAILED
        assert "no-such-model" in conversion.error_message


def test_an_idle_worker_stays_up_and_takes_a_later_job(alice, run_worker, worker_log):
    worker = run_worker()
    wait_for(lambda: "ready" in worker_log.read_text(), timeout=60, what="the worker to load its models")
    # Longer than Redis clients' read timeouts: an idle blocking receive must not kill the worker.
    time.sleep(8)
    assert worker.poll() is None, "the idle worker died"
    conversion = upload(alice)
    wait_for(lambda: finished(conversion), timeout=60, what="the later conversion")
    assert conversion.status == Conversion.Status.DONE


def test_a_worker_rides_out_a_redis_outage_and_keeps_taking_jobs(alice, run_worker, worker_log, tmp_path):
    from tests.processes import PrivateRedis

    private = PrivateRedis(tmp_path)  # the worker's Redis: this test may kill it
    private.start()
    try:
        worker = run_worker(REDIS_URL=private.url)
        before = upload(alice)
        wait_for(lambda: finished(before), timeout=120, what="the job before the outage")

        private.kill()
        during = upload(alice)  # the job is in PostgreSQL; the worker finds it when it polls
        wait_for(lambda: finished(during), timeout=60, what="the job during the outage")
        time.sleep(6)  # past channels_redis's 5 s blocking receive
        assert worker.poll() is None, "the worker must stay up while Redis is away"

        private.start()
        after = upload(alice)
        wait_for(lambda: finished(after), timeout=60, what="the job after the outage")
    finally:
        private.kill()
    assert [refreshed(job).status for job in (before, during, after)] == ["done"] * 3
    assert "channel layer unavailable" in worker_log.read_text()
    assert "Traceback" not in worker_log.read_text()
