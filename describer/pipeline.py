"""What the worker does with one claimed job.

Runs in the worker process only. The model runtime (describer/inference, the
only code that imports torch) is passed in, never imported here at module level.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from describer import drawing, jobs, postprocess, prompts
from describer.images import load_for_model
from describer.models import Conversion, ConversionExample, Example
from describer.progress import Broadcaster, JobProgress

if TYPE_CHECKING:
    from describer.inference.runtime import DescriberRuntime, GenerationRequest

log = logging.getLogger(__name__)


class WorkerStopping(Exception):
    """The worker is shutting down; the job goes back to the queue."""


class JobRunner:
    def __init__(self, runtime: DescriberRuntime, broadcaster: Broadcaster, should_stop=lambda: False) -> None:
        self.runtime = runtime
        self.broadcaster = broadcaster
        self.should_stop = should_stop

    def run(self, job: Conversion) -> None:
        """Run one job to done or failed; never raises for the job's own errors."""
        progress = JobProgress(job, self.broadcaster)
        try:
            if job.kind == Conversion.Kind.DIAGRAM_TO_TEXT:
                self.describe(job, progress)
            else:
                drawing.draw(self, job, progress)
        except WorkerStopping:
            jobs.release_job(job)
            log.info("released %s: worker stopping", job.pk)
            return
        except Exception as error:  # noqa: BLE001 - every failure becomes the job's readable message
            self.fail(job, error)
        progress.finished()

    def fail(self, job: Conversion, error: Exception) -> None:
        from describer.inference.errors import InferenceError

        if isinstance(error, InferenceError):
            log.warning("job %s failed: %s", job.pk, error)
        else:
            log.exception("job %s failed", job.pk)
        # The message is written in the language the user made the job in.
        with translation.override(job.interface_language or None):
            if isinstance(error, InferenceError):
                message = str(error)
            else:
                message = _("The conversion failed because of an internal error (%(kind)s: %(error)s).") % {
                    "kind": type(error).__name__,
                    "error": str(error)[:300],
                }
        jobs.fail_job(job, message)

    def run_batch(self, batch: list[Conversion]) -> None:
        """Run diagram → text jobs with one generation for all; never raises for the jobs' own errors.

        Preprocessing and retrieval run job by job, and a failure there fails that job alone. The
        requests then generate together (runtime.stream_batch): each job's text streams to its own
        page and each job is finished as soon as its own text is. If the batch runs out of GPU
        memory, its unfinished jobs run again one by one.
        """
        from describer.inference.errors import OutOfMemory

        prepared = [item for item in (self._prepare_batched(job) for job in batch) if item is not None]
        if not prepared:
            return
        try:
            self.generate_batch(prepared)
        except WorkerStopping:
            for item in self._unfinished(prepared):
                jobs.release_job(item.job)
            log.info("released %s jobs of a batch: worker stopping", len(self._unfinished(prepared)))
        except OutOfMemory as error:
            unfinished = self._unfinished(prepared)
            log.warning("a batch of %s ran out of GPU memory; running %s jobs one by one", len(prepared), len(unfinished))
            for item in unfinished:
                if len(prepared) == 1:
                    self._finish_failed(item, error)
                else:
                    self.run(item.job)
        except Exception as error:  # noqa: BLE001 - every failure becomes the jobs' readable message
            for item in self._unfinished(prepared):
                self._finish_failed(item, error)

    def _prepare_batched(self, job: Conversion) -> _BatchedJob | None:
        progress = JobProgress(job, self.broadcaster)
        try:
            request, timings = self.prepare_description(job, progress)
        except WorkerStopping:
            jobs.release_job(job)
            return None
        except Exception as error:  # noqa: BLE001 - this job fails alone
            self.fail(job, error)
            progress.finished()
            return None
        return _BatchedJob(job, progress, request, timings)

    def generate_batch(self, batch: list[_BatchedJob]) -> None:
        started = time.monotonic()
        deadline = started + settings.DESCRIBER_TIME_LIMIT_S
        for item in batch:
            item.progress.stage(Conversion.Stage.GENERATION)
        stream = closing(self.runtime.stream_batch([item.request for item in batch], deadline=deadline))
        with stream as chunks:
            self._route_chunks(batch, chunks, started)

    def _route_chunks(self, batch: list[_BatchedJob], chunks, started: float) -> None:
        """Each chunk to its job's page; a job whose text is complete is finished at once."""
        for index, chunk in chunks:
            if self.should_stop():
                raise WorkerStopping
            item = batch[index]
            item.first_token_at = item.first_token_at or time.monotonic()
            item.progress.add_text(chunk, chunk.tokens)
            if chunk.final:
                item.progress.flush()
                item.timings.update(_generation_timings(started, item.first_token_at, item.progress.tokens))
                item.done = True
                try:
                    self.finish_description(item.job, item.progress, item.timings)
                except Exception as error:  # noqa: BLE001 - this job fails alone
                    self.fail(item.job, error)
                item.progress.finished()

    def _unfinished(self, batch: list[_BatchedJob]) -> list[_BatchedJob]:
        return [item for item in batch if not item.done]

    def _finish_failed(self, item: _BatchedJob, error: Exception) -> None:
        item.done = True
        item.progress.flush()
        self.fail(item.job, error)
        item.progress.finished()

    def describe(self, job: Conversion, progress: JobProgress) -> None:
        request, timings = self.prepare_description(job, progress)
        progress.stage(Conversion.Stage.GENERATION)
        timings.update(self.generate(request, progress))
        self.finish_description(job, progress, timings)

    def prepare_description(self, job: Conversion, progress: JobProgress) -> tuple[GenerationRequest, dict]:
        """Preprocessing and retrieval: everything a description needs before generation."""
        timings = {"queue_wait_s": _seconds(job.started_at - job.created_at)}
        started = time.monotonic()
        progress.stage(Conversion.Stage.PREPROCESSING)
        image = load_for_model(job.input_image.path, settings.DESCRIBER_MAX_PIXELS)
        timings["preprocessing_s"] = _since(started)

        progress.stage(Conversion.Stage.RETRIEVAL)
        started = time.monotonic()
        examples = self.retrieve(job, image)
        timings["retrieval_s"] = _since(started)

        from describer.inference.runtime import GenerationRequest

        request = GenerationRequest(
            messages=prompts.describe_messages(image, [example.description for example in examples], job.language),
            max_new_tokens=settings.DESCRIBER_MAX_NEW_TOKENS,
            min_new_tokens=settings.DESCRIBER_MIN_NEW_TOKENS,
        )
        return request, timings

    def finish_description(self, job: Conversion, progress: JobProgress, timings: dict) -> None:
        progress.stage(Conversion.Stage.POSTPROCESSING)
        structure = postprocess.structure_description(progress.text, job.language)
        Conversion.objects.filter(pk=job.pk).update(
            status=Conversion.Status.DONE,
            stage=Conversion.Stage.FINISHED,
            output_raw=progress.text,
            output_text=structure.to_markdown(),
            output_structure=structure.as_dict(),
            tokens_generated=progress.tokens,
            timings=timings,
            finished_at=timezone.now(),
        )

    def retrieve(self, job: Conversion, image) -> list[Example]:
        embedding = self.runtime.embed_image(image)
        examples = list(
            Example.objects.nearest(embedding, k=settings.RETRIEVAL_K, max_distance=settings.RETRIEVAL_MAX_DISTANCE)
        )
        ConversionExample.objects.filter(conversion=job).delete()
        ConversionExample.objects.bulk_create(
            ConversionExample(conversion=job, example=example, similarity=1 - example.distance, rank=rank)
            for rank, example in enumerate(examples, 1)
        )
        return examples

    def generate(self, request, progress: JobProgress) -> dict:
        started = time.monotonic()
        deadline = started + settings.DESCRIBER_TIME_LIMIT_S
        first_token_at = None
        for chunk in self.runtime.stream(request, deadline=deadline):
            if self.should_stop():
                raise WorkerStopping
            first_token_at = first_token_at or time.monotonic()
            progress.add_text(chunk, chunk.tokens)
        progress.flush()
        return _generation_timings(started, first_token_at, progress.tokens)


@dataclass
class _BatchedJob:
    job: Conversion
    progress: JobProgress
    request: GenerationRequest
    timings: dict
    first_token_at: float | None = None
    done: bool = False


def _generation_timings(started: float, first_token_at: float | None, tokens: int) -> dict:
    finished = time.monotonic()
    decode_seconds = finished - (first_token_at or finished)
    return {
        "first_token_s": round((first_token_at or finished) - started, 3),
        "generation_s": round(finished - started, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / decode_seconds, 1) if decode_seconds > 0 else None,
    }


def _seconds(delta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
