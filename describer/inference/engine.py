"""Continuous batching: requests join the running batch at the next decode step and leave at once.

Why: the static decoder (fast_decode.FastDecoder.decode) takes a batch, prefills it row by row and
decodes until its last row ends; a job arriving meanwhile waits for all of it. Here one engine
lives as long as the model, and every ``step()``

1. lets cancelled rows and rows past their deadline leave (their slot is free at once),
2. reserves slots for waiting requests while the KV budget has room (FIFO),
3. launches one decode step of every running row (one CUDA graph per power-of-two bucket),
4. runs one bounded piece of a newcomer's prefill while that step runs on the GPU: the vision
   tower on its own, then the language model in chunks of ``prefill_chunk`` tokens (the whole
   prompt at once when nothing is decoding, so a lone request starts as fast as before),
5. reads the step's tokens back (one step behind, without grammars) and retires finished rows.

**Cache.** One pool ``[layers, 2, slots, kv_heads, columns, head_dim]`` allocated at start. A
row owns one slot, its keys and values left-aligned from column 0. Slots not decoding still run
in their bucket's graph and write into their own last column (their contents are never read: a
row admitted there overwrites its prompt's columns and masks the rest until it writes them).
``columns`` is a multiple of 256: with an odd count the attention's matrix products lose their
aligned kernels (a step took twice as long on an H200). Running rows are kept dense in ``[0, n)``: when a row leaves, the last
row's slot is copied into its place (compaction), so the decode step of bucket B reads the
contiguous ``pool[layer, :, :B]`` with the same two batched matmuls as the static decoder. A
slot is reserved whole at admission (prompt + max_new_tokens fit the slot length), so rows never
grow and nothing is ever preempted. docs/design/continuous-batching.md gives the reasons (pages
would need a gather or a paged kernel per layer and step).

**Budget.** ``slots`` comes from ``kv_budget()``: MODEL_MAX_VRAM less the weights, the measured
peak of a largest prefill, the captured graphs and a margin, divided by the bytes of a slot, and
never above DESCRIBER_BATCH_SIZE.

Single-threaded: ``step()`` runs on the engine thread only; ``add_request`` and ``cancel`` may be
called from any thread and take effect at the next step. Every token a row gets is what it gets
decoding alone (greedy; the tests check it on the CPU, with and without grammars).
"""

from __future__ import annotations

import gc
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from describer.inference.errors import GenerationTimeout, NoSlot, OutOfMemory, PromptTooLong
from describer.inference.fast_decode import (
    RowLimits,
    _batch_bucket,
    _captured,
    _round_up,
    _TextStack,
    prompt_positions,
)
from describer.inference.loading import is_cuda_oom, short_reason

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from describer.inference.constraints import Grammars, RowConstraints

logger = logging.getLogger("describer.inference")

MIB = 2**20
SLOT_LENGTH_STEP = 256
# How many recent steps' timings the engine keeps for stats() (benchmarks, the worker's log).
KEPT_STEPS = 4096


@dataclass
class EngineRequest:
    """One prompt to decode. ``rid`` names it in events (any hashable, unique while it runs);
    ``inputs`` is the processor's output for it alone, on the model's device."""

    rid: Hashable
    inputs: dict[str, torch.Tensor] | None  # in host memory; on the model's device from its prefill, then dropped
    limits: RowLimits
    grammar: str | None = None
    deadline: float | None = None  # time.monotonic(): past it the row leaves with GenerationTimeout
    exclusive: bool = False  # runs alone: admitted only into an empty engine, and nothing joins it
    # Seconds from the start of its prefill (a wait for a slot does not count), which then sets
    # ``deadline``; the worker's DESCRIBER_TIME_LIMIT_S.
    time_limit_s: float | None = None
    prompt_length: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_length = int(self.inputs["input_ids"].shape[1])


@dataclass(frozen=True)
class EngineEvent:
    """A row's new token, or its end with an error (then ``token`` is None and ``finished`` set)."""

    rid: Hashable
    token: int | None
    finished: bool
    cut_off: bool = False
    error: BaseException | None = None


@dataclass
class _Row:
    request: EngineRequest
    slot: int = -1
    remaining: int = 0
    left: bool = False
    matcher: Any = None


@dataclass
class _Prefill:
    """A prompt on its way through the model, piece by piece."""

    row: _Row
    embeds: torch.Tensor | None = None
    positions: torch.Tensor | None = None
    delta: Any = 0
    cache: Any = None
    done: int = 0  # prompt tokens through the language model so far
    hidden: torch.Tensor | None = None  # the last position's output after a chunk
    logits: torch.Tensor | None = None  # after a whole-prompt forward


