"""Embedding examples (worker side, tiny CLIP), the nearest-example query on the HNSW index,
and the retrieval_report command."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from django.core.management import call_command
from django.db import connection

from describer import examples
from describer.inference.errors import ModelUnavailable
from describer.models import Example
from describer.worker import JobLoop, UnavailableRuntime
from tests.example_files import MIXED, copy_starter
from tests.processes import wait_for


@pytest.fixture
def imported(tmp_path, db):
    examples.import_folder(copy_starter(tmp_path / "in", *MIXED))
    return list(Example.objects.order_by("name"))


@pytest.mark.django_db
def test_pending_examples_get_normalised_512_dim_embeddings(tiny_runtime, imported):
    result = examples.embed_pending_examples(tiny_runtime)

    assert (result.embedded, result.failed) == (len(imported), 0)
    for example in Example.objects.all():
        assert len(example.embedding) == 512
        assert math.isclose(sum(value * value for value in example.embedding), 1.0, rel_tol=1e-4)
        assert example.embedding_model == examples.TINY_CLIP_NAME
        assert example.image_sha256 == examples.file_sha256(example.image)
    assert examples.embed_pending_examples(tiny_runtime).embedded == 0  # nothing left


@pytest.mark.django_db
def test_an_example_whose_image_is_gone_fails_with_a_reason_and_is_not_retried(tiny_runtime, imported):
    broken = imported[0]
    broken.image.storage.delete(broken.image.name)

    result = examples.embed_pending_examples(tiny_runtime)

    broken.refresh_from_db()
    assert (result.embedded, result.failed) == (len(imported) - 1, 1)
    assert broken.embedding is None
    assert "is missing; upload the image again" in broken.embedding_error
    assert examples.embed_pending_examples(tiny_runtime).failed == 0


@pytest.mark.django_db
def test_examples_embedded_by_another_model_are_embedded_again(tiny_runtime, imported):
    Example.objects.update(embedding=[1.0] + [0.0] * 511, embedding_model="some-other-clip")

    result = examples.embed_pending_examples(tiny_runtime)

    assert result.embedded == len(imported)
    assert set(Example.objects.values_list("embedding_model", flat=True)) == {examples.TINY_CLIP_NAME}


@pytest.mark.django_db
def test_a_worker_without_models_leaves_examples_pending(imported):
    runtime = UnavailableRuntime(ModelUnavailable("no weights"))

    result = examples.embed_pending_examples(runtime)

    assert (result.embedded, result.failed) == (0, 0)
    assert Example.objects.needs_embedding("clip-ViT-B-32").count() == len(imported)


@pytest.mark.django_db
def test_a_model_failure_stops_the_round_and_leaves_examples_pending(imported):
    class FailingRuntime:
        is_tiny = False

        def embed_image(self, image):
            raise ModelUnavailable("CLIP went away")

    result = examples.embed_pending_examples(FailingRuntime())

    assert (result.embedded, result.failed) == (0, 0)
    assert not Example.objects.exclude(embedding_error="").exists()


@pytest.mark.django_db(transaction=True)
def test_the_worker_loop_embeds_pending_examples_between_jobs(tiny_runtime, tmp_path):
    examples.import_folder(copy_starter(tmp_path / "in", *MIXED[:2]))
    loop = JobLoop(tiny_runtime, poll_seconds=0.2)
    loop.start()
    try:
        wait_for(lambda: Example.objects.embedded().count() == 2, timeout=30, what="the examples embedded")
    finally:
        loop.stop()
        loop.thread.join(timeout=30)


def random_unit_vectors(count: int) -> list[list[float]]:
    vectors = np.random.default_rng(7).normal(size=(count, 512))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


@pytest.mark.django_db
def test_the_nearest_example_query_uses_the_hnsw_index():
    # PostgreSQL 15 + pgvector 0.8 here prefer a sequential scan and sort below ~700 rows;
    # 1,500 leaves a margin, and no planner setting is forced.
    vectors = random_unit_vectors(1501)
    Example.objects.bulk_create(
        Example(name=f"random-{number}", image=f"examples/random-{number}.png", description="x", embedding=vector)
        for number, vector in enumerate(vectors[:1500])
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE describer_example")

    plan = Example.objects.nearest(vectors[1500], k=3).explain()
    plan_with_cut_off = Example.objects.nearest(vectors[1500], k=3, max_distance=0.9).explain()
    found = list(Example.objects.nearest(vectors[0], k=1))

    assert "example_embedding_hnsw" in plan, plan
    assert "example_embedding_hnsw" in plan_with_cut_off, plan_with_cut_off
    assert found[0].name == "random-0" and found[0].distance == pytest.approx(0, abs=1e-3)


@pytest.mark.django_db
def test_retrieval_report_runs_with_the_tiny_model(settings, tiny_models_dir, tmp_path):
    settings.DESCRIBER_MODEL = "tiny"
    settings.TINY_MODELS_DIR = tiny_models_dir
    folder = copy_starter(tmp_path / "in", *MIXED)
    call_command("import_examples", str(folder), "--embed", stdout=io.StringIO(), stderr=io.StringIO())
    out = io.StringIO()

    call_command("retrieval_report", "--k", "2", stdout=out)

    report = out.getvalue()
    assert "bpmn-ru-zakupka [bpmn, ru]\n  1. " in report
    assert "Summary: 6 examples as queries, k=2, leave-one-out." in report
    assert "top-1 same type: " in report and "chance (share among the other examples)" in report
    assert "tiny random test CLIP: the figures mean nothing" in report


@pytest.mark.django_db
def test_retrieval_report_says_when_examples_still_wait_for_embeddings(imported):
    out = io.StringIO()
    Example.objects.filter(name__startswith="flow").update(embedding=[1.0] + [0.0] * 511, embedding_model="x")

    call_command("retrieval_report", "--summary-only", stdout=out)

    assert "3 examples have no embedding (pending or failed)" in out.getvalue()
    assert "Summary: 3 examples as queries" in out.getvalue()
