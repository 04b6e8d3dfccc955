"""The describer runtime: both models, loaded once in the GPU worker, and what it does with them.

Never import this from the web process: it pulls in torch and transformers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from describer.inference.errors import GenerationTimeout, OutOfMemory
from describer.inference.loading import (
    DEFAULT_MAX_IMAGE_PIXELS,
    is_cuda_oom,
    load_clip,
    load_vlm,
    resolve_model_sources,
    short_reason,
)
from describer.inference.tiny import is_tiny_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

logger = logging.getLogger("describer.inference")

# How often the consumer wakes up to check that the generate thread is still alive.
STREAM_POLL_S = 0.1


@dataclass
class GenerationRequest:
    """One conversation to continue, in Qwen's chat format.

    ``messages``: ``[{"role": "system" | "user" | "assistant", "content": [...]}]`` where content
    items are ``{"type": "image", "image": PIL.Image}`` or ``{"type": "text", "text": str}``
    (a plain string is accepted as text-only content).
    """

    messages: list[dict[str, Any]]
    max_new_tokens: int
    min_new_tokens: int = 0

    def images(self) -> list[Image.Image]:
        """The images in the order the chat template places their tokens."""
        return [item["image"] for item in _content_items(self.messages) if _is_image_item(item)]


def _content_items(messages: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts.")
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(item, dict) for item in content):
            raise ValueError(f"messages[{index}] needs 'content': a string or a list of dicts.")
        yield from content


def _is_image_item(item: dict[str, Any]) -> bool:
    # The same test as Qwen's chat template, which emits image tokens for each of these.
    if item.get("type") != "image" and "image" not in item and "image_url" not in item:
        return False
    if not isinstance(item.get("image"), Image.Image):
        # The processor cannot open file:// URIs; the caller opens the file.
        raise ValueError("An image content item needs 'image': a PIL.Image.Image (not a path or URI).")
    return True


class DescriberRuntime:
    """The vision-language model and the CLIP embedder behind one object.

    Load it once per worker process (``from_settings()``), then call ``stream()`` per job and
    ``embed_image()`` / ``embed_text()`` for retrieval. ``stream()`` handles one request, and one
    stream should run at a time; the inputs are prepared by ``prepare_inputs()``, which already
    accepts a batch.
    """

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        clip: SentenceTransformer,
        model_name: str,
        is_tiny: bool = False,
        time_limit_s: float | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.clip = clip
        self.model_name = model_name
        self.is_tiny = is_tiny
        self.time_limit_s = time_limit_s  # only for the GenerationTimeout message

    @classmethod
    def load(
        cls,
        vlm_source: str | Path,
        clip_source: str | Path,
        *,
        max_vram: str = "7GiB",
        max_ram: str = "16GiB",
        quantization: str = "nf4",
        cache_dir: str = "",
        max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        time_limit_s: float | None = None,
    ) -> DescriberRuntime:
        vlm_source, clip_source = str(vlm_source), str(clip_source)
        model, processor = load_vlm(
            vlm_source,
            max_vram=max_vram,
            max_ram=max_ram,
            quantization=quantization,
            cache_dir=cache_dir,
            max_pixels=max_pixels,
        )
        clip = load_clip(clip_source, cache_dir)
        tiny = is_tiny_model(vlm_source)
        name = "tiny random Qwen2.5-VL (writes nonsense)" if tiny else vlm_source
        return cls(
            model=model, processor=processor, clip=clip, model_name=name, is_tiny=tiny, time_limit_s=time_limit_s
        )

    @classmethod
    def from_settings(cls) -> DescriberRuntime:
        from django.conf import settings

        vlm_source, clip_source = resolve_model_sources()
        return cls.load(
            vlm_source,
            clip_source,
            max_vram=settings.MODEL_MAX_VRAM,
            max_ram=settings.MODEL_MAX_RAM,
            quantization=settings.MODEL_QUANTIZATION,
            cache_dir=settings.MODEL_CACHE_DIR,
            max_pixels=getattr(settings, "DESCRIBER_MAX_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            time_limit_s=getattr(settings, "DESCRIBER_TIME_LIMIT_S", None),
        )

    @property
    def device(self) -> str:
        return str(self.model.device)

    # --- Embeddings --------------------------------------------------------------------------

    def embed_image(self, image: Image.Image) -> list[float]:
        """CLIP embedding of an image, L2-normalised (cosine distance = 1 - dot product)."""
        return self._embed(image.convert("RGB"))

    def embed_text(self, text: str) -> list[float]:
        """CLIP embedding of a text, in the same space as ``embed_image``."""
        return self._embed(text)

    def _embed(self, item: Image.Image | str) -> list[float]:
        # One modality per call: sentence-transformers cannot mix images and texts in one batch.
        with _oom_as_inference_error("while embedding"):
            vectors = self.clip.encode(
                [item], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            )
        return [float(value) for value in vectors[0]]

    # --- Generation --------------------------------------------------------------------------

    def prepare_inputs(self, requests: list[GenerationRequest]) -> BatchFeature:
        """Tokenize requests (and their images) into one left-padded batch on the model's device."""
        # Images first: collecting them checks the messages' structure with a readable error
        # before the chat template fails on it with a Jinja one.
        images = [image for request in requests for image in request.images()]
        texts = [
            self.processor.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            for request in requests
        ]
        # Left padding (set at load time): every row then ends where generation continues.
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return batch.to(self.model.device)

    def stream(self, request: GenerationRequest, *, deadline: float | None = None) -> Iterator[StreamChunk]:
        """Yield the model's answer in text chunks as they are generated (greedy, deterministic).

        ``deadline`` is a ``time.monotonic()`` value: generation stops there and GenerationTimeout
        is raised after the chunks produced so far. Errors in the generate thread are re-raised
        here (CUDA OOM as OutOfMemory). Stopping the iteration early (``close()``, ``break``)
        stops the generate thread as well.
        """
        started = time.monotonic()
        if deadline is not None and started >= deadline:
            raise self._timeout(started, deadline)
        with _oom_as_inference_error("while preparing inputs"):
            inputs = self.prepare_inputs([request])
        stop = _StopSignal(deadline)
        streamer = _CountingStreamer(
            self.processor.tokenizer, skip_prompt=True, timeout=STREAM_POLL_S, skip_special_tokens=True
        )
        thread = _GenerateThread(self.model.generate, self._generate_kwargs(request, inputs, streamer, stop))
        thread.start()
        try:
            yield from _drain(streamer, thread)
        finally:
            # Reached on normal end, on error and when the consumer closes the generator early.
            stop.request_stop()
            thread.join()
        _reraise(thread)
        if stop.deadline_reached:
            raise self._timeout(started, deadline)

    def _generate_kwargs(
        self, request: GenerationRequest, inputs: BatchFeature, streamer: TextIteratorStreamer, stop: _StopSignal
    ) -> dict[str, Any]:
        return {
            **inputs,
            # Greedy: deterministic output. The model's own config keeps its stop tokens and
            # repetition penalty; its sampling flags (Qwen ships temperature/top_p/top_k) go unused.
            "do_sample": False,
            "max_new_tokens": request.max_new_tokens,
            "min_new_tokens": request.min_new_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([stop]),
        }

    def _timeout(self, started: float, deadline: float | None) -> GenerationTimeout:
        limit = self.time_limit_s
        if limit is None and deadline is not None:
            limit = max(0.0, round(deadline - started, 1))
        return GenerationTimeout(limit)