@dataclass
class StepRecord:
    seconds: float
    rows: int  # rows decoded in the step (those a prefill piece stalls)
    prefill: str = ""  # "", "vision", "chunk", "whole": the piece of prefill this step also ran


def slot_columns(tokens: int) -> int:
    """Cache columns of a slot holding ``tokens`` (prompt and answer)."""
    return _round_up(tokens, SLOT_LENGTH_STEP)


def slot_bytes(stack: _TextStack, columns: int) -> int:
    """The bytes of one slot: keys and values of every layer for ``columns`` columns."""
    element = torch.tensor([], dtype=stack.dtype).element_size()
    return len(stack.layers) * 2 * stack.kv_heads * stack.head_dim * element * columns


def default_margin(vram: int) -> int:
    """What the budget keeps free for the allocator's slack: 5% of the cap, at least 256 MiB."""
    return max(256 * MIB, vram // 20)


def kv_budget(vram: int, *, weights: int, prefill_peak: int, graphs: int, margin: int | None = None) -> int:
    """Bytes left for the KV slots under a ``vram`` cap (MODEL_MAX_VRAM)."""
    margin = default_margin(vram) if margin is None else margin
    return vram - weights - prefill_peak - graphs - margin


def cache_keyword(language_model: Any) -> str:
    """The language model's cache argument: "cache" in transformers 5.2x, "past_key_values" before."""
    return "cache" if "cache" in inspect.signature(language_model.forward).parameters else "past_key_values"


def slots_for(budget_bytes: int, per_slot: int, ceiling: int) -> int:
    return max(0, min(ceiling, budget_bytes // per_slot))


class _SlotState:
    """The slots' buffers and the decode step over the first B of them (one graph per bucket B)."""

    def __init__(self, stack: _TextStack, slots: int, columns: int) -> None:
        self.stack, self.slots, self.columns_count = stack, slots, columns
        self.last_column = columns - 1  # where idle slots write
        device = stack.device
        self.pool = torch.zeros(
            len(stack.layers), 2, slots, stack.kv_heads, columns, stack.head_dim, dtype=stack.dtype, device=device
        )
        self.seen = torch.zeros(slots, stack.vocab, dtype=torch.bool, device=device)
        self.logits = torch.zeros(slots, stack.vocab, dtype=torch.float32, device=device)
        long = {"dtype": torch.long, "device": device}
        self.tokens = torch.zeros(slots, **long)  # the step's input, then its output
        self.positions = torch.zeros(slots, **long)  # M-RoPE text position of the input token
        self.write_pos = torch.full((slots,), self.last_column, **long)  # cache column of the input token
        self.generated = torch.zeros(slots, **long)  # tokens generated before the step's output
        self.min_new = torch.zeros(slots, **long)
        self.columns = torch.arange(columns, **long)
        words = -(-stack.vocab // 32)
        self.allowed_bits = torch.full((slots, words), -1, dtype=torch.int32, device=device)
        pinned = device.type == "cuda"
        self.host = [torch.zeros(slots, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self.events = [torch.cuda.Event() for _ in range(2)] if pinned else []
        self.graphs: dict[int, Any] = {}
        self.split_graphs: dict[int, tuple[Any, Any]] = {}
        self._reads = 0

    # --- The step ------------------------------------------------------------------------------

    def forward(self, batch: int, width: int | None = None) -> None:
        """``width``: attend over the first columns only (eager steps: the widest reservation of
        the running rows); a captured graph always spans the whole slot."""
        stack, width = self.stack, width or self.columns_count
        hidden = stack.embed(self.tokens[:batch, None])
        cos, sin = stack.rotary(hidden, self.positions[:batch].view(1, batch, 1).expand(3, batch, 1))
        # A row attends to its own prompt and tokens and the token it writes now; idle slots
        # (writing into their last column) see finite garbage and are never read.
        mask = (self.columns[None, :width] <= self.write_pos[:batch, None])[:, None, None, :]
        write_at = self.write_pos[:batch].clamp_max(width - 1) if width < self.columns_count else self.write_pos[:batch]
        index = write_at.view(batch, 1, 1, 1).expand(batch, stack.kv_heads, 1, stack.head_dim)
        for number, layer in enumerate(stack.layers):
            keys, values = self.pool[number, 0, :batch, :, :width], self.pool[number, 1, :batch, :, :width]
            attended = self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, keys, values, mask, index)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.logits[:batch].copy_(stack.lm_head(stack.norm(hidden))[:, 0])

    def pick(self, batch: int, *, constrained: bool) -> None:
        stack = self.stack
        allowed = stack.allowed(self.allowed_bits[:batch]) if constrained else None
        suppress = self.generated[:batch] < self.min_new[:batch]
        chosen = stack.choose(self.logits[:batch], self.seen[:batch], suppress, allowed)
        self.seen[:batch].scatter_(1, chosen[:, None], True)
        self.tokens[:batch].copy_(chosen)
        self.positions[:batch].add_(1)
        self.write_pos[:batch] = (self.write_pos[:batch] + 1).clamp_max_(self.last_column)
        self.generated[:batch].add_(1)

    def _attention(self, attention, hidden, cos, sin, keys, values, mask, index) -> torch.Tensor:
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

        stack, batch, columns = self.stack, hidden.shape[0], keys.shape[2]
        query = attention.q_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        key = attention.k_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        value = attention.v_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        keys.scatter_(2, index, key)  # each row at its own column
        values.scatter_(2, index, value)
        # As in fast_decode._DecodeState._attention: two batched matmuls, the cache read once.
        rows = batch * stack.kv_heads
        query = query.reshape(rows, stack.groups, stack.head_dim)
        scores = stack.attention_scores(query, keys.reshape(rows, columns, stack.head_dim))
        scores = scores.view(batch, stack.kv_heads, stack.groups, columns) * stack.scaling
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(values.dtype)
        out = torch.matmul(weights, values)
        return attention.o_proj(out.reshape(batch, 1, -1))

    # --- Graphs ----------------------------------------------------------------------------------

    def capture(self, batch: int, *, split: bool) -> None:
        if batch not in self.graphs:
            pool = next(iter(self.graphs.values())).pool() if self.graphs else None
            self.graphs[batch] = _captured(lambda: (self.forward(batch), self.pick(batch, constrained=False)), pool=pool)
        if split and batch not in self.split_graphs:
            pool = self.graphs[batch].pool()
            forward = _captured(lambda: self.forward(batch), pool=pool)
            self.split_graphs[batch] = (forward, _captured(lambda: self.pick(batch, constrained=True), pool=pool))
        self.clear_idle(0)  # capturing ran the step on whatever the buffers held

    def run(self, batch: int, width: int) -> None:
        graph = self.graphs.get(batch)
        if graph is not None:
            graph.replay()
        else:
            self.forward(batch, width)
            self.pick(batch, constrained=False)

    def run_forward(self, batch: int, width: int) -> None:
        graphs = self.split_graphs.get(batch)
        graphs[0].replay() if graphs else self.forward(batch, width)

    def run_pick(self, batch: int) -> None:
        graphs = self.split_graphs.get(batch)
        graphs[1].replay() if graphs else self.pick(batch, constrained=True)

    def read_back(self, batch: int) -> Callable[[], list[int]]:
        """Start copying the step's tokens to the host; the returned function waits for them."""
        if not self.events:
            tokens = self.tokens[:batch].tolist()
            return lambda: tokens
        host, event = self.host[self._reads % 2], self.events[self._reads % 2]
        self._reads += 1
        host[:batch].copy_(self.tokens[:batch], non_blocking=True)
        event.record()

        def wait() -> list[int]:
            event.synchronize()
            return host[:batch].tolist()

        return wait

    # --- Slots -------------------------------------------------------------------------------------

    def move(self, source: int, target: int) -> None:
        """Slot ``source`` into ``target`` (compaction); ``source`` becomes idle."""
        self.pool[:, :, target].copy_(self.pool[:, :, source])
        for tensor in (self.seen, self.tokens, self.positions, self.write_pos, self.generated, self.min_new, self.allowed_bits):
            tensor[target].copy_(tensor[source])
        self.clear_idle(source)

    def clear_idle(self, first: int) -> None:
        """Slots from ``first`` on decode nothing: they write into their own last column."""
        self.write_pos[first:].fill_(self.last_column)
        self.allowed_bits[first:].fill_(-1)


class Engine:
    """Continuous batching over one model; see the module docstring."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        slots: int,
        slot_length: int,
        prefill_chunk: int = 2048,
        grammars: Callable[[], Grammars] | None = None,
        cuda_graphs: bool = False,
        constrained_graphs: bool = False,
        read_behind: bool = False,
    ) -> None:
        if slots < 1:
            raise ValueError("The engine needs at least one slot.")
        self.model = model
        self.stack = _TextStack(model)
        self.slots = slots
        self.slot_length = slot_columns(slot_length)  # prompt + answer tokens a slot holds: its columns
        self.prefill_chunk = max(1, prefill_chunk)
        self._grammars = grammars  # built on the first request with a grammar
        self.grammars: Grammars | None = None
        self.state = _SlotState(self.stack, slots, self.slot_length)
        # Read a step's tokens while the next runs, even without CUDA graphs (the tests force it
        # on the CPU, where the bookkeeping of the one-step-behind read-back is otherwise never run).
        self.read_behind = read_behind
        self.constraints: RowConstraints | None = None
        self.constrained_graphs = constrained_graphs  # capture the split step too (grammars are on)
        self.cuda_graphs = cuda_graphs and self.stack.device.type == "cuda"
        self.rows: list[_Row] = []  # running rows; rows[i].slot == i
        self.prefill: _Prefill | None = None
        self.admitted: deque[_Row] = deque()  # slot reserved, prefill not begun
        self.waiting: deque[EngineRequest] = deque()  # engine thread's FIFO
        self._inbox: deque[EngineRequest] = deque()
        self._cancelled: set[Hashable] = set()
        self._lock = threading.Lock()
        self._pending: deque[tuple[Callable[[], list[int]], list[_Row]]] = deque()  # steps launched, not read
        self.steps: deque[StepRecord] = deque(maxlen=KEPT_STEPS)
        # What has_capacity() reads from other threads: set by the engine thread after each step.
        self._free, self._exclusive = slots, False
        self._language_model = model.model.language_model
        self._cache_keyword = cache_keyword(self._language_model)

    # --- Any thread ----------------------------------------------------------------------------

    def add_request(self, request: EngineRequest) -> None:
        if request.prompt_length + request.limits.max_new_tokens > self.slot_length:
            raise PromptTooLong(tokens=request.prompt_length, new=request.limits.max_new_tokens, slot=self.slot_length)
        if request.limits.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (got {request.limits.max_new_tokens}).")
        with self._lock:
            self._cancelled.discard(request.rid)
            self._inbox.append(request)

    def cancel(self, rid: Hashable) -> None:
        with self._lock:
            self._cancelled.add(rid)

    def has_capacity(self) -> int:
        """Slots a new request could take now: free ones less those promised to waiting requests;
        none while a request that must run alone waits or runs."""
        with self._lock:
            if self._exclusive or any(request.exclusive for request in self._inbox):
                return 0
            return max(0, self._free - len(self._inbox))

    def _count_free(self) -> None:
        occupants = [row.request for row in self._occupants()] + list(self.waiting)
        with self._lock:
            self._free = self.slots - len(occupants)
            self._exclusive = any(request.exclusive for request in occupants)

    def idle(self) -> bool:
        with self._lock:
            inbox = bool(self._inbox)
        return not (inbox or self.waiting or self.admitted or self.prefill or self.rows or self._pending)

    @property
    def active(self) -> int:
        return len(self.rows)

    # --- Engine thread -----------------------------------------------------------------------------

    @torch.no_grad()
    def capture_graphs(self) -> None:
        """Capture the step of every bucket now (CUDA), with the split pair when grammars exist."""
        if not self.cuda_graphs:
            return
        bucket = 1
        while True:
            self.state.capture(min(bucket, self.slots), split=self.constrained_graphs)
            if bucket >= self.slots:
                break
            bucket *= 2

    @torch.no_grad()
    def step(self) -> list[EngineEvent]:
        started = time.perf_counter()
        events = self._leave()
        self._admit()
        decoding = len(self.rows)
        batch = _batch_bucket(len(self.rows)) if self.rows else 0
        batch = min(batch, self.slots) if batch else 0
        constrained = self.constraints is not None and any(row.matcher is not None for row in self.rows)
        if batch and constrained:
            events += self._collect(len(self._pending))  # the constrained step needs every token read
            current = self._launch_constrained(batch)
        elif batch:
            self.state.run(batch, self._width())
            self._pending.append((self.state.read_back(batch), list(self.rows)))
            current = None
        piece = self._prefill_piece(limited=bool(batch)) if (self.prefill or self.admitted) else ("", [])
        events += piece[1]
        if batch and constrained:
            events += self._take(*current)
        elif batch:
            depth = 2 if self.read_behind or self.state.graphs.get(batch) is not None else 1
            events += self._collect(len(self._pending) - depth + 1)
        elif self._pending:
            events += self._collect(len(self._pending))
        if batch or piece[0]:
            self.steps.append(StepRecord(time.perf_counter() - started, decoding, piece[0]))
        self._count_free()
        return events

    def fail_all(self, error: BaseException, *, waiting_too: bool = False) -> list[EngineEvent]:
        """The rows on the GPU (running, prefilling) end with ``error``: a decode step failed.
        Requests still waiting keep their place, unless ``waiting_too`` (the engine stops)."""
        requests = [row.request for row in self.rows] + ([self.prefill.row.request] if self.prefill else [])
        if waiting_too:
            requests += [row.request for row in self.admitted] + list(self.waiting)
            with self._lock:
                requests += list(self._inbox)
                self._inbox.clear()
            self.admitted.clear()
            self.waiting.clear()
        self.rows, self.prefill, self._pending = [], None, deque()
        self.state.clear_idle(0)
        if self.constraints is not None:
            for slot in range(self.slots):
                self.constraints.clear(slot)
        self._count_free()
        return [EngineEvent(request.rid, None, True, error=error) for request in requests]

    def stats(self) -> dict[str, Any]:
        def summary(values: list[float]) -> dict[str, float]:
            if not values:
                return {}
            values = sorted(values)
            pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
            return {"p50_ms": round(pick(0.5) * 1000, 2), "p95_ms": round(pick(0.95) * 1000, 2),
                    "max_ms": round(values[-1] * 1000, 2), "steps": len(values)}  # fmt: skip

        steps = list(self.steps)
        with_prefill = [record.seconds for record in steps if record.prefill and record.rows]
        decode_only = [record.seconds for record in steps if not record.prefill and record.rows]
        by_piece = {
            kind: summary([record.seconds for record in steps if record.prefill == kind and record.rows])
            for kind in ("vision", "chunk", "whole")
        }
        return {
            "slots": self.slots,
            "slot_length": self.slot_length,
            "decode_step": summary(decode_only),
            # What a running row waits for its next token while a newcomer's prefill piece runs.
            "step_with_prefill_piece": summary(with_prefill),
            "step_with_piece": {kind: figures for kind, figures in by_piece.items() if figures},
            "mean_rows": round(sum(record.rows for record in steps) / len(steps), 2) if steps else 0,
        }

    # --- Leaving and admission ----------------------------------------------------------------

    def _leave(self) -> list[EngineEvent]:
        with self._lock:
            cancelled, self._cancelled = self._cancelled, set()
            # Still counted by has_capacity() until the step recounts, as they were in the inbox.
            self._free -= len(self._inbox)
            self._exclusive = self._exclusive or any(request.exclusive for request in self._inbox)
            self.waiting.extend(self._inbox)
            self._inbox.clear()
        now = time.monotonic()
        events = []

        def leaves(request: EngineRequest) -> bool:
            if request.rid in cancelled:
                return True
            if request.deadline is not None and now >= request.deadline:
                events.append(EngineEvent(request.rid, None, True, error=GenerationTimeout(request.time_limit_s)))
                return True
            return False

        self.waiting = deque(request for request in self.waiting if not leaves(request))
        self.admitted = deque(row for row in self.admitted if not leaves(row.request))
        if self.prefill is not None and leaves(self.prefill.row.request):
            self.prefill = None
        for row in list(self.rows):
            if leaves(row.request):
                self._retire(row)
        return events

    def _admit(self) -> None:
        while self.waiting:
            request = self.waiting[0]
            taken = len(self.rows) + len(self.admitted) + (1 if self.prefill else 0)
            if taken >= self.slots:
                return
            if (request.exclusive and taken) or any(row.request.exclusive for row in self._occupants()):
                return
            self.admitted.append(_Row(self.waiting.popleft()))

    def _occupants(self) -> list[_Row]:
        return self.rows + list(self.admitted) + ([self.prefill.row] if self.prefill else [])

    def _retire(self, row: _Row) -> None:
        """The row leaves now: the last running row moves into its slot."""
        if row.left:
            return
        row.left = True
        slot, last = row.slot, len(self.rows) - 1
        if slot != last:
            moved = self.rows[last]
            self.state.move(last, slot)
            if self.constraints is not None:
                self.constraints.move(last, slot)
            moved.slot = slot
            self.rows[slot] = moved
        else:
            self.state.clear_idle(slot)
            if self.constraints is not None:
                self.constraints.clear(slot)
        self.rows.pop()

    # --- Decoding ------------------------------------------------------------------------------------

    def _launch_constrained(self, batch: int) -> tuple[Callable[[], list[int]], list[_Row]]:
        """Forward launched; the grammar masks filled on the host meanwhile and copied; pick launched."""
        self.state.run_forward(batch, self._width())
        bitmask = self.constraints.fill(range(len(self.rows)))
        self.state.allowed_bits[:batch].copy_(bitmask[:batch], non_blocking=True)
        self.state.run_pick(batch)
        return self.state.read_back(batch), list(self.rows)

    def _width(self) -> int:
        """Columns an eager step attends over: the widest reservation among the running rows."""
        widest = max(row.request.prompt_length + row.request.limits.max_new_tokens for row in self.rows)
        return min(self.slot_length, _round_up(widest, SLOT_LENGTH_STEP))

    def _collect(self, count: int) -> list[EngineEvent]:
        events = []
        for _ in range(max(0, count)):
            events += self._take(*self._pending.popleft())
        return events

    def _take(self, wait: Callable[[], list[int]], launched: list[_Row]) -> list[EngineEvent]:
        tokens = wait()
        events = []
        for index, row in enumerate(launched):
            if row.left:
                continue  # it left after this step was launched: the token is dropped
            events.append(self._emit(row, tokens[index]))
        return events

    def _emit(self, row: _Row, token: int) -> EngineEvent:
        row.remaining -= 1
        ended = token in self.stack.eos_ids
        finished = row.remaining <= 0 or ended
        if self.constraints is not None and row.matcher is not None and row.slot >= 0:
            self.constraints.accept(row.slot, token)
        if finished and row.slot >= 0:
            self._retire(row)
        return EngineEvent(row.request.rid, token, finished, cut_off=finished and not ended)

    # --- Prefill ---------------------------------------------------------------------------------------

    def _prefill_piece(self, *, limited: bool) -> tuple[str, list[EngineEvent]]:
        """One piece of the current newcomer's prefill: its vision tower, or a chunk of its prompt
        (all of it when ``limited`` is False)."""
        if self.prefill is None:
            self.prefill = _Prefill(self.admitted.popleft())
        prefill = self.prefill
        try:
            with torch.no_grad():
                if prefill.positions is None:
                    self._begin(prefill.row.request)
                kind = self._advance(prefill, limited=limited)
                if prefill.done < prefill.row.request.prompt_length:
                    return kind, []
                self.prefill = None
                return kind, self._place(prefill)
        except Exception as error:  # noqa: BLE001 - this request ends alone; the others go on
            self.prefill = None
            if not is_cuda_oom(error):
                logger.exception("prefill of %s failed", prefill.row.request.rid)
                return "error", [EngineEvent(prefill.row.request.rid, None, True, error=error)]
            reason = short_reason(error)
            del error, prefill.cache, prefill.embeds
            logger.warning("CUDA out of memory in a prefill: %s", reason)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return "error", [EngineEvent(prefill.row.request.rid, None, True, error=OutOfMemory())]

    def _begin(self, request: EngineRequest) -> None:
        """A request's prefill begins: its inputs go to the device (waiting ones keep theirs, an
        image's pixels are ~24 MB, in host memory), and its time limit starts."""
        request.inputs = request.inputs.to(self.stack.device)
        if request.time_limit_s is not None:
            limit = time.monotonic() + request.time_limit_s
            request.deadline = limit if request.deadline is None else min(request.deadline, limit)

    def _advance(self, prefill: _Prefill, *, limited: bool) -> str:
        inputs = prefill.row.request.inputs
        if prefill.positions is None:
            prefill.positions, prefill.delta = prompt_positions(self.model, inputs)
        if prefill.embeds is None and (limited or prefill.done):
            prefill.embeds = prompt_embeddings(self.model, inputs)
            if limited and inputs.get("pixel_values") is not None:
                return "vision"  # the tower attends over all patches: it cannot be split
        length = prefill.row.request.prompt_length
        if not limited and prefill.done == 0 and prefill.embeds is None:
            # Nothing is decoding: the whole prompt in one forward of the model, as the static
            # decoder prefills (and a lone request's first token comes as fast).
            output = self.model(**inputs, position_ids=prefill.positions, use_cache=True, logits_to_keep=1)
            prefill.cache, prefill.hidden, prefill.logits = _returned_cache(output), None, output.logits[:, -1].float()
            prefill.done = length
            return "whole"
        end = min(length, prefill.done + self.prefill_chunk) if limited else length
        output = self._language_model(
            inputs_embeds=prefill.embeds[:, prefill.done : end],
            position_ids=prefill.positions[:, :, prefill.done : end],
            use_cache=True,
            **{self._cache_keyword: prefill.cache},
        )
        prefill.cache = _returned_cache(output)
        prefill.hidden = output.last_hidden_state[:, -1:]
        kind = "whole" if prefill.done == 0 and end == length else "chunk"
        prefill.done = end
        return kind

    def _place(self, prefill: _Prefill) -> list[EngineEvent]:
        """The prompt is through: its keys and values into the next slot, its first token picked."""
        row, request, slot = prefill.row, prefill.row.request, len(self.rows)
        self._copy_prompt(prefill, slot)
        token = self._first_token(prefill, slot)
        prefill.cache = prefill.embeds = prefill.hidden = prefill.logits = request.inputs = None
        state = self.state
        state.tokens[slot] = token
        state.positions[slot] = request.prompt_length + prefill.delta  # text positions go on after the prompt's largest
        state.write_pos[slot] = request.prompt_length
        state.generated[slot] = 1
        row.slot, row.remaining = slot, request.limits.max_new_tokens
        self.rows.append(row)
        return [self._emit(row, int(token))]

    def _copy_prompt(self, prefill: _Prefill, slot: int) -> None:
        length, pool = prefill.row.request.prompt_length, self.state.pool
        for index, layer in enumerate(prefill.cache.layers):
            pool[index, 0, slot, :, :length].copy_(layer.keys[0])
            pool[index, 1, slot, :, :length].copy_(layer.values[0])

    def _first_token(self, prefill: _Prefill, slot: int) -> torch.Tensor:
        """Picked as every later token is: penalty over the prompt, min_new_tokens, the row's grammar."""
        row, request, state, stack = prefill.row, prefill.row.request, self.state, self.stack
        logits = prefill.logits if prefill.logits is not None else stack.lm_head(prefill.hidden)[:, -1].float()
        state.seen[slot].zero_()
        state.seen[slot, request.inputs["input_ids"][0]] = True
        state.min_new[slot] = request.limits.min_new_tokens
        allowed = self._grammar_mask(row, slot)
        suppress = torch.zeros(1, dtype=torch.bool, device=stack.device) < state.min_new[slot : slot + 1]
        token = stack.choose(logits, state.seen[slot : slot + 1], suppress, allowed)[0]
        state.seen[slot, token] = True
        return token

    def _grammar_mask(self, row: _Row, slot: int) -> torch.Tensor | None:
        """The row's matcher into ``slot`` (the grammars are built on the first request with one),
        and the tokens it allows first."""
        request = row.request
        if request.grammar and self.constraints is None:
            if self._grammars is None:
                raise ValueError(f"The request asks for the grammar {request.grammar!r}, but the engine has none.")
            self.grammars = self._grammars()
            self.constraints = self.grammars.rows([None] * self.slots)
        if self.constraints is None:
            return None
        row.matcher = self.grammars.matcher(request.grammar) if request.grammar else None
        self.constraints.assign(slot, row.matcher)
        if row.matcher is None:
            return None
        self.state.allowed_bits[slot].copy_(self.constraints.fill([slot])[slot])
        return self.stack.allowed(self.state.allowed_bits[slot : slot + 1])


def _returned_cache(output: Any) -> Any:
    cache = getattr(output, "cache", None)  # "past_key_values" before transformers 5.2x
    return cache if cache is not None else output.past_key_values


def prompt_embeddings(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The prompt's input embeddings with the vision tower's output at the image tokens, as the
    model's own forward builds them."""
    vlm = model.model
    input_ids = inputs["input_ids"]
    embeds = vlm.get_input_embeddings()(input_ids)
    if inputs.get("pixel_values") is None:
        return embeds
    features = vlm.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
    features = getattr(features, "pooler_output", features)  # an output object in 5.24, a tuple before
    if isinstance(features, (tuple, list)):
        features = torch.cat(list(features), dim=0)
    mask = (input_ids == vlm.config.image_token_id)[..., None].expand_as(embeds)
    return embeds.masked_scatter(mask, features.to(embeds.device, embeds.dtype))


@dataclass
class Budget:
    """How the slots were sized, for the log and the benchmark."""

    vram: int
    weights: int
    prefill_peak: int
    graphs: int
    slot_bytes: int
    slots: int
    ceiling: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        gib = lambda value: round(value / 2**30, 3)  # noqa: E731
        return {"vram_gib": gib(self.vram), "weights_gib": gib(self.weights), "prefill_peak_gib": gib(self.prefill_peak),
                "graphs_gib": gib(self.graphs), "slot_mib": round(self.slot_bytes / MIB, 1), "slots": self.slots,
                "ceiling": self.ceiling, "notes": self.notes}  # fmt: skip


# What the captured graphs of every bucket may take beside the pool (logits, scores, temporaries:
# ~30 MiB at 32 rows on Qwen2.5-VL-3B); checked after capture against what was reserved.
GRAPH_RESERVE = 256 * MIB


def build_engine(
    model: PreTrainedModel,
    *,
    ceiling: int,
    max_prompt_tokens: int,
    max_new_tokens: int,
    prefill_chunk: int = 2048,
    grammars: Callable[[], Grammars] | None = None,
    cuda_graphs: bool = False,
    constrained_graphs: bool = False,
    max_vram: int | None = None,
    kv_budget_bytes: int | None = None,
    warmup: Callable[[], dict[str, torch.Tensor]] | None = None,
) -> tuple[Engine, Budget]:
    """An engine with as many slots as the memory budget holds, at most ``ceiling``
    (DESCRIBER_BATCH_SIZE). On CUDA the budget is ``max_vram`` (MODEL_MAX_VRAM) less what the
    weights take now, the measured peak of ``warmup()``'s prefill (a largest prompt), the graphs and
    a margin; ``kv_budget_bytes`` gives the slots' bytes directly (tests, and the CPU)."""
    length = max_prompt_tokens + max_new_tokens
    budget = _first_budget(model, length, ceiling, max_vram, kv_budget_bytes, warmup, prefill_chunk)
    checked = bool(budget.vram) and kv_budget_bytes is None and model.device.type == "cuda"
    while True:
        engine = Engine(model, slots=budget.slots, slot_length=length, prefill_chunk=prefill_chunk,
                        grammars=grammars, cuda_graphs=cuda_graphs, constrained_graphs=constrained_graphs)  # fmt: skip
        engine.capture_graphs()
        fewer = _fewer_slots_if_over(budget) if checked else None
        if fewer is None:
            break
        budget.slots = fewer
        del engine
        gc.collect()  # the graphs' step closures hold the old engine in reference cycles
        torch.cuda.empty_cache()
    if checked:
        budget.graphs = max(0, torch.cuda.memory_reserved() - budget.weights - budget.slots * budget.slot_bytes)
    logger.info("Continuous batching: %s slots of %s tokens (%.0f MiB each); %s", budget.slots, length,
                budget.slot_bytes / MIB, budget.as_dict())  # fmt: skip
    return engine, budget


def _first_budget(model, length, ceiling, max_vram, kv_budget_bytes, warmup, prefill_chunk) -> Budget:
    """The slots the budget holds before the graphs are captured (refused below one)."""
    cuda = model.device.type == "cuda"
    per_slot = slot_bytes(_TextStack(model), slot_columns(length))
    budget = Budget(max_vram or 0, 0, 0, GRAPH_RESERVE if cuda else 0, per_slot, ceiling, ceiling)
    if cuda:
        torch.cuda.synchronize()
        budget.weights = torch.cuda.memory_allocated()
        budget.prefill_peak = measure_prefill_peak(model, warmup(), prefill_chunk) if warmup is not None else 0
    if kv_budget_bytes is not None:
        budget.slots = slots_for(kv_budget_bytes, per_slot, ceiling)
    elif cuda and max_vram:
        kv = kv_budget(max_vram, weights=budget.weights, prefill_peak=budget.prefill_peak, graphs=budget.graphs)
        budget.slots = slots_for(kv, per_slot, ceiling)
    if budget.slots < 1:
        raise NoSlot(budget)
    return budget


def _fewer_slots_if_over(budget: Budget) -> int | None:
    """After capture: what is reserved now (weights, pool, graphs) beside a prefill's peak and the
    margin must fit the cap; if not, the slots that would, or None when it fits (or one is left)."""
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()  # the captures' warm-up runs left blocks cached on their side streams
    over = torch.cuda.memory_reserved() + budget.prefill_peak + default_margin(budget.vram) - budget.vram
    if over <= 0 or budget.slots == 1:
        return None
    fewer = max(1, budget.slots - max(1, -(-over // budget.slot_bytes)))
    budget.notes.append(f"{budget.slots} slots and their graphs reserved {over / MIB:.0f} MiB too much; {fewer} now")
    return fewer


def measure_prefill_peak(model: PreTrainedModel, inputs: dict[str, torch.Tensor], chunk: int) -> int:
    """Bytes a prefill of ``inputs`` takes at its peak, the inputs included: the larger of the
    whole-prompt forward (nothing decoding) and the piece-by-piece one (beside decoding rows)."""
    language_model = model.model.language_model
    keyword = cache_keyword(language_model)
    inputs_bytes = sum(value.numel() * value.element_size() for value in inputs.values() if torch.is_tensor(value))
    peaks = []
    for whole in (True, False):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            positions, _ = prompt_positions(model, inputs)
            if whole:
                output = model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
            else:
                embeds, cache, length = prompt_embeddings(model, inputs), None, inputs["input_ids"].shape[1]
                for start in range(0, length, chunk):
                    output = language_model(inputs_embeds=embeds[:, start : start + chunk],
                                            position_ids=positions[:, :, start : start + chunk], use_cache=True,
                                            **{keyword: cache})  # fmt: skip
                    cache = _returned_cache(output)
                del embeds, cache
            del output
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - before)
        torch.cuda.empty_cache()
    return max(peaks) + inputs_bytes
