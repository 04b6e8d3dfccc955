"""Text → diagram in the worker: the model writes a Mermaid flowchart, or repairs one.

Qwen2.5-VL runs as a text-only chat (prompts in describer/prompts.py): the
system prompt, few-shot turns from the curated examples, then the user's text.
The answer streams into the page like a description does (JobProgress), then
describer/mermaid.py extracts the code and it is saved as a new MermaidVersion.

A conversion queued with `repair_error` set is a repair: the latest code and the
parser's message go back to the model, and its answer becomes a version of
origin "repair". Whether code parses is decided in the browser, by Mermaid's
own parser (static/js/mermaid-editor.js).

Called by JobRunner.run (describer/pipeline.py); nothing here imports torch at
module level, so the web process can import this module.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from describer import prompts, services
from describer.mermaid import extract_mermaid
from describer.models import Conversion, ConversionExample, Example, MermaidVersion

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime
    from describer.pipeline import JobRunner
    from describer.progress import JobProgress

# CLIP reads 77 tokens: the beginning of a description (its title, its first steps) is the query.
CLIP_QUERY_CHARS = 500


def draw(runner: JobRunner, job: Conversion, progress: JobProgress) -> None:
    """Run one text → diagram job (a first drawing or a repair) to done."""
    timings = {"queue_wait_s": round(max((job.started_at - job.created_at).total_seconds(), 0.0), 3)}
    latest = job.mermaid_versions.first()
    code_to_repair = latest.code if latest else job.output_mermaid
    if job.repair_error and code_to_repair:
        messages = prompts.repair_messages(code_to_repair, job.repair_error)
        origin = MermaidVersion.Origin.REPAIR
    else:
        progress.stage(Conversion.Stage.RETRIEVAL)
        started = time.monotonic()
        examples = few_shot_examples(runner.runtime, job)
        timings["retrieval_s"] = round(time.monotonic() - started, 3)
        pairs = [(example.description, example.mermaid) for example in examples]
        messages = prompts.draw_messages(job.input_text, pairs)
        origin = MermaidVersion.Origin.MODEL

    progress.stage(Conversion.Stage.GENERATION)
    from describer.inference.runtime import GenerationRequest  # worker only: imports torch

    request = GenerationRequest(
        messages=messages,
        max_new_tokens=settings.DESCRIBER_MAX_NEW_TOKENS,
        min_new_tokens=settings.DESCRIBER_MIN_NEW_TOKENS,
    )
    timings.update(runner.generate(request, progress))

    progress.stage(Conversion.Stage.POSTPROCESSING)
    finish(job, extract_mermaid(progress.text), origin=origin, progress=progress, timings=timings)


def few_shot_examples(runtime: DescriberRuntime, job: Conversion) -> list[Example]:
    """Up to RETRIEVAL_K curated examples that have both a description and Mermaid code.

    When any of them is embedded, the nearest to the text: CLIP puts texts and images in one
    space, so the text's embedding is compared with the examples' image embeddings. Such
    cross-modal distances are large even for good matches, so RETRIEVAL_MAX_DISTANCE (tuned
    for image to image) does not apply: the examples teach the format, and a distant one
    still does. Without embeddings, the first ones by name. The prompt falls back to its
    built-in examples when there are none at all.
    """
    candidates = Example.objects.exclude(description="").exclude(mermaid="")
    if candidates.embedded().exists():
        embedding = runtime.embed_text(job.input_text[:CLIP_QUERY_CHARS])
        examples = list(candidates.nearest(embedding, k=settings.RETRIEVAL_K))
    else:
        examples = list(candidates.order_by("name", "id")[: settings.RETRIEVAL_K])
    ConversionExample.objects.filter(conversion=job).delete()
    ConversionExample.objects.bulk_create(
        # Similarity 0 marks an example picked without an embedding.
        ConversionExample(conversion=job, example=example, similarity=1 - getattr(example, "distance", 1), rank=rank)
        for rank, example in enumerate(examples, 1)
    )
    return examples


def finish(job: Conversion, code: str, *, origin: str, progress: JobProgress, timings: dict) -> None:
    with transaction.atomic():
        services.mermaid_version_add(job, code=code, origin=origin)
        Conversion.objects.filter(pk=job.pk).update(
            status=Conversion.Status.DONE,
            stage=Conversion.Stage.FINISHED,
            output_raw=progress.text,
            repair_error="",
            tokens_generated=progress.tokens,
            timings=timings,
            finished_at=timezone.now(),
        )
