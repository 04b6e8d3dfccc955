"""The continuous-batching engine (describer/inference/engine.py) on the tiny model, on the CPU.

Rows join a running batch, leave it when they end or are cancelled, are compacted, prefilled in
pieces, admitted within a memory budget, and every row still gets exactly what transformers'
``generate`` gives it alone. The worker test runs the real job loop on the real database.
"""

from __future__ import annotations

import queue
import threading
import time

import pytest

from describer.inference.constraints import DESCRIPTION, MERMAID
from describer.inference.engine import (
    Engine,
    EngineRequest,
    build_engine,
    kv_budget,
    slot_bytes,
    slots_for,
)
from describer.inference.errors import GenerationTimeout, NoSlot, PromptTooLong
from describer.inference.fast_decode import RowLimits
from tests.test_batching import diagram, request

MIB = 2**20


@pytest.fixture
def runtime(small_image_runtime):
    return small_image_runtime


def engine_for(runtime, *, slots: int = 4, chunk: int = 7, length: int = 1024, read_behind: bool = False) -> Engine:
    return Engine(runtime.model, slots=slots, slot_length=length, prefill_chunk=chunk,
                  grammars=lambda: runtime.grammars, read_behind=read_behind)  # fmt: skip


# Both read-backs: a step's tokens read at once (the CPU's way), and one step behind, while the
# next step runs (CUDA graphs' way), so that rows end, leave and move with a step in flight.
read_backs = pytest.mark.parametrize("read_behind", [False, True], ids=["read-at-once", "read-behind"])


def submit(engine, runtime, rid, item, *, deadline=None, exclusive=False, time_limit_s=None) -> None:
    inputs = runtime.prepare_inputs([item], on_device=False)
    limits = RowLimits(item.max_new_tokens, item.min_new_tokens)
    engine.add_request(EngineRequest(rid, inputs, limits, item.grammar, deadline, exclusive, time_limit_s))


def run_until_idle(engine, tokens, *, errors=None, after_step=None, limit: int = 5000) -> None:
    for number in range(limit):
        if engine.idle():
            return
        for event in engine.step():
            if event.error is not None:
                assert errors is not None, event.error
                errors[event.rid] = event.error
            else:
                tokens.setdefault(event.rid, []).append(event.token)
        if after_step is not None:
            after_step(number)
    raise AssertionError("the engine did not finish")


def text(runtime, token_ids) -> str:
    return runtime.processor.tokenizer.decode(token_ids, skip_special_tokens=True)


def alone(runtime, item) -> str:
    return "".join(runtime.stream_generate(item))


def long_request(tokens: int = 60):
    return request(diagram("Start"), "Describe this diagram.", max_new_tokens=tokens, min_new_tokens=tokens)


def constrained(item, grammar):
    item.grammar = grammar
    return item


# --- Joining, leaving, compaction ---------------------------------------------------------------


def test_a_request_added_mid_batch_joins_at_the_next_step_and_both_get_what_they_get_alone(runtime):
    engine = engine_for(runtime)
    first, second = long_request(60), request(diagram("Join", (300, 500)), "Опиши", max_new_tokens=30)
    submit(engine, runtime, "A", first)
    tokens: dict = {}
    joined_at = {}

    def add_second(number):
        if number == 10:
            submit(engine, runtime, "B", second)
            joined_at["step"] = number

    before = {}

    def watch(number):
        add_second(number)
        before[number] = len(tokens.get("A", []))

    run_until_idle(engine, tokens, after_step=watch)

    assert text(runtime, tokens["A"]) == alone(runtime, first)
    assert text(runtime, tokens["B"]) == alone(runtime, second)
    # A got a token at every step while B's prompt went through in pieces: the vision tower
    # alone, then chunks of 7 tokens, never the whole prompt at once.
    assert all(before[number] == number + 1 for number in range(1, 30))
    kinds = [record.prefill for record in engine.steps if record.rows]
    assert "vision" in kinds and kinds.count("chunk") >= 2 and "whole" not in kinds[1:]


