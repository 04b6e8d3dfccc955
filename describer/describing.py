"""Diagram → text in the worker: prepare the generation request (image, retrieved examples),
then finish from the model's text (structured by describer/postprocess.py).

One of the two job kinds (the other is describer/drawing.py); describer/pipeline.py runs both
the same way. Nothing here imports torch at module level: the runtime is passed in.
"""

from __future__ import annotations

import logging
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from django.conf import settings

from describer import graphs, grounding, ocr, postprocess, prompts
from describer.graph.text import complete_lines
from describer.images import load_for_model
from describer.models import Conversion, ConversionExample, Example

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime
    from describer.progress import JobProgress

log = logging.getLogger(__name__)


class TextReader:
    """The OCR stage: reads each job's image in a thread of its own, on the CPU, while the GPU
    decodes; the job's result waits for it (normally long done). One thread: Tesseract is
    single-threaded per image, and the worker's other CPU work (retrieval, post-processing)
    keeps the second core."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: weakref.WeakKeyDictionary[Conversion, tuple[Future, dict]] = weakref.WeakKeyDictionary()

    def start(self, job: Conversion, timings: dict) -> None:
        if not settings.DESCRIBER_OCR:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocr")
        future = self._pool.submit(
            ocr.read_file, job.input_image.path, tessdata=settings.OCR_TESSDATA,
            max_pixels=settings.OCR_MAX_PIXELS, language=job.language,
        )  # fmt: skip
        self._pending[job] = (future, timings)

    def reading(self, job: Conversion, *, keep: bool = False) -> tuple[ocr.Reading | None, str]:
        """The job's reading, or None and why not; `keep` leaves it for a later call (the prompt
        takes it early, the result again). Records the stage's time in the job's timings: ocr_s
        (its own), ocr_wait_s (what the job first waited for it)."""
        pending = self._pending.get(job) if keep else self._pending.pop(job, None)
        if pending is None:
            return None, ""
        future, timings = pending
        started = time.monotonic()
        try:
            reading = future.result()
        except Exception as error:  # noqa: BLE001 - the description is the product; OCR only checks it
            if not keep:
                log.warning("job %s: the image's text could not be read: %s", job.pk, error)
            return None, str(error) or type(error).__name__
        timings["ocr_s"] = reading.seconds
        timings.setdefault("ocr_wait_s", round(time.monotonic() - started, 3))
        return reading, ""


class Describe:
    kind = Conversion.Kind.DIAGRAM_TO_TEXT

    def __init__(self) -> None:
        self.reader = TextReader()

    def prepare(self, runtime: DescriberRuntime, job: Conversion, progress: JobProgress, timings: dict) -> list[dict]:
        """Preprocessing (the OCR stage starts beside it) and retrieval: the chat messages for the model."""
        started = time.monotonic()
        progress.stage(Conversion.Stage.PREPROCESSING)
        self.reader.start(job, timings)
        image = load_for_model(job.input_image.path, settings.DESCRIBER_MAX_PIXELS)
        timings["preprocessing_s"] = round(time.monotonic() - started, 3)

        progress.stage(Conversion.Stage.RETRIEVAL)
        started = time.monotonic()
        messages, examples = prompt_messages(runtime, image, job.language, self._labels_for_prompt(job))
        record_examples_used(job, examples)
        timings["retrieval_s"] = round(time.monotonic() - started, 3)
        return messages

    def _labels_for_prompt(self, job: Conversion) -> list[str]:
        """With DESCRIBER_OCR_IN_PROMPT the prompt waits for the OCR stage; its reading is kept
        for the result."""
        if not (settings.DESCRIBER_OCR and settings.DESCRIBER_OCR_IN_PROMPT):
            return []
        reading, _ = self.reader.reading(job, keep=True)
        return ocr_labels(reading)

    def grammar(self, job: Conversion) -> str:
        return grammar_name(job.language)

    def result(self, job: Conversion, text: str, *, cut_off: bool = False) -> tuple[dict, None]:
        """The finishing fields of the row, from the model's whole text: the process graph, and
        the description rendered from it (so text and graph agree). Without a graph (too large,
        say: the reason is in graph_notes) the text is structured leniently as it stands. An
        answer cut off at the length limit gives the graph of its complete lines."""
        text = answer_text(text, cut_off=cut_off)
        result = graphs.from_description(text, job.language)
        structure = structured(text, result, job.language)
        fields = {"output_text": structure.to_markdown(), "output_structure": structure.as_dict(), **result.fields()}
        fields.update(self._grounding(job, fields["output_structure"]))
        return fields, None

    def _grounding(self, job: Conversion, structure: dict) -> dict:
        reading, error = self.reader.reading(job)
        if reading is None:
            return {"ocr_reading": {"error": error}, "grounding": None, "coverage": None} if error else {}
        coverage = grounding.measure(reading, structure)
        return {"ocr_reading": reading.as_json(), "grounding": coverage.as_json(), "coverage": coverage.score}


def structured(text: str, result: graphs.GraphResult, language: str) -> postprocess.StructuredDescription:
    """The description as shown: rendered from its graph (so text and graph agree), or without a
    graph the text structured leniently as it stands."""
    canonical = graphs.description_text(result.graph, language) if result.graph else text
    return postprocess.structure_description(canonical, language)


def ocr_labels(reading: ocr.Reading | None) -> list[str]:
    """The labels of a reading that go into the prompt (DESCRIBER_OCR_IN_PROMPT)."""
    return [label.text for label in reading.labels if grounding.is_label(label)] if reading else []


def grammar_name(language: str) -> str:
    """The grammar of a description (describer/inference/constraints.py): the canonical layout in
    `language`, or in either language when it is "" (the diagram's own)."""
    return f"description:{language}"


def answer_text(text: str, *, cut_off: bool) -> str:
    """What a description is read from: an answer cut off at the length limit gives its complete lines."""
    return complete_lines(text) if cut_off else text


def prompt_messages(runtime: DescriberRuntime, image, language: str, labels=()) -> tuple[list[dict], list[Example]]:
    """The chat for one image, and the curated examples in it. The base model gets the rules and
    the examples nearest to the image; a fine-tuned adapter, which learnt both, the short prompt
    it was trained with (describer/inference/finetune.py)."""
    if getattr(runtime, "adapter", None) is not None:
        return prompts.describe_messages(image, [], language, labels, short=True), []
    examples = nearest_examples(runtime, image)
    return prompts.describe_messages(image, [example.description for example in examples], language, labels), examples


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
