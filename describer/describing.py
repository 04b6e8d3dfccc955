"""Diagram → text in the worker: prepare the generation request (image, retrieved examples),
then finish from the model's text (structured by describer/postprocess.py).

One of the two job kinds (the other is describer/drawing.py); describer/pipeline.py runs both
the same way. Nothing here imports torch at module level: the runtime is passed in.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings

from describer import graphs, postprocess, prompts
from describer.graph.text import complete_lines
from describer.images import load_for_model
from describer.models import Conversion, ConversionExample, Example

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime
    from describer.progress import JobProgress


class Describe:
    kind = Conversion.Kind.DIAGRAM_TO_TEXT

    def prepare(self, runtime: DescriberRuntime, job: Conversion, progress: JobProgress, timings: dict) -> list[dict]:
        """Preprocessing and retrieval: the chat messages for the model."""
        started = time.monotonic()
        progress.stage(Conversion.Stage.PREPROCESSING)
        image = load_for_model(job.input_image.path, settings.DESCRIBER_MAX_PIXELS)
        timings["preprocessing_s"] = round(time.monotonic() - started, 3)

        progress.stage(Conversion.Stage.RETRIEVAL)
        started = time.monotonic()
        examples = retrieve(runtime, job, image)
        timings["retrieval_s"] = round(time.monotonic() - started, 3)
        return prompts.describe_messages(image, [example.description for example in examples], job.language)

    def grammar(self, job: Conversion) -> str:
        return grammar_name(job.language)

    def result(self, job: Conversion, text: str, *, cut_off: bool = False) -> tuple[dict, None]:
        """The finishing fields of the row, from the model's whole text: the process graph, and
        the description rendered from it (so text and graph agree). Without a graph (too large,
        say: the reason is in graph_notes) the text is structured leniently as it stands. An
        answer cut off at the length limit gives the graph of its complete lines."""
        text = answer_text(text, cut_off=cut_off)
        result = graphs.from_description(text, job.language)
        canonical = graphs.description_text(result.graph, job.language) if result.graph else text
        structure = postprocess.structure_description(canonical, job.language)
        fields = {"output_text": structure.to_markdown(), "output_structure": structure.as_dict(), **result.fields()}
        return fields, None


def grammar_name(language: str) -> str:
    """The grammar of a description (describer/inference/constraints.py): the canonical layout in
    `language`, or in either language when it is "" (the diagram's own)."""
    return f"description:{language}"


def answer_text(text: str, *, cut_off: bool) -> str:
    """What a description is read from: an answer cut off at the length limit gives its complete lines."""
    return complete_lines(text) if cut_off else text


def retrieve(runtime: DescriberRuntime, job: Conversion, image) -> list[Example]:
    """The curated examples nearest to the image, recorded as the ones this job's prompt used."""
    examples = nearest_examples(runtime, image)
    record_examples_used(job, examples)
    return examples


def nearest_examples(runtime: DescriberRuntime, image) -> list[Example]:
    """The retrieval of a description: the RETRIEVAL_K examples nearest to the image's CLIP embedding."""
    embedding = runtime.embed_image(image)
    return list(
        Example.objects.nearest(embedding, k=settings.RETRIEVAL_K, max_distance=settings.RETRIEVAL_MAX_DISTANCE)
    )


def record_examples_used(job: Conversion, examples: list[Example]) -> None:
    ConversionExample.objects.filter(conversion=job).delete()
    ConversionExample.objects.bulk_create(
        # Similarity 0 marks an example picked without an embedding (text → diagram's fallback).
        ConversionExample(conversion=job, example=example, similarity=1 - getattr(example, "distance", 1), rank=rank)
        for rank, example in enumerate(examples, 1)
    )