def test_the_newcomer_is_prefilling_at_the_very_next_step_and_streams_within_its_pieces(runtime):
    engine = engine_for(runtime, chunk=64)
    submit(engine, runtime, "A", long_request(80))
    tokens: dict = {}
    for _ in range(5):
        for event in engine.step():
            tokens.setdefault(event.rid, []).append(event.token)
    newcomer = request(None, "Describe " * 30, max_new_tokens=10)
    prompt = runtime.prepare_inputs([newcomer])["input_ids"].shape[1]
    submit(engine, runtime, "B", newcomer)

    engine.step()
    assert engine.prefill is not None or any(row.request.rid == "B" for row in engine.rows)
    steps = 1
    while not any(row.request.rid == "B" for row in engine.rows):
        engine.step()
        steps += 1
    assert steps <= -(-prompt // 64) + 1


@read_backs
def test_a_cancelled_row_leaves_at_the_next_step_its_slot_goes_to_a_waiting_one_and_the_moved_row_is_unharmed(
    runtime, read_behind
):
    engine = engine_for(runtime, slots=2, chunk=64, read_behind=read_behind)
    first, second, third = long_request(80), long_request(40), request(None, "Hi", max_new_tokens=12)
    second.messages[1]["content"][1]["text"] = "What is this?"
    for rid, item in (("A", first), ("B", second), ("C", third)):
        submit(engine, runtime, rid, item)
    tokens: dict = {}
    while len(tokens.get("B", [])) < 3:
        for event in engine.step():
            tokens.setdefault(event.rid, []).append(event.token)
    assert {row.request.rid for row in engine.rows} == {"A", "B"} and engine.has_capacity() == 0
    assert [request.rid for request in engine.waiting] == ["C"]
    a_slot = next(row.slot for row in engine.rows if row.request.rid == "A")
    got_before_cancel = len(tokens["A"])

    engine.cancel("A")
    events = engine.step()

    assert "A" not in {event.rid for event in events} and "A" not in {row.request.rid for row in engine.rows}
    assert a_slot == 0 and [(row.request.rid, row.slot) for row in engine.rows][0] == ("B", 0)  # B moved into A's slot
    for event in events:
        tokens.setdefault(event.rid, []).append(event.token)
    run_until_idle(engine, tokens)
    assert len(tokens["A"]) == got_before_cancel  # a token still in flight for it was dropped
    assert text(runtime, tokens["B"]) == alone(runtime, second)
    assert text(runtime, tokens["C"]) == alone(runtime, third)
    assert engine.has_capacity() == 2 and engine.active == 0


def test_cancelling_a_waiting_or_prefilling_request_leaves_nothing_behind(runtime):
    engine = engine_for(runtime, slots=2, chunk=7)
    submit(engine, runtime, "A", long_request(60))
    engine.step()  # A's whole prompt at once: nothing else was decoding
    submit(engine, runtime, "B", long_request(40))
    submit(engine, runtime, "C", long_request(40))  # no slot left for it: it waits
    engine.step()  # A decodes, B's vision tower runs
    assert engine.prefill is not None and engine.prefill.row.request.rid == "B"
    assert [request.rid for request in engine.waiting] == ["C"] and engine.has_capacity() == 0

    engine.cancel("B")
    engine.cancel("C")
    events = engine.step()

    assert engine.prefill is None and not engine.admitted and not engine.waiting
    assert {event.rid for event in events} == {"A"} and engine.has_capacity() == 1
    late = request(None, "Hi", max_new_tokens=12)
    submit(engine, runtime, "D", late)  # takes the freed slot
    tokens: dict = {}
    run_until_idle(engine, tokens)
    assert set(tokens) == {"A", "D"} and text(runtime, tokens["D"]) == alone(runtime, late)
    assert engine.has_capacity() == 2


@read_backs
def test_rows_end_in_any_order_and_only_the_row_past_its_deadline_times_out(runtime, read_behind):
    engine = engine_for(runtime, read_behind=read_behind)
    items = {"short": request(None, "Hi", max_new_tokens=3, min_new_tokens=3), "long": long_request(50)}
    for rid, item in items.items():
        submit(engine, runtime, rid, item)
    # Its limit counts from its own prefill, so preparing the others does not use it up.
    submit(engine, runtime, "late", request(None, "Describe", max_new_tokens=900, min_new_tokens=900), time_limit_s=0.3)
    tokens: dict = {}
    errors: dict = {}
    run_until_idle(engine, tokens, errors=errors)

    assert set(errors) == {"late"} and isinstance(errors["late"], GenerationTimeout)
    assert 0 < len(tokens["late"]) < 900
    for rid, item in items.items():
        assert text(runtime, tokens[rid]) == alone(runtime, item)


def test_a_request_that_must_run_alone_waits_for_an_empty_engine_and_nothing_joins_it(runtime):
    engine = engine_for(runtime)
    submit(engine, runtime, "A", long_request(20))
    engine.step()
    submit(engine, runtime, "alone", long_request(20), exclusive=True)
    submit(engine, runtime, "B", long_request(20))
    assert engine.has_capacity() == 0
    together = []

    def watch(number):
        together.append({row.request.rid for row in engine.rows})

    run_until_idle(engine, {}, after_step=watch)
    assert not any("alone" in rows and len(rows) > 1 for rows in together)
    assert any(rows == {"alone"} for rows in together)


# --- Grammars -----------------------------------------------------------------------------------------


@read_backs
def test_with_grammars_rows_that_join_and_leave_get_what_they_get_alone(runtime, read_behind):
    engine = engine_for(runtime, slots=3, chunk=16, read_behind=read_behind)
    items = {
        "description": constrained(long_request(60), f"{DESCRIPTION}:en"),
        "free": request(None, "Hi", max_new_tokens=25, min_new_tokens=25),
        "mermaid": constrained(request(None, "Draw a process", max_new_tokens=50), MERMAID),
        "late": constrained(request(diagram("Late"), "Describe", max_new_tokens=30), f"{DESCRIPTION}:"),
    }
    submit(engine, runtime, "description", items["description"])
    submit(engine, runtime, "free", items["free"])
    tokens: dict = {}

    def stagger(number):
        if number == 3:
            submit(engine, runtime, "mermaid", items["mermaid"])
        if number == 8:
            submit(engine, runtime, "late", items["late"])

    run_until_idle(engine, tokens, after_step=stagger)
    for rid, item in items.items():
        assert text(runtime, tokens[rid]) == alone(runtime, item), rid


# --- Memory budget ------------------------------------------------------------------------------------


def test_the_budget_arithmetic_by_hand():
    # 8 GiB less 2.75 GiB of weights, 0.6 GiB of prefill, 0.25 GiB of graphs and a 5% margin
    # (0.4 GiB): 4.0 GiB, which holds 22 slots of 180 MiB, and a ceiling of 16 keeps 16.
    gib = 2**30
    budget = kv_budget(8 * gib, weights=int(2.75 * gib), prefill_peak=int(0.6 * gib), graphs=gib // 4)
    assert budget == 8 * gib - int(2.75 * gib) - int(0.6 * gib) - gib // 4 - (8 * gib) // 20
    assert slots_for(budget, 180 * MIB, 32) == 22
    assert slots_for(budget, 180 * MIB, 16) == 16
    assert kv_budget(gib, weights=0, prefill_peak=0, graphs=0) == gib - 256 * MIB  # the margin's floor


def test_a_slot_holds_every_layer_s_keys_and_values_for_its_length(runtime):
    engine = engine_for(runtime, slots=2, length=1000)
    stack = engine.stack
    assert engine.slot_length == 1024  # 1,000 tokens, rounded up to 256 columns
    expected = len(stack.layers) * 2 * stack.kv_heads * stack.head_dim * 4 * 1024  # float32 on the CPU
    assert slot_bytes(stack, 1024) == expected == engine.state.pool[:, :, 0].numel() * 4


@read_backs
def test_admission_keeps_within_a_small_budget_and_every_row_still_gets_its_text(runtime, read_behind):
    per_slot = slot_bytes(engine_for(runtime, slots=1).stack, 1024)  # 768 + 256 tokens: 1,024 columns
    engine, budget = build_engine(
        runtime.model, ceiling=16, max_prompt_tokens=768, max_new_tokens=256, prefill_chunk=32,
        kv_budget_bytes=int(2.5 * per_slot),
    )  # fmt: skip
    assert budget.slots == engine.slots == 2
    engine.read_behind = read_behind
    items = [request(None, "Hi " * (index + 1), max_new_tokens=12 + index, min_new_tokens=12) for index in range(5)]
    for index, item in enumerate(items):
        submit(engine, runtime, index, item)
    most = []
    tokens: dict = {}
    run_until_idle(engine, tokens, after_step=lambda number: most.append(engine.active))
    assert max(most) == 2
    for index, item in enumerate(items):
        assert text(runtime, tokens[index]) == alone(runtime, item)


def test_a_budget_below_one_slot_is_refused_with_the_numbers(runtime):
    with pytest.raises(NoSlot, match="MODEL_MAX_VRAM.*one slot needs"):
        build_engine(runtime.model, ceiling=16, max_prompt_tokens=4096, max_new_tokens=1024, kv_budget_bytes=1000)


def test_a_prompt_longer_than_a_slot_is_refused_readably(runtime):
    engine = engine_for(runtime, length=256)
    with pytest.raises(PromptTooLong, match="DESCRIBER_MAX_PROMPT_TOKENS"):
        submit(engine, runtime, "big", request(None, "Describe " * 600, max_new_tokens=16))
    assert engine.idle()


# --- The runtime's engine thread -------------------------------------------------------------------


def test_the_runtime_streams_each_request_to_its_own_sink(runtime):
    first, second = queue.Queue(), queue.Queue()
    runtime.submit("one", request(None, "Hi", max_new_tokens=6, min_new_tokens=6), first)
    runtime.submit("two", request(None, "Hello", max_new_tokens=9, min_new_tokens=9), second)
    got = {}
    for name, sink, count in (("one", first, 6), ("two", second, 9)):
        events = [sink.get(timeout=30) for _ in range(count)]
        assert {event.rid for event in events} == {name} and events[-1].finished
        got[name] = events
    assert runtime.free_slots() == runtime.engine().engine.slots


# --- The worker ---------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_worker_starts_a_job_that_arrives_while_another_is_generating(tiny_runtime, make_conversion, settings):
    """Job 2 is queued once job 1 has streamed 10 tokens: it starts before job 1 finishes, and
    both finish once, in one attempt each."""
    from describer import jobs
    from describer.models import Conversion
    from describer.worker import JobLoop

    settings.DESCRIBER_CONSTRAINED = False
    settings.DESCRIBER_MIN_NEW_TOKENS = settings.DESCRIBER_MAX_NEW_TOKENS = 200
    settings.DESCRIBER_OCR = False
    first = make_conversion()
    loop = JobLoop(tiny_runtime, poll_seconds=0.2)
    loop.start()
    try:
        deadline = time.monotonic() + 60
        while Conversion.objects.get(pk=first.pk).tokens_generated < 10:
            assert time.monotonic() < deadline, "job 1 did not start streaming"
            time.sleep(0.05)
        second = make_conversion()
        loop.wake()
        while Conversion.objects.filter(status=Conversion.Status.DONE).count() < 2:
            assert time.monotonic() < deadline, "the jobs did not finish"
            time.sleep(0.05)
    finally:
        loop.stop()
        loop.join(timeout=30)
    one, two = Conversion.objects.get(pk=first.pk), Conversion.objects.get(pk=second.pk)
    assert two.started_at < one.finished_at
    assert (one.attempts, two.attempts) == (1, 1) and one.tokens_generated == two.tokens_generated == 200
    assert not loop.held.ids
    assert jobs.claim("anyone") == []


@pytest.mark.django_db(transaction=True)
def test_a_job_cancelled_mid_stream_leaves_the_engine_and_the_others_finish(tiny_runtime, make_conversion, settings):
    from describer import jobs
    from describer.models import Conversion
    from describer.pipeline import ContinuousRunner, HeldJobs
    from describer.progress import Broadcaster

    settings.DESCRIBER_CONSTRAINED = False
    settings.DESCRIBER_MIN_NEW_TOKENS = settings.DESCRIBER_MAX_NEW_TOKENS = 200
    settings.DESCRIBER_OCR = False
    for _ in range(3):
        make_conversion()
    claimed = jobs.claim("w1", limit=3)
    victim = claimed[1]
    broadcaster = Broadcaster()
    runner = ContinuousRunner(tiny_runtime, broadcaster, worker_name="w1", held=HeldJobs())
    stop = threading.Event()

    def cancel_when_streaming():  # the owner cancels from the web while the row is generating
        while not stop.is_set():
            if Conversion.objects.get(pk=victim.pk).tokens_generated >= 10:
                jobs.cancel(Conversion.objects.get(pk=victim.pk))
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=cancel_when_streaming)
    watcher.start()
    try:
        runner.run_batch(claimed)
    finally:
        stop.set()
        watcher.join()
        broadcaster.close()

    done = [Conversion.objects.get(pk=job.pk) for job in (claimed[0], claimed[2])]
    assert [job.status for job in done] == ["done", "done"] and [job.tokens_generated for job in done] == [200, 200]
    cancelled = Conversion.objects.get(pk=victim.pk)
    assert cancelled.status == Conversion.Status.CANCELLED and 10 <= cancelled.tokens_generated < 200
    assert runner.held.ids == set() and not runner.rows
    engine = tiny_runtime.engine().engine
    deadline = time.monotonic() + 5
    while not engine.idle():
        assert time.monotonic() < deadline, "the cancelled row stayed in the engine"
        time.sleep(0.02)


@pytest.mark.django_db(transaction=True)
def test_a_row_whose_prefill_runs_out_of_memory_runs_again_alone_in_the_same_attempt(
    tiny_runtime, make_conversion, settings, monkeypatch
):
    import torch

    from describer import jobs
    from describer.models import Conversion
    from describer.pipeline import ContinuousRunner, HeldJobs
    from describer.progress import Broadcaster

    settings.DESCRIBER_CONSTRAINED = False
    settings.DESCRIBER_MIN_NEW_TOKENS = settings.DESCRIBER_MAX_NEW_TOKENS = 30
    settings.DESCRIBER_OCR = False
    for _ in range(2):
        make_conversion()
    real_forward, calls = tiny_runtime.model.forward, []

    def out_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(tiny_runtime.model, "forward", out_of_memory_once)
    submitted, real_submit = [], tiny_runtime.submit

    def recorded_submit(rid, request, sink, **options):
        submitted.append(options["exclusive"])
        real_submit(rid, request, sink, **options)

    monkeypatch.setattr(tiny_runtime, "submit", recorded_submit)
    broadcaster = Broadcaster()
    try:
        ContinuousRunner(tiny_runtime, broadcaster, worker_name="w1", held=HeldJobs()).run_batch(jobs.claim("w1", limit=2))
    finally:
        broadcaster.close()

    jobs_now = list(Conversion.objects.all())
    assert {job.status for job in jobs_now} == {Conversion.Status.DONE}
    assert {job.attempts for job in jobs_now} == {1}  # the re-run is the same attempt
    assert submitted == [False, False, True]  # the job whose prefill failed went again, alone


@pytest.mark.django_db(transaction=True)
def test_a_memory_budget_without_a_slot_fails_jobs_with_the_numbers_and_the_worker_lives(tiny_runtime, make_conversion):
    from describer.inference.runtime import DescriberRuntime
    from describer.models import Conversion
    from describer.worker import JobLoop

    starved = DescriberRuntime(model=tiny_runtime.model, processor=tiny_runtime.processor, clip=tiny_runtime.clip,
                               model_name="tiny", is_tiny=True, engine_options={"kv_budget_bytes": 1})  # fmt: skip
    job = make_conversion()
    loop = JobLoop(starved, poll_seconds=0.2)
    loop.start()
    try:
        deadline = time.monotonic() + 30
        while Conversion.objects.get(pk=job.pk).status != Conversion.Status.FAILED:
            assert time.monotonic() < deadline, "the job was not failed"
            time.sleep(0.05)
    finally:
        loop.stop()
        loop.join(timeout=30)
    assert "MODEL_MAX_VRAM" in Conversion.objects.get(pk=job.pk).error_message
    assert loop.thread is not None and not loop.thread.is_alive()  # it stopped when asked, not by the error
