"""The describer runtime: both models, loaded once in the GPU worker, and what it does with them.

Never import this from the web process: it pulls in torch and transformers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from describer.inference.constraints import Grammars, RowConstraints
from describer.inference.engine import Budget, Engine, EngineEvent, EngineRequest, build_engine
from describer.inference.errors import EngineStopped, GenerationTimeout, OutOfMemory
from describer.inference.fast_decode import FastDecoder, RowLimits, unsupported_reason
from describer.inference.loading import (
    DEFAULT_MAX_IMAGE_PIXELS,
    is_cuda_oom,
    load_clip,
    load_vlm,
    merged_with_adapter,
    resolve_model_sources,
    short_reason,
    unit_vector,
)
from describer.inference.tiny import is_tiny_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

logger = logging.getLogger("describer.inference")

# How often the consumer wakes up to check that the generate thread is still alive.
STREAM_POLL_S = 0.1
CONTINUOUS, STATIC = "continuous", "static"
# The continuous-batching engine's settings when the runtime is built without them (tests).
ENGINE_DEFAULTS = {"ceiling": 16, "max_prompt_tokens": 4096, "max_new_tokens": 1024, "prefill_chunk": 2048,
                   "max_vram": None, "kv_budget_bytes": None, "constrained": False,
                   "enforce_max_vram": True}  # fmt: skip


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
    # A grammar name of describer/inference/constraints.py ("description:en", "mermaid"): every
    # token is one the grammar allows. None: unconstrained.
    grammar: str | None = None

    def images(self) -> list[Image.Image]:
        """The images in the order the chat template places their tokens."""
        return [item["image"] for item in _content_items(self.messages) if _is_image_item(item)]


def _load_weights(options: dict[str, Any], adapter) -> tuple[Any, Any, dict[str, float]]:
    """The vision-language model as `DescriberRuntime.load` was asked for it, with `adapter` merged
    in (or none), and how long the merge and the load took."""
    started = time.monotonic()
    source = options["vlm_source"]
    weights = merged_with_adapter(source, adapter.path, cache_dir=options["cache_dir"]) if adapter else source
    merged_at = time.monotonic()
    model, processor = load_vlm(
        weights, max_vram=options["max_vram"], max_ram=options["max_ram"], quantization=options["quantization"],
        cache_dir=options["cache_dir"], max_pixels=options["max_pixels"],
    )  # fmt: skip
    seconds = {"merge_s": round(merged_at - started, 3), "load_s": round(time.monotonic() - merged_at, 3)}
    return model, processor, seconds


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

    Load it once per worker process (``from_settings()``), then call ``stream()`` per job or
    ``stream_batch()`` for several jobs at once, and ``embed_image()`` / ``embed_text()`` for
    retrieval. One stream should run at a time.

    Generation runs through ``FastDecoder`` (a static KV cache) whenever the whole model is on one
    device; ``cuda_graphs`` (DESCRIBER_CUDA_GRAPHS) replays its decode step as one CUDA graph on
    CUDA, and off it runs the same step eagerly. A model partly offloaded to the CPU uses
    transformers' ``generate`` (``stream_generate()``), a batch one request after another.
    """

    available = True  # the worker's UnavailableRuntime says False

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        clip: SentenceTransformer,
        model_name: str,
        is_tiny: bool = False,
        time_limit_s: float | None = None,
        cuda_graphs: bool = True,
        scheduler: str = CONTINUOUS,
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        if scheduler not in (CONTINUOUS, STATIC):
            raise ValueError(f"DESCRIBER_SCHEDULER must be {CONTINUOUS!r} or {STATIC!r} (got {scheduler!r}).")
        self.model = model
        self.processor = processor
        self.clip = clip
        self.model_name = model_name
        self.is_tiny = is_tiny
        self.time_limit_s = time_limit_s  # only for the GenerationTimeout message
        self.decoder = _fast_decoder(model, cuda_graphs=cuda_graphs)
        self.cuda_graphs = cuda_graphs
        self.scheduler = scheduler
        self.engine_options = {**ENGINE_DEFAULTS, **(engine_options or {})}
        self._engine: _EngineThread | None = None
        self.budget: Budget | None = None  # how the engine's slots were sized, once it is built
        self._grammars: Grammars | None = None
        # The fine-tuned adapter merged into the weights (describer.adapters.AdapterInfo), or None.
        self.adapter = None
        self.adapter_id: int | None = None  # its describer.models.Adapter row
        self.load_options: dict[str, Any] = {}  # how load() was called, for reload()
        self.load_seconds: dict[str, float] = {}
        if model is not None and model.device.type == "cuda":
            # cuDNN's fused attention, once it has run out of memory, failed every later call in
            # the process ("mha_graph.execute(...).is_good()", torch 2.11 on an H100); flash and
            # memory-efficient attention raise a plain OOM and recover.
            torch.backends.cuda.enable_cudnn_sdp(False)

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
        cuda_graphs: bool = True,
        scheduler: str = CONTINUOUS,
        engine_options: dict[str, Any] | None = None,
        adapter=None,
    ) -> DescriberRuntime:
        """Both models; with `adapter` (a checked describer.adapters.AdapterInfo) the vision-language
        model is the base with the adapter merged in (loading.merged_with_adapter)."""
        vlm_source, clip_source = str(vlm_source), str(clip_source)
        options = {
            key: value for key, value in locals().items()
            if key not in ("cls", "adapter", "clip_source", "scheduler", "engine_options")
        }  # fmt: skip
        model, processor, seconds = _load_weights(options, adapter)
        clip = load_clip(clip_source, cache_dir)
        tiny = is_tiny_model(vlm_source)
        name = "tiny random Qwen2.5-VL (writes nonsense)" if tiny else vlm_source
        runtime = cls(
            model=model,
            processor=processor,
            clip=clip,
            model_name=name,
            is_tiny=tiny,
            time_limit_s=time_limit_s,
            cuda_graphs=cuda_graphs,
            scheduler=scheduler,
            engine_options=engine_options,
        )
        runtime.adapter, runtime.load_options, runtime.load_seconds = adapter, options, seconds
        return runtime

    def reload(self, adapter) -> None:
        """Serve `adapter` (or the base model for None) from now on, keeping CLIP. The old weights
        go first (an 8 GB card holds one copy); if the new ones fail to load, the old come back
        and the error is raised."""
        previous, previous_id = self.adapter, self.adapter_id
        self._unload_vlm()
        try:
            self._load_vlm(adapter)
        except Exception:
            self._unload_vlm()
            self._load_vlm(previous)
            self.adapter_id = previous_id
            raise

    def _unload_vlm(self) -> None:
        import gc

        # The grammars stay: the merged model keeps the base model's tokenizer.
        self.stop_engine()
        self.model = self.processor = self.decoder = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _load_vlm(self, adapter) -> None:
        self.model, self.processor, self.load_seconds = _load_weights(self.load_options, adapter)
        self.decoder = _fast_decoder(self.model, cuda_graphs=self.load_options["cuda_graphs"])
        self.adapter, self.adapter_id = adapter, None

    @property
    def serving(self) -> str:
        """What writes the results: the base model, and the adapter merged into it."""
        return f"{self.model_name} + {self.adapter.label}" if self.adapter else str(self.model_name)

    @classmethod
    def from_settings(cls, adapter=None) -> DescriberRuntime:
        from django.conf import settings

        vlm_source, clip_source = resolve_model_sources()
        runtime = cls.load(
            vlm_source,
            clip_source,
            max_vram=settings.MODEL_MAX_VRAM,
            max_ram=settings.MODEL_MAX_RAM,
            quantization=settings.MODEL_QUANTIZATION,
            cache_dir=settings.MODEL_CACHE_DIR,
            max_pixels=getattr(settings, "DESCRIBER_MAX_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            time_limit_s=getattr(settings, "DESCRIBER_TIME_LIMIT_S", None),
            cuda_graphs=getattr(settings, "DESCRIBER_CUDA_GRAPHS", True),
            scheduler=settings.DESCRIBER_SCHEDULER,
            engine_options={
                "ceiling": settings.DESCRIBER_BATCH_SIZE,
                "max_prompt_tokens": settings.DESCRIBER_MAX_PROMPT_TOKENS,
                "max_new_tokens": settings.DESCRIBER_MAX_NEW_TOKENS,
                "prefill_chunk": settings.DESCRIBER_PREFILL_CHUNK,
                "max_vram": _size_in_bytes(settings.MODEL_MAX_VRAM),
                "constrained": getattr(settings, "DESCRIBER_CONSTRAINED", True),
            },
            adapter=adapter,
        )
        if getattr(settings, "DESCRIBER_CONSTRAINED", True):
            runtime.grammars.compile_all()  # now, not in the first job of each kind
        return runtime

    @property
    def device(self) -> str:
        return str(self.model.device)

    @property
    def grammars(self) -> Grammars:
        """The compiled grammars for this model's tokenizer (built on first use)."""
        if self._grammars is None:
            eos = self.model.generation_config.eos_token_id
            self._grammars = Grammars(
                self.processor.tokenizer,
                vocab_size=self.model.lm_head.out_features,
                stop_token_ids=[eos] if isinstance(eos, int) else (eos or []),
            )
        return self._grammars

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
        return unit_vector(vectors[0])

    # --- Generation --------------------------------------------------------------------------

    def prepare_inputs(self, requests: list[GenerationRequest], *, on_device: bool = True) -> BatchFeature:
        """Tokenize requests (and their images) into one left-padded batch on the model's device
        (or in host memory, ``on_device=False``)."""
        # Images first: collecting them checks the messages' structure with a readable error
        # before the chat template fails on it with a Jinja one.
        images = [image for request in requests for image in request.images()]
        texts = [
            self.processor.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            for request in requests
        ]
        # Left padding (set at load time): every row then ends where generation continues.
        batch = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        return batch.to(self.model.device) if on_device else batch

    def stream(self, request: GenerationRequest, *, deadline: float | None = None) -> Iterator[StreamChunk]:
        """Yield the model's answer in text chunks as they are generated (greedy, deterministic).

        ``deadline`` is a ``time.monotonic()`` value: generation stops there and GenerationTimeout
        is raised after the chunks produced so far. Errors in the generate thread are re-raised
        here (CUDA OOM as OutOfMemory). Stopping the iteration early (``close()``, ``break``)
        stops the generate thread as well.
        """
        if self.continuous:
            with closing(self._stream_engine([request], deadline)) as chunks:
                yield from (chunk for _, chunk in chunks if chunk)
            return
        if self.decoder is not None:
            # closing(): an abandoned stream stops its decode thread now, not when collected.
            with closing(self._stream_decoded([request], deadline)) as chunks:
                yield from (chunk for _, chunk in chunks if chunk)
            return
        yield from self.stream_generate(request, deadline=deadline)

    def stream_batch(
        self, requests: list[GenerationRequest], *, deadline: float | None = None, stopped: set[int] | None = None
    ) -> Iterator[tuple[int, StreamChunk]]:
        """Generate several requests together; yield ``(index, chunk)`` as each request's text grows.

        Each request's output is what it would get alone (greedy; rows are padded and masked apart).
        When a request is done, an empty chunk with ``final`` set says so (its ``tokens`` are any not
        yet counted, its ``cut_off`` whether it stopped at ``max_new_tokens`` rather than ending),
        so its job can be finished while the others still run. A request with a ``grammar`` is
        decoded under it. Deadline, errors and
        early closing behave as in ``stream()``, for the whole batch. A row whose index the caller
        adds to ``stopped`` (its job was cancelled) leaves the batch at the next decode step and
        yields nothing more; the other rows go on.
        """
        stopped = stopped if stopped is not None else set()
        if self.decoder is None:
            for index, request in enumerate(requests):
                if index in stopped:
                    continue
                tokens = 0
                with closing(self.stream_generate(request, deadline=deadline)) as chunks:
                    for chunk in chunks:
                        if index in stopped:
                            break
                        tokens += chunk.tokens
                        yield index, chunk
                if index not in stopped:
                    yield index, StreamChunk("", 0, final=True, cut_off=tokens >= request.max_new_tokens)
            return
        if self.continuous:
            yield from self._stream_engine(requests, deadline, stopped)
            return
        yield from self._stream_decoded(requests, deadline, stopped)

    # --- Continuous batching ----------------------------------------------------------------------

    @property
    def continuous(self) -> bool:
        """Whether requests go through the continuous-batching engine (describer/inference/engine.py):
        the fast decoder can run (the whole model on one device) and DESCRIBER_SCHEDULER says so."""
        return self.decoder is not None and self.scheduler == CONTINUOUS

    def engine(self) -> _EngineThread:
        """The engine and its thread, built and started on first use (the slots sized then)."""
        if self._engine is None:
            options = self.engine_options
            if self.model.device.type == "cuda" and options["max_vram"] and options["enforce_max_vram"]:
                # MODEL_MAX_VRAM is enforced, not only planned for: past it the allocator raises.
                total = torch.cuda.get_device_properties(self.model.device).total_memory
                torch.cuda.set_per_process_memory_fraction(min(1.0, options["max_vram"] / total), self.model.device)
            engine, self.budget = build_engine(
                self.model, ceiling=options["ceiling"], max_prompt_tokens=options["max_prompt_tokens"],
                max_new_tokens=options["max_new_tokens"], prefill_chunk=options["prefill_chunk"],
                grammars=lambda: self.grammars, cuda_graphs=self.cuda_graphs,
                constrained_graphs=options["constrained"], max_vram=options["max_vram"],
                kv_budget_bytes=options["kv_budget_bytes"], warmup=self._largest_prompt,
            )  # fmt: skip
            self._engine = _EngineThread(engine)
            self._engine.start()
        return self._engine

    def stop_engine(self) -> None:
        if self._engine is not None:
            self._engine.stop()
            self._engine = None

    def free_slots(self) -> int:
        """How many more requests the engine would admit now (the worker claims that many jobs)."""
        return self.engine().engine.has_capacity()

    def submit(
        self, rid: Any, request: GenerationRequest, sink: queue.Queue, *, deadline: float | None = None,
        exclusive: bool = False, time_limit_s: float | None = None,
    ) -> None:
        """Queue one request on the engine; its ``EngineEvent``s go to ``sink`` (any thread may read
        it). The inputs are prepared here, on the caller's thread, while the engine decodes.
        ``deadline`` is absolute (``time.monotonic()``); ``time_limit_s`` counts from the start of
        the request's prefill, so a wait for a slot does not use it up."""
        inputs = self.prepare_inputs([request], on_device=False)  # the engine moves them when their turn comes
        limits = RowLimits(request.max_new_tokens, request.min_new_tokens)
        engine_request = EngineRequest(rid, inputs, limits, request.grammar, deadline, exclusive, time_limit_s)
        self.engine().submit(engine_request, sink)

    def engine_alive(self) -> bool:
        return self._engine is not None and self._engine.is_alive()

    def cancel(self, rid: Any) -> None:
        """The request leaves the engine at its next step; nothing more is sent for it."""
        if self._engine is not None:
            self._engine.cancel(rid)

    def row_text(self, rid: Any) -> _RowText:
        """Turns one request's tokens into ``StreamChunk``s as they come."""
        return _RowText(self.processor.tokenizer, rid)

    def _largest_prompt(self) -> dict[str, Any]:
        """A prompt as long as the slots hold, with an image of DESCRIBER_MAX_PIXELS: its prefill's
        peak memory is what the budget keeps free beside the slots."""
        pixels = self.load_options.get("max_pixels") or DEFAULT_MAX_IMAGE_PIXELS
        side = max(28, int(pixels**0.5) // 28 * 28)
        image = Image.new("RGB", (side, side), "white")
        base = self.prepare_inputs([GenerationRequest([{"role": "user", "content": [{"type": "image", "image": image}]}], 1)])
        filler = max(0, self.engine_options["max_prompt_tokens"] - base["input_ids"].shape[1] - 8)
        content = [{"type": "image", "image": image}, {"type": "text", "text": " a" * filler}]
        return self.prepare_inputs([GenerationRequest([{"role": "user", "content": content}], 1)])

    def _stream_engine(
        self, requests: list[GenerationRequest], deadline: float | None, stopped: set[int] | None = None
    ) -> Iterator[tuple[int, StreamChunk]]:
        """``stream_batch`` through the engine: each request is submitted, and its events read back."""
        started = self._checked_start(requests, deadline)
        stopped = stopped if stopped is not None else set()
        sink: queue.Queue[EngineEvent] = queue.Queue()
        batch = object()  # rids are (batch, index): unique among every stream on the engine
        open_rows: set[int] = set()
        rows = {index: self.row_text(index) for index in range(len(requests))}
        error = None
        try:
            for index, request in enumerate(requests):
                self.submit((batch, index), request, sink, deadline=deadline)
                open_rows.add(index)
            while open_rows and error is None:
                for index in stopped & open_rows:
                    self.cancel((batch, index))
                    open_rows.discard(index)
                try:
                    event = sink.get(timeout=STREAM_POLL_S)
                except queue.Empty:
                    if not self.engine_alive():
                        raise RuntimeError("The decode thread stopped.") from None
                    continue
                index = event.rid[1]
                if index not in open_rows or index in stopped:
                    continue
                if event.error is not None:
                    error = event.error
                    continue
                if event.finished:
                    open_rows.discard(index)
                yield from rows[index].add(event.token, event.finished, event.cut_off)
        finally:
            for index in open_rows:
                self.cancel((batch, index))
        if isinstance(error, GenerationTimeout):
            raise self._timeout(started, deadline)
        if error is not None:
            raise error

    def _stream_decoded(
        self, requests: list[GenerationRequest], deadline: float | None, stopped: set[int] | None = None
    ) -> Iterator[tuple[int, StreamChunk]]:
        started = self._checked_start(requests, deadline)
        with _oom_as_inference_error("while preparing inputs"):
            prompts = [self.prepare_inputs([request]) for request in requests]
        limits = [RowLimits(request.max_new_tokens, request.min_new_tokens) for request in requests]
        constraints = self._constraints(requests)
        stop = _StopSignal(deadline)
        stopped = stopped if stopped is not None else set()
        thread = _DecodeThread(self.decoder, prompts, limits, stop, stopped, constraints)
        del prompts
        thread.start()
        rows = [_RowText(self.processor.tokenizer, index) for index in range(len(requests))]
        try:
            yield from _drain_decoded(thread, rows, stopped)
        finally:
            stop.request_stop()
            thread.join()
        if thread.error is not None and is_cuda_oom(thread.error):
            self.decoder.release()  # its cached buffers go back before the cache is emptied
        _reraise(thread)
        if stop.deadline_reached:
            raise self._timeout(started, deadline)

    def _checked_start(self, requests: list[GenerationRequest], deadline: float | None) -> float:
        """Now, once the batch is known to be runnable: a deadline not yet past, every request
        asking for at least one token (checked before any of them starts)."""
        started = time.monotonic()
        if deadline is not None and started >= deadline:
            raise self._timeout(started, deadline)
        for request in requests:
            if request.max_new_tokens < 1:
                raise ValueError(f"max_new_tokens must be at least 1 (got {request.max_new_tokens}).")
        return started

    def _constraints(self, requests: list[GenerationRequest]) -> RowConstraints | None:
        if not any(request.grammar for request in requests):
            return None  # no grammar work at all, not even the tokenizer's
        return self.grammars.rows([request.grammar for request in requests])

    def stream_generate(self, request: GenerationRequest, *, deadline: float | None = None) -> Iterator[StreamChunk]:
        """``stream()`` through transformers' ``generate``: the fallback, and the benchmark's baseline."""
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
        constrained = {}
        if request.grammar:
            # As in the fast decoder, the grammar wins over min_new_tokens (generate would mask
            # the end that a complete answer needs, and xgrammar's processor then fails).
            constrained = {"logits_processor": [self.grammars.logits_processor(request.grammar)], "min_new_tokens": 0}
        return {
            **inputs,
            # Greedy: deterministic output. The model's own config keeps its stop tokens and
            # repetition penalty; its sampling flags (Qwen ships temperature/top_p/top_k) go unused.
            "do_sample": False,
            "max_new_tokens": request.max_new_tokens,
            "min_new_tokens": request.min_new_tokens,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([stop]),
            **constrained,
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

    def should_stop(self) -> bool:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.deadline_reached = True
        return self.deadline_reached or self._requested.is_set()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        stop = self.should_stop()
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


class _DecodeThread(threading.Thread):
    """Runs ``FastDecoder.decode`` and hands each step's tokens over a queue (None at the end)."""

    def __init__(
        self,
        decoder: FastDecoder,
        prompts: list[Any],
        limits: list[RowLimits],
        stop: _StopSignal,
        dropped: set[int],
        constraints: RowConstraints | None = None,
    ) -> None:
        super().__init__(name="describer-generate", daemon=True)
        self._decoder = decoder
        self._constraints = constraints
        self._prompts = prompts
        self._limits = limits
        self._signal = stop
        self._dropped = dropped
        self.steps: queue.Queue[list[Any] | None] = queue.Queue()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for step in self._decoder.decode(
                self._prompts,
                self._limits,
                should_stop=self._signal.should_stop,
                dropped=self._dropped,
                constraints=self._constraints,
            ):
                self.steps.put(step)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self.error = exc
        finally:
            self._prompts = []  # drop the input tensors as soon as possible
            self.steps.put(None)


class _EngineThread(threading.Thread):
    """Steps the engine while it has work and routes each event to its request's sink.

    Lives as long as the model; a failure of a whole step (CUDA out of memory in a decode step,
    say) ends every request in the engine with the error, and the engine goes on with new ones."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(name="describer-engine", daemon=True)
        self.engine = engine
        self._sinks: dict[Any, queue.Queue] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def submit(self, request: EngineRequest, sink: queue.Queue) -> None:
        with self._lock:
            self._sinks[request.rid] = sink
        try:
            self.engine.add_request(request)
        except Exception:
            with self._lock:
                self._sinks.pop(request.rid, None)
            raise
        self._wake.set()

    def cancel(self, rid: Any) -> None:
        with self._lock:
            self._sinks.pop(rid, None)
        self.engine.cancel(rid)
        self._wake.set()

    def stop(self) -> None:
        """Stop stepping; requests still in the engine end with EngineStopped (the worker stops
        the engine only when it has nothing running)."""
        self._stopping.set()
        self._wake.set()
        self.join(timeout=30)
        if self.is_alive():
            logger.warning("The decode thread did not stop within 30 s; it is left to end by itself.")
            return
        self._route(self.engine.fail_all(EngineStopped(), waiting_too=True))

    def run(self) -> None:
        while not self._stopping.is_set():
            if self.engine.idle():
                self._wake.wait(STREAM_POLL_S)
                self._wake.clear()
                continue
            try:
                events = self.engine.step()
            except BaseException as error:  # noqa: BLE001 - the requests end with it; the thread goes on
                events = self._failed(error)
            self._route(events)

    def _route(self, events: list[EngineEvent]) -> None:
        for event in events:
            with self._lock:
                sink = self._sinks.pop(event.rid, None) if event.finished else self._sinks.get(event.rid)
            if sink is not None:
                sink.put(event)

    def _failed(self, error: BaseException) -> list[EngineEvent]:
        if not is_cuda_oom(error):
            logger.error("a decode step failed", exc_info=error)
            return self.engine.fail_all(error)
        reason = short_reason(error)
        del error
        _free_cuda_memory("in a decode step", reason)
        return self.engine.fail_all(OutOfMemory())


def _size_in_bytes(size: str) -> int:
    from accelerate.utils import convert_file_size_to_int

    return convert_file_size_to_int(size)


class StreamChunk(str):
    """A piece of streamed text that also says how many new tokens it took to write.

    ``final`` marks the end of one request of a batch (``stream_batch``); such a chunk is empty,
    and its ``cut_off`` says whether the request stopped at its ``max_new_tokens``.
    """

    tokens: int
    final: bool
    cut_off: bool

    def __new__(cls, text: str, tokens: int, final: bool = False, cut_off: bool = False) -> StreamChunk:
        chunk = super().__new__(cls, text)
        chunk.tokens = tokens
        chunk.final = final
        chunk.cut_off = cut_off
        return chunk


class _RowText:
    """Turns one row's tokens into text as they come.

    Each token decodes a short window of tokens (the incremental detokenising of TGI and vLLM), so
    token 1000 costs what token 10 does; a token that ends inside a multi-byte character waits
    for the next. The chunks join to the full decoded text, as generate's streamer's do.
    """

    def __init__(self, tokenizer: Any, index: int) -> None:
        self.tokenizer = tokenizer
        self.index = index
        self._ids: list[int] = []
        self._prefix = self._read = 0  # window start; end of what has been emitted
        self._tokens = 0  # tokens since the last chunk

    def add(self, token: int, finished: bool, cut_off: bool = False) -> Iterator[tuple[int, StreamChunk]]:
        self._ids.append(token)
        self._tokens += 1
        text = self._new_text(finished)
        if text:
            yield self.index, StreamChunk(text, self._tokens)
            self._tokens = 0
        if finished:
            yield self.index, StreamChunk("", self._tokens, final=True, cut_off=cut_off)
            self._tokens = 0

    def _new_text(self, finished: bool) -> str:
        before = self.tokenizer.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = self.tokenizer.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not finished):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]


def _drain_decoded(
    thread: _DecodeThread, rows: list[_RowText], stopped: set[int]
) -> Iterator[tuple[int, StreamChunk]]:
    while True:
        try:
            step = thread.steps.get(timeout=STREAM_POLL_S)
        except queue.Empty:
            if not thread.is_alive() and thread.steps.empty():
                return
            continue
        if step is None:
            return
        for decoded in step:
            if decoded.row not in stopped:  # tokens already in flight when the row was stopped
                yield from rows[decoded.row].add(decoded.token, decoded.finished, decoded.cut_off)


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


def _fast_decoder(model: PreTrainedModel | None, *, cuda_graphs: bool) -> FastDecoder | None:
    if model is None:  # an embedder-only runtime (benchmarks)
        return None
    reason = unsupported_reason(model)
    if reason is not None:
        logger.warning("Fast decoding is off: %s. Generation uses transformers' generate, one request at a time.", reason)
        return None
    decoder = FastDecoder(model, cuda_graphs=cuda_graphs)
    logger.info("Decoding with a static KV cache%s.", " and CUDA graphs" if decoder.cuda_graphs else "")
    return decoder


def _reraise(thread: _GenerateThread | _DecodeThread) -> None:
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
