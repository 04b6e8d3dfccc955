"""The job lifecycle (describer/jobs.py): named transitions, conditional worker writes,
heartbeats for every held job, attempts counted at start, cancel, and the one-module rule."""

from __future__ import annotations

import ast
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from describer import jobs
from describer.models import Conversion, MermaidVersion, Worker
from describer.pipeline import HeldJobs, JobRunner
from describer.progress import Broadcaster

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
LIFECYCLE_FIELDS = {"status", "worker", "attempts", "heartbeat_at"}
WRITING_CALLS = {"update", "create", "get_or_create", "update_or_create", "bulk_update"}


def make_stale(job: Conversion) -> None:
    # Tests may write the row directly: they play a worker that died long ago.
    Conversion.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))


def refreshed(job: Conversion) -> Conversion:
    job.refresh_from_db()
    return job


# --- The one-module rule --------------------------------------------------------------------


def lifecycle_writes(path: Path) -> list[str]:
    """`….update(status=…)`-style calls and `save(update_fields=[…"status"…])` in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        keywords = {keyword.arg for keyword in node.keywords}
        if node.func.attr in WRITING_CALLS and keywords & LIFECYCLE_FIELDS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}({', '.join(sorted(keywords & LIFECYCLE_FIELDS))})")
        if node.func.attr == "save" and "update_fields" in keywords:
            source = ast.unparse(node)
            if any(f"'{name}'" in source for name in LIFECYCLE_FIELDS):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} save({source})")
    return found


def test_only_the_lifecycle_module_writes_status_worker_attempts_or_heartbeat():
    sources = [
        path
        for folder in ("describer", "diagramsite")
        for path in (ROOT / folder).rglob("*.py")
        if "migrations" not in path.parts and path != ROOT / "describer" / "jobs.py"
    ]
    offenders = [write for path in sources for write in lifecycle_writes(path)]
    assert offenders == []


def test_the_rule_finds_a_write_outside_the_lifecycle_module(tmp_path):
    # The check itself must be able to fail.
    sneaky = ROOT / "describer" / "_sneaky_write_probe.py"
    sneaky.write_text("def f(q):\n    q.update(status='done', heartbeat_at=None)\n")
    try:
        assert lifecycle_writes(sneaky) == ["describer/_sneaky_write_probe.py:2 update(heartbeat_at, status)"]
    finally:
        sneaky.unlink()


def test_the_two_former_import_circles_are_gone():
    def imports(module: str) -> set[str]:
        tree = ast.parse((ROOT / "describer" / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        return names

    assert "describer.pipeline" not in imports("drawing")
    assert "describer.worker" not in imports("examples") and "describer.worker.UnavailableRuntime" not in imports("examples")


# --- Worker-side transitions are conditional --------------------------------------------------


def test_claiming_holds_jobs_without_spending_an_attempt(make_conversion):
    make_conversion()
    [job] = jobs.claim("w1")
    assert (job.status, job.worker, job.attempts, job.started_at) == (Conversion.Status.RUNNING, "w1", 0, None)
    assert jobs.start(job, "w1") is True
    assert refreshed(job).attempts == 1 and job.started_at is not None


def test_a_worker_whose_job_was_taken_drops_its_result(make_conversion, caplog):
    make_conversion()
    [mine] = jobs.claim("w1")
    jobs.start(mine, "w1")
    make_stale(mine)
    assert jobs.recover_stale() == (1, 0)
    [theirs] = jobs.claim("w2")
    jobs.start(theirs, "w2")

    with caplog.at_level(logging.INFO, logger="describer.jobs"):
        assert jobs.record_progress(mine, "w1", "late text", 3) is False
        assert jobs.finish(mine, "w1", {"output_text": "from w1"}) is False
        assert jobs.fail(mine, "w1", "w1 gave up") is False
    assert jobs.finish(theirs, "w2", {"output_text": "from w2"}) is True

    final = refreshed(mine)
    assert (final.status, final.output_text, final.worker, final.error_message) == ("done", "from w2", "w2", "")
    assert final.attempts == 2
    assert "was taken from this worker" in caplog.text


def test_a_drawing_whose_finish_did_not_take_adds_no_version(make_conversion):
    job = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Order, ship")
    [claimed] = jobs.claim("w1")
    jobs.start(claimed, "w1")
    jobs.cancel(claimed)

    added = []
    assert jobs.finish(claimed, "w1", {}, also=lambda: added.append(1)) is False
    assert added == [] and not MermaidVersion.objects.filter(conversion=job).exists()


def test_heartbeats_refresh_every_held_job_and_report_the_ones_taken(make_conversion):
    for _ in range(3):
        make_conversion()
    claimed = jobs.claim("w1", limit=3)
    for job in claimed:
        make_stale(job)
    jobs.cancel(claimed[2])

    held = jobs.heartbeat("w1", [job.pk for job in claimed])

    assert held == {claimed[0].pk, claimed[1].pk}
    for job in claimed[:2]:
        assert timezone.now() - refreshed(job).heartbeat_at < timedelta(seconds=5)
    assert jobs.recover_stale() == (0, 0)


def test_a_stale_job_that_never_started_is_requeued_without_losing_an_attempt(make_conversion, settings):
    settings.DESCRIBER_MAX_ATTEMPTS = 1
    job = make_conversion(attempts=1)  # it has used its only attempt before: a crash now must not fail it
    jobs.claim("w1")
    make_stale(job)

    assert jobs.recover_stale() == (1, 0)
    assert (refreshed(job).status, job.attempts, job.worker, job.claimed_at) == ("queued", 1, "", None)


def test_a_stale_started_job_fails_once_every_attempt_is_used(make_conversion, settings):
    settings.DESCRIBER_MAX_ATTEMPTS = 2
    job = make_conversion()
    for expected in ((1, 0), (0, 1)):
        [claimed] = jobs.claim("w1")
        jobs.start(claimed, "w1")
        make_stale(claimed)
        assert jobs.recover_stale() == expected
    assert refreshed(job).status == Conversion.Status.FAILED
    assert "2 times" in job.error_message


def test_releasing_gives_a_started_attempt_back(make_conversion):
    job = make_conversion()
    [claimed] = jobs.claim("w1")
    jobs.start(claimed, "w1")
    assert jobs.release(claimed, "w2") is False  # not w2's job
    assert jobs.release(claimed, "w1") is True
    assert (refreshed(job).status, job.attempts, job.started_at) == ("queued", 0, None)


def test_every_job_event_is_one_info_line(make_conversion, caplog):
    first, second, third = make_conversion(), make_conversion(), make_conversion()
    with caplog.at_level(logging.INFO, logger="describer.jobs"):
        a, b, c = jobs.claim("w1", limit=3)
        jobs.start(a, "w1")
        jobs.finish(a, "w1", {"tokens_generated": 5, "timings": {"generation_s": 1.0}})
        jobs.start(b, "w1")
        jobs.fail(b, "w1", "the image could not be read")
        make_stale(c)
        jobs.recover_stale()
        jobs.cancel(c)
    lines = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert lines == [
        f"job {first.pk} claimed by w1",
        f"job {second.pk} claimed by w1",
        f"job {third.pk} claimed by w1",
        f"job {first.pk} started (attempt 1 of 3)",
        f"job {first.pk} finished: 5 tokens, first token None s, generation 1.0 s, None tokens/s",
        f"job {second.pk} started (attempt 1 of 3)",
        f"job {second.pk} failed: the image could not be read",
        f"job {third.pk} requeued: worker w1 went silent before it started",
        f"job {third.pk} cancelled by its owner",
    ]


# --- Cancel, retry ----------------------------------------------------------------------------


def test_cancel_takes_queued_and_running_jobs_but_not_finished_ones(make_conversion):
    queued, running, done = make_conversion(), make_conversion(), make_conversion(status="done")
    Conversion.objects.filter(pk=queued.pk).update(created_at=timezone.now() + timedelta(seconds=1))
    [claimed] = jobs.claim("w1")
    assert claimed.pk == running.pk

    assert jobs.cancel(queued) and jobs.cancel(claimed)
    assert not jobs.cancel(done)
    assert {refreshed(job).status for job in (queued, running)} == {Conversion.Status.CANCELLED}
    assert jobs.claim("w1") == []
    assert jobs.retry(queued) is True and refreshed(queued).status == Conversion.Status.QUEUED


@pytest.fixture
def batch_runner(tiny_runtime, quick_generation):
    broadcaster = Broadcaster()
    yield JobRunner(tiny_runtime, broadcaster, worker_name="w1", held=HeldJobs())
    broadcaster.close()


def test_a_cancelled_job_leaves_its_batch_at_the_next_step_and_the_rest_go_on(
    batch_runner, tiny_runtime, make_conversion, monkeypatch, quick_generation
):
    quick_generation.DESCRIBER_MIN_NEW_TOKENS = quick_generation.DESCRIBER_MAX_NEW_TOKENS = 200
    for _ in range(3):
        make_conversion()
    claimed = jobs.claim("w1", limit=3)
    victim = claimed[1]
    real_stream_batch = tiny_runtime.stream_batch
    chunks_after_cancel = []

    def cancel_row_one_early(requests, **kwargs):
        for index, chunk in real_stream_batch(requests, **kwargs):
            if index == 1 and chunk.tokens and refreshed(victim).status == Conversion.Status.RUNNING:
                if refreshed(victim).tokens_generated >= 10:
                    jobs.cancel(victim)  # the owner, while the row is generating
            if refreshed(victim).status == Conversion.Status.CANCELLED and index == 1:
                chunks_after_cancel.append(chunk)
            yield index, chunk

    monkeypatch.setattr(tiny_runtime, "stream_batch", cancel_row_one_early)
    batch_runner.run_batch(claimed)

    others = [refreshed(job) for job in (claimed[0], claimed[2])]
    assert [job.status for job in others] == ["done", "done"]
    assert [job.tokens_generated for job in others] == [200, 200]
    assert refreshed(victim).status == Conversion.Status.CANCELLED
    assert 10 <= victim.tokens_generated < 60
    # The decoder stopped the row: only the chunks already on their way came after the cancel.
    assert len(chunks_after_cancel) <= 3
    assert batch_runner.held.ids == set()


def test_a_job_taken_while_waiting_in_a_batch_is_dropped_before_it_starts(batch_runner, make_conversion):
    for _ in range(2):
        make_conversion()
    first, second = jobs.claim("w1", limit=2)
    make_stale(second)
    jobs.recover_stale()  # another worker requeued it ...
    [elsewhere] = jobs.claim("w2")  # ... and holds it now

    batch_runner.run_batch([first, second])

    assert refreshed(first).status == Conversion.Status.DONE
    assert (refreshed(second).status, second.worker, second.attempts) == ("running", "w2", 0)


# --- Presence and the waiting page -------------------------------------------------------------


def test_the_heartbeat_records_the_workers_presence_and_held_jobs(tiny_runtime, make_conversion):
    from describer.worker import JobLoop

    make_conversion()
    loop = JobLoop(tiny_runtime, batch_size=4)
    loop.held.add(job.pk for job in jobs.claim(loop.name))
    loop.heartbeat.beat()

    worker = Worker.objects.get(name=loop.name)
    assert (worker.jobs_in_hand, worker.batch_size, worker.device, worker.is_online) == (1, 4, "cpu", True)
    assert Worker.objects.online().count() == 1


def test_a_queued_job_says_when_no_worker_is_online(alice, make_conversion):
    conversion = make_conversion()
    page = alice.get(conversion.get_absolute_url()).content.decode()
    assert "No worker is online" in page
    assert "Cancel" in page


def test_a_queued_job_gives_its_position_and_estimated_wait(alice, make_conversion, user):
    now = timezone.now()
    Worker.objects.create(name="gpu:1", host="gpu", pid=1, batch_size=2)
    for seconds in (10, 20, 30):  # median 20 s per round
        make_conversion(status="done", started_at=now - timedelta(seconds=seconds), finished_at=now)
    ahead = [make_conversion() for _ in range(2)]
    mine = make_conversion()
    Conversion.objects.filter(pk=mine.pk).update(created_at=now + timedelta(seconds=1))
    for job in ahead:
        Conversion.objects.filter(pk=job.pk).update(created_at=now - timedelta(seconds=5))

    page = alice.get(mine.get_absolute_url()).content.decode()

    # Position 3 with one worker of batch 2: the second round, 2 × 20 s.
    assert "position 3" in page and "about 40 s" in page
    assert "No worker is online" not in page


def test_a_restarted_job_says_which_attempt_it_is(alice, make_conversion):
    conversion = make_conversion(attempts=1)
    page = alice.get(conversion.get_absolute_url()).content.decode()
    assert "attempt 2 of 3" in page


def test_the_owner_cancels_from_the_page_and_sees_it_everywhere(alice, make_conversion, staff_user, client):
    conversion = make_conversion()
    response = alice.post(f"/c/{conversion.pk}/cancel/")
    assert response.status_code == 302
    assert refreshed(conversion).status == Conversion.Status.CANCELLED
    assert "The conversion was cancelled" in alice.get(conversion.get_absolute_url()).content.decode()
    assert "Cancelled" in alice.get("/").content.decode()
    client.force_login(staff_user)
    assert "Cancelled" in client.get("/admin/describer/conversion/").content.decode()


def test_cancelling_another_users_job_is_a_404(alice, other_user, make_conversion):
    theirs = make_conversion(other_user)
    assert alice.post(f"/c/{theirs.pk}/cancel/").status_code == 404
    assert refreshed(theirs).status == Conversion.Status.QUEUED


def test_staff_see_the_workers_page(client, staff_user):
    Worker.objects.create(name="gpu-host:42", host="gpu-host", pid=42, model_name="Qwen/Qwen2.5-VL-3B-Instruct")
    client.force_login(staff_user)
    page = client.get("/admin/describer/worker/").content.decode()
    assert "gpu-host:42" in page and "Qwen/Qwen2.5-VL-3B-Instruct" in page


def test_worker_alive_says_whether_a_worker_on_this_host_reports(make_conversion):
    import socket

    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="has reported recently"):
        call_command("worker_alive")
    Worker.objects.create(name=f"{socket.gethostname()}:7", host=socket.gethostname(), pid=7)
    call_command("worker_alive")
    Worker.objects.update(last_seen_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(CommandError):
        call_command("worker_alive")


# --- Timing settings ---------------------------------------------------------------------------


def test_the_default_timing_settings_agree():
    from describer.worker import timing_problems

    assert timing_problems() == []


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"DESCRIBER_STALE_AFTER_S": 20, "DESCRIBER_HEARTBEAT_S": 10}, ["DESCRIBER_STALE_AFTER_S", "DESCRIBER_HEARTBEAT_S"]),
        ({"DESCRIBER_HEARTBEAT_S": 0}, ["DESCRIBER_HEARTBEAT_S"]),
        ({"DESCRIBER_STREAM_INTERVAL_MS": 200_000}, ["DESCRIBER_STREAM_INTERVAL_MS", "DESCRIBER_STALE_AFTER_S"]),
        ({"DESCRIBER_BATCH_SIZE": 0}, ["DESCRIBER_BATCH_SIZE"]),
        ({"DESCRIBER_SCHEDULER": "vllm"}, ["DESCRIBER_SCHEDULER"]),
        ({"DESCRIBER_PREFILL_CHUNK": 0}, ["DESCRIBER_PREFILL_CHUNK"]),
    ],
)
def test_contradictory_timing_settings_are_refused_at_start_naming_them(settings, overrides, names):
    from django.core.management import CommandError, call_command

    for name, value in overrides.items():
        setattr(settings, name, value)
    with pytest.raises(CommandError) as refused:
        call_command("runworker", settings.WORKER_CHANNEL)
    for name in names:
        assert name in str(refused.value)


@pytest.mark.django_db(transaction=True)  # the worker closes a broken connection: no test transaction around it
def test_a_database_outage_while_preparing_gives_the_job_back_instead_of_failing_it(
    batch_runner, tiny_runtime, make_conversion, monkeypatch
):
    from django.db import OperationalError

    job = make_conversion()
    [claimed] = jobs.claim("w1")

    def database_gone(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(tiny_runtime, "embed_image", database_gone)  # retrieval is where it fails
    batch_runner.run_batch([claimed])

    assert (refreshed(job).status, job.attempts, job.error_message) == ("queued", 0, "")
    assert batch_runner.held.ids == set()


def test_a_job_restarted_after_a_crash_runs_alone(make_conversion):
    now = timezone.now()
    fresh_before = make_conversion(created_at=now - timedelta(seconds=30))
    restarted = make_conversion(attempts=1, created_at=now - timedelta(seconds=20))
    fresh_after = [make_conversion(created_at=now - timedelta(seconds=10 - n)) for n in range(3)]

    first = jobs.claim("w1", limit=16)  # the oldest is fresh: a batch of fresh jobs, the restarted one waits
    second = jobs.claim("w1", limit=16)  # now the restarted one is the oldest: alone

    assert [job.pk for job in first] == [fresh_before.pk, *(job.pk for job in fresh_after)]
    assert [job.pk for job in second] == [restarted.pk]
