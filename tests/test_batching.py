"""Batched generation: several requests decoded together get what each gets alone.

The tiny model runs in float32 on the CPU through the production loading code; the decoder is
the one the GPU worker uses (FastDecoder), here without CUDA graphs. The JobRunner tests use the
real database and Redis.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

import pytest
import torch
from PIL import Image, ImageDraw

from describer.inference.errors import GenerationTimeout, OutOfMemory
from describer.inference.runtime import DescriberRuntime, GenerationRequest


@pytest.fixture(params=["continuous", "static"])
def runtime(small_image_runtime, request) -> DescriberRuntime:
    """Both schedulers: the continuous-batching engine and the static batcher."""
    assert small_image_runtime.model.dtype == torch.float32
    small_image_runtime.scheduler = request.param
    yield small_image_runtime
    small_image_runtime.scheduler = "continuous"


def diagram(label: str, size: tuple[int, int] = (640, 400)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle((40, 40, 240, 120), outline="black", width=3)
    draw.text((60, 70), label, fill="black")
    return image


def request(image: Image.Image | None, text: str, *, max_new_tokens: int = 32, min_new_tokens: int = 0):
    content: list[dict] = [{"type": "image", "image": image}] if image is not None else []
    content.append({"type": "text", "text": text})
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You describe diagrams."}]},
        {"role": "user", "content": content},
    ]
    return GenerationRequest(messages=messages, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens)


def mixed_requests() -> list[GenerationRequest]:
    """Prompts of very different lengths (so rows are left-padded), with and without images."""
    return [
        request(diagram("Start"), "Describe this diagram.", min_new_tokens=32),
        request(None, "Describe " * 40, max_new_tokens=24, min_new_tokens=24),
        request(diagram("Проверка", (300, 900)), "Опиши", max_new_tokens=40),
        request(None, "Hi", max_new_tokens=8, min_new_tokens=8),
    ]


def run_batch(runtime, requests) -> dict[int, list]:
    chunks: dict[int, list] = defaultdict(list)
    for index, chunk in runtime.stream_batch(requests):
        chunks[index].append(chunk)
    return chunks


def text_of(chunks) -> str:
    return "".join(chunks)


def generate_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "describer-generate" and thread.is_alive()]


def engine_empties(runtime, within_s: float = 5.0) -> bool:
    """Nothing of a closed stream stays in the engine (trivially true for the static batcher)."""
    if not runtime.continuous:
        return True
    deadline = time.monotonic() + within_s
    while not runtime.engine().engine.idle():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return runtime.engine().engine.has_capacity() == runtime.engine().engine.slots


def test_a_batched_request_gets_exactly_what_generate_gives_it_alone(runtime):
    requests = mixed_requests()

    batched = run_batch(runtime, requests)

    for index, alone in enumerate(requests):
        assert text_of(batched[index]) == "".join(runtime.stream_generate(alone)), f"request {index}"


def test_one_request_through_the_decoder_gets_what_generate_gives(runtime):
    for alone in mixed_requests():
        assert text_of(run_batch(runtime, [alone])[0]) == "".join(runtime.stream_generate(alone))


def test_the_same_request_twice_in_a_batch_gets_the_same_text_twice(runtime):
    twice = run_batch(runtime, [mixed_requests()[0], mixed_requests()[0]])

    assert text_of(twice[0]) == text_of(twice[1])


def test_each_request_ends_once_with_a_final_chunk_and_counts_its_tokens(runtime):
    requests = [request(None, "Describe", max_new_tokens=n, min_new_tokens=n) for n in (5, 17, 30)]

    batched = run_batch(runtime, requests)

    for index, expected in enumerate((5, 17, 30)):
        chunks = batched[index]
        assert [chunk.final for chunk in chunks].count(True) == 1 and chunks[-1].final
        assert chunks[-1] == ""
        assert sum(chunk.tokens for chunk in chunks) == expected


def test_a_short_request_finishes_while_a_long_one_still_runs(runtime):
    requests = [request(None, "Hi", max_new_tokens=3, min_new_tokens=3), request(None, "Hi", max_new_tokens=40, min_new_tokens=40)]
    order = [(index, chunk.final) for index, chunk in runtime.stream_batch(requests)]

    short_end = order.index((0, True))
    assert any(index == 1 and not final for index, final in order[short_end + 1 :])


def test_a_batch_stops_at_the_deadline_with_a_timeout(runtime):
    requests = [request(None, "Describe", max_new_tokens=1000, min_new_tokens=1000) for _ in range(3)]
    received = []
    started = time.monotonic()

    with pytest.raises(GenerationTimeout):
        for item in runtime.stream_batch(requests, deadline=started + 0.5):
            received.append(item)

    assert time.monotonic() - started < 10
    assert {index for index, _ in received} == {0, 1, 2}
    assert not generate_threads()
    assert engine_empties(runtime)


def test_closing_a_batch_stream_stops_its_thread(runtime):
    stream = runtime.stream_batch([request(None, "Describe", max_new_tokens=1000, min_new_tokens=1000)] * 2)

    assert next(stream)
    stream.close()

    assert not generate_threads()
    assert engine_empties(runtime)


def test_an_error_in_the_decoder_is_raised_to_the_reader(runtime, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runtime.model, "forward", out_of_memory)

    with pytest.raises(OutOfMemory, match="DESCRIBER_BATCH_SIZE"):
        list(runtime.stream_batch(mixed_requests()))
    assert not generate_threads()


def test_without_the_decoder_a_batch_runs_one_request_after_another(runtime, tiny_paths):
    plain = DescriberRuntime(model=runtime.model, processor=runtime.processor, clip=runtime.clip, model_name="tiny")
    plain.decoder = None
    requests = mixed_requests()[:2]

    order = [(index, chunk.final) for index, chunk in plain.stream_batch(requests)]

    assert order.index((0, True)) < min(position for position, (index, _) in enumerate(order) if index == 1)
    assert text_of(run_batch(plain, requests)[1]) == text_of(run_batch(runtime, requests)[1])


# --- The worker's batches: JobRunner.run_batch on the real database -----------------------------


@pytest.fixture
def runner(tiny_runtime, quick_generation):
    from describer.pipeline import JobRunner
    from describer.progress import Broadcaster

    broadcaster = Broadcaster()
    yield JobRunner(tiny_runtime, broadcaster)
    broadcaster.close()


def claim_all(count: int) -> list:
    from describer.jobs import claim

    claimed = claim("test", limit=count)
    assert len(claimed) == count
    return claimed


@pytest.mark.django_db
def test_a_batch_of_jobs_finishes_each_job_with_its_own_text(runner, make_conversion):
    from describer.models import Conversion

    for _ in range(3):
        make_conversion()

    runner.run_batch(claim_all(3))

    for job in Conversion.objects.all():
        assert job.status == Conversion.Status.DONE, job.error_message
        assert job.output_raw and job.tokens_generated == 48
        assert job.timings["tokens"] == 48 and job.timings["first_token_s"] >= 0


@pytest.mark.django_db
def test_a_job_that_fails_before_generation_fails_alone(runner, make_conversion):
    from describer.models import Conversion

    broken = make_conversion()
    broken.input_image.storage.delete(broken.input_image.name)
    make_conversion()
    make_conversion()

    runner.run_batch(claim_all(3))

    statuses = {job.pk: job.status for job in Conversion.objects.all()}
    assert statuses.pop(broken.pk) == Conversion.Status.FAILED
    assert set(statuses.values()) == {Conversion.Status.DONE}


@pytest.mark.django_db
def test_a_batch_that_runs_out_of_memory_runs_its_jobs_one_by_one(runner, tiny_runtime, make_conversion, monkeypatch):
    from describer.models import Conversion

    for _ in range(2):
        make_conversion()

    real_stream_batch = tiny_runtime.stream_batch
    sizes = []

    def out_of_memory_above_one(requests, **kwargs):
        sizes.append(len(requests))
        if len(requests) > 1:
            raise OutOfMemory()
        yield from real_stream_batch(requests, **kwargs)

    monkeypatch.setattr(tiny_runtime, "stream_batch", out_of_memory_above_one)
    runner.run_batch(claim_all(2))

    assert sizes == [2, 1, 1]
    jobs = list(Conversion.objects.all())
    assert {job.status for job in jobs} == {Conversion.Status.DONE}
    assert {job.attempts for job in jobs} == {1}  # the re-run is the same attempt


@pytest.mark.django_db
def test_an_error_in_batched_generation_fails_every_unfinished_job_readably(runner, tiny_runtime, make_conversion, monkeypatch):
    from describer.models import Conversion

    for _ in range(2):
        make_conversion()
    monkeypatch.setattr(tiny_runtime.model, "forward", lambda *args, **kwargs: 1 / 0)

    runner.run_batch(claim_all(2))

    for job in Conversion.objects.all():
        assert job.status == Conversion.Status.FAILED
        assert "ZeroDivisionError" in job.error_message