class _StopSignal(StoppingCriteria):
    """Stops generate at the deadline or when the consumer asks (checked after every token)."""

    def __init__(self, deadline: float | None) -> None:
        self.deadline = deadline
        self.deadline_reached = False
        self._requested = threading.Event()

    def request_stop(self) -> None:
        self._requested.set()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.deadline_reached = True
        stop = self.deadline_reached or self._requested.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _GenerateThread(threading.Thread):
    """Runs ``generate`` and keeps its exception for the consumer instead of printing it."""

    def __init__(self, generate: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        super().__init__(name="describer-generate", daemon=True)
        self._generate = generate
        self._kwargs = kwargs
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._generate(**self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self.error = exc
        finally:
            self._kwargs = {}  # drop the input tensors as soon as possible


class StreamChunk(str):
    """A piece of streamed text that also says how many new tokens it took to write."""

    tokens: int

    def __new__(cls, text: str, tokens: int) -> StreamChunk:
        chunk = super().__new__(cls, text)
        chunk.tokens = tokens
        return chunk


class _CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer that also counts the generated tokens (text alone can't tell:
    the streamer holds text back until word boundaries)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generated_tokens = 0

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.generated_tokens += int(value.shape[-1])
        super().put(value)


def _drain(streamer: _CountingStreamer, thread: threading.Thread) -> Iterator[StreamChunk]:
    """Yield non-empty chunks until the streamer ends or the generate thread dies without ending it.

    A generate that raises never signals the streamer's end; polling with a timeout notices the
    dead thread. One more pass after that collects chunks queued just before it died. Each chunk
    carries the tokens generated since the previous one.
    """
    counted = 0
    thread_was_dead = False
    while True:
        try:
            chunk = next(streamer)
        except StopIteration:
            return
        except queue.Empty:
            if thread_was_dead:
                return
            thread_was_dead = not thread.is_alive()
            continue
        if chunk:  # the streamer emits many empty strings while it waits for word boundaries
            total = streamer.generated_tokens
            yield StreamChunk(chunk, total - counted)
            counted = total


def _reraise(thread: _GenerateThread) -> None:
    error, thread.error = thread.error, None
    if error is None:
        return
    if not is_cuda_oom(error):
        raise error
    reason = short_reason(error)
    # The traceback holds the frames that hold the GPU tensors: drop it before freeing.
    del error
    _free_cuda_memory("during generation", reason)
    raise OutOfMemory() from None


@contextmanager
def _oom_as_inference_error(stage: str) -> Iterator[None]:
    """A CUDA OOM in the caller's thread becomes OutOfMemory, with the cache emptied."""
    try:
        yield
    except RuntimeError as exc:
        if not is_cuda_oom(exc):
            raise
        reason = short_reason(exc)
    else:
        return
    # Outside the except block: the traceback, and the tensors its frames hold, are gone.
    _free_cuda_memory(stage, reason)
    raise OutOfMemory()


def _free_cuda_memory(stage: str, reason: str) -> None:
    logger.warning("CUDA out of memory %s: %s", stage, reason)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
