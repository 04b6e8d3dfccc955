"""The worker's pipeline in-process, on the real tiny models: retrieval,
generation, post-processing, and every failure becoming a readable message."""

from __future__ import annotations

import io

import pytest
import torch
from django.core.files.base import ContentFile
from PIL import Image

from describer.models import Conversion, Example
from tests.conftest import diagram_png, run_next

pytestmark = pytest.mark.django_db


def make_example(runtime, name: str, text: str) -> Example:
    content = diagram_png(text)
    example = Example(name=name, description=f"# {text}\n\n## Steps\n1. {text}")
    example.image.save(f"{name}.png", ContentFile(content), save=False)
    example.embedding = runtime.embed_image(Image.open(io.BytesIO(content)))
    example.save()
    return example


def test_a_job_records_the_examples_it_used_nearest_first(runner, tiny_runtime, make_conversion, settings):
    settings.RETRIEVAL_MAX_DISTANCE = 2.0  # random CLIP weights: distances mean nothing
    near = make_example(tiny_runtime, "near", "Start")  # the same picture as the upload
    make_example(tiny_runtime, "far", "Something else entirely")
    make_conversion()

    job = run_next(runner)

    assert job.status == Conversion.Status.DONE, job.error_message
    used = list(job.examples_used.all())
    assert [item.rank for item in used] == [1, 2]
    assert used[0].example == near
    assert used[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert used[0].similarity >= used[1].similarity


def test_the_distance_cut_off_leaves_dissimilar_examples_out(runner, tiny_runtime, make_conversion, settings):
    settings.RETRIEVAL_MAX_DISTANCE = 0.0
    make_example(tiny_runtime, "other", "Something else entirely")
    make_conversion()

    job = run_next(runner)

    assert job.status == Conversion.Status.DONE
    assert not job.examples_used.exists()


def test_an_out_of_memory_in_generation_fails_the_job_and_the_next_one_runs(
    runner, tiny_runtime, make_conversion, monkeypatch
):
    first, second = make_conversion(), make_conversion()

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(tiny_runtime.model, "forward", out_of_memory)
        failed = run_next(runner)
    done = run_next(runner)

    assert failed.pk == first.pk and failed.status == Conversion.Status.FAILED
    assert "out of memory" in failed.error_message.lower()
    assert "Traceback" not in failed.error_message
    assert done.pk == second.pk and done.status == Conversion.Status.DONE


def test_an_exception_inside_generation_fails_the_job_with_its_reason(runner, tiny_runtime, make_conversion, monkeypatch):
    make_conversion()
    monkeypatch.setattr(tiny_runtime.model, "forward", lambda *args, **kwargs: 1 / 0)

    job = run_next(runner)

    assert job.status == Conversion.Status.FAILED
    assert "ZeroDivisionError" in job.error_message


def test_the_generation_time_limit_fails_the_job_with_the_limit(runner, make_conversion, settings):
    settings.DESCRIBER_TIME_LIMIT_S = 0.001
    make_conversion()

    job = run_next(runner)

    assert job.status == Conversion.Status.FAILED
    assert "time limit" in job.error_message.lower()


def test_a_broken_stored_image_fails_the_job_readably(runner, make_conversion):
    conversion = make_conversion()
    conversion.input_image.storage.delete(conversion.input_image.name)

    job = run_next(runner)

    assert job.status == Conversion.Status.FAILED
    assert job.error_message


def test_a_finished_job_keeps_the_raw_text_and_counts_every_token(runner, make_conversion, tiny_runtime):
    make_conversion()
    job = run_next(runner)
    assert job.output_raw
    assert job.tokens_generated == 48
    assert job.output_structure["steps"]
    assert job.timings["tokens"] == 48


def test_a_failure_is_written_in_the_language_the_user_made_the_job_in(runner, tiny_runtime, make_conversion, monkeypatch):
    make_conversion(interface_language="ru")

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(tiny_runtime.model, "forward", out_of_memory)
    job = run_next(runner)

    assert job.status == Conversion.Status.FAILED
    assert "не хватило памяти" in job.error_message


def test_an_upload_remembers_the_interface_language(client, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    client.post(
        "/upload/",
        {"image": SimpleUploadedFile("d.png", diagram_png(), "image/png")},
        headers={"Accept-Language": "ru"},
    )
    assert Conversion.objects.get().interface_language == "ru"
