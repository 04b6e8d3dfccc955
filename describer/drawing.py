"""Text → diagram in the worker: the model writes a Mermaid flowchart, or repairs one.

Qwen2.5-VL runs as a text-only chat (prompts in describer/prompts.py): the system prompt,
few-shot turns from the curated examples, then the user's text. The answer streams into the
page like a description does, then describer/mermaid.py extracts the code and it is saved as
a new MermaidVersion, in the same transaction as the job's finishing write.

A conversion queued with `repair_error` set is a repair: the latest code and the parser's
message go back to the model, and its answer becomes a version of origin "repair". Whether
code parses is decided in the browser, by Mermaid's own parser (static/js/mermaid-editor.js).

One of the two job kinds (the other is describer/describing.py); describer/pipeline.py runs
both the same way. Nothing here imports torch at module level.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings

from describer import prompts, services
from describer.describing import record_examples_used
from describer.graph.mermaid import close_cut_off
from describer.mermaid import extract_mermaid
from describer.models import Conversion, Example, MermaidVersion

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime
    from describer.progress import JobProgress

# CLIP reads 77 tokens: the beginning of a description (its title, its first steps) is the query.
CLIP_QUERY_CHARS = 500


class Draw:
    kind = Conversion.Kind.TEXT_TO_DIAGRAM

    def prepare(self, runtime: DescriberRuntime, job: Conversion, progress: JobProgress, timings: dict) -> list[dict]:
        """The chat messages: a repair of the latest code, or a first drawing with few-shot examples."""
        code_to_repair = self._code_to_repair(job)
        if job.repair_error and code_to_repair:
            return prompts.repair_messages(code_to_repair, job.repair_error)
        progress.stage(Conversion.Stage.RETRIEVAL)
        started = time.monotonic()
        examples = few_shot_examples(runtime, job)
        timings["retrieval_s"] = round(time.monotonic() - started, 3)
        return prompts.draw_messages(job.input_text, [(example.description, example.mermaid) for example in examples])

    def grammar(self, job: Conversion) -> str:
        return "mermaid"

    def result(self, job: Conversion, text: str, *, cut_off: bool = False) -> tuple[dict, Callable[[], None]]:
        """The finishing fields, and the new version to add once the finishing write took. Code
        cut off at the length limit keeps its complete lines, its open subgraphs closed."""
        is_repair = bool(job.repair_error and self._code_to_repair(job))
        origin = MermaidVersion.Origin.REPAIR if is_repair else MermaidVersion.Origin.MODEL
        code = answer_code(text, cut_off=cut_off)
        return {"repair_error": ""}, lambda: services.mermaid_version_add(job, code=code, origin=origin)

    def _code_to_repair(self, job: Conversion) -> str:
        latest = job.mermaid_versions.first()
        return latest.code if latest else job.output_mermaid


def answer_code(text: str, *, cut_off: bool) -> str:
    """The Mermaid code in a model's answer; one cut off at the length limit keeps its complete
    lines, its open subgraphs closed."""
    return extract_mermaid(close_cut_off(text) if cut_off else text)


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
    record_examples_used(job, examples)
    return examples
