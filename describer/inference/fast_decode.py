"""Greedy decoding for Qwen2.5-VL with a static KV cache, the decode step captured in one CUDA graph.

Why: with plain ``generate`` a token costs ~28 ms in nf4 on an H100/H200, nearly all of it Python
and kernel-launch overhead; reading the weights takes well under a millisecond. Here the prompt goes
through the model's own forward (vision tower, 3-D M-RoPE positions), its keys and values are copied
into preallocated buffers, and every further token is one replay of a CUDA graph that runs the 36
layers, picks the token (greedy, with the model's repetition penalty and ``min_new_tokens``) and
feeds it back to itself. The host only reads the tokens back, one step behind, to stream them.

Rows of a batch are prefilled one at a time (so no padding inside a prompt), placed right-aligned in
the cache and decoded together. A row attends only to its own prompt and tokens, and after the
prompt its positions are text positions (cache length + the row's M-RoPE delta, the same on all three
sections), exactly as ``generate`` continues them: batching does not change what a request gets, up
to the rounding of batched matrix products.

With grammar constraints (describer/inference/constraints.py) the step is split in two graphs:
the model's forward (logits) and the pick (mask, penalties, argmax). The host launches the
forward, and while the GPU runs it, the rows' grammar matchers take the previous tokens and fill
the next bitmask, which is copied to the device before the pick runs. The host/device round trip
is then one read-back of the tokens per step, overlapped with the forward; rows without a
grammar get an all-ones mask row, and a batch without grammars keeps the single graph.

Without CUDA (or when capture fails) the same step runs eagerly; the tests run it on the CPU.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence, Set
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb

from describer.inference.loading import is_cuda_oom, short_reason

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from describer.inference.constraints import RowConstraints

logger = logging.getLogger("describer.inference")

# Cache lengths are rounded up to this, and batches to a power of two, so that a few captured graphs
# serve all requests. Each cached graph keeps its KV buffers: 36 layers x 2 x 2 heads x 128 x bf16 =
# 36 KiB a token, so (16 rows, 4096 tokens) holds 2.3 GiB.
LENGTH_STEP = 1024
MAX_CACHED_GRAPHS = 2


@dataclass(frozen=True)
class RowLimits:
    max_new_tokens: int
    min_new_tokens: int = 0


@dataclass(frozen=True)
class DecodedToken:
    row: int
    token: int
    finished: bool  # the row's last token: an end-of-sequence token or its max_new_tokens-th
    cut_off: bool = False  # finished by max_new_tokens, not by an end-of-sequence token


def unsupported_reason(model: PreTrainedModel) -> str | None:
    """Why this model cannot use the fast decoder, or None when it can."""
    language_model = getattr(getattr(model, "model", None), "language_model", None)
    if language_model is None or not hasattr(model, "lm_head"):
        return "the model is not a Qwen2.5-VL model"
    devices = {str(parameter.device) for parameter in model.parameters()}
    if len(devices) != 1:
        return f"the weights are spread over {', '.join(sorted(devices))} (MODEL_MAX_VRAM offloads layers)"
    if getattr(language_model.config, "use_sliding_window", False):
        return "the model uses sliding-window attention"
    return None


class _TextStack:
    """The language model's modules and the generation settings the decode step needs."""

    def __init__(self, model: PreTrainedModel) -> None:
        language_model = model.model.language_model
        self.embed = language_model.embed_tokens
        self.layers = list(language_model.layers)
        self.norm = language_model.norm
        self.rotary = language_model.rotary_emb
        self.lm_head = model.lm_head
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.kv_heads = attention.num_key_value_heads
        self.groups = attention.num_key_value_groups
        self.scaling = attention.scaling
        self.vocab = language_model.config.vocab_size
        self.device = self.embed.weight.device
        self.dtype = self.embed.weight.dtype
        generation = model.generation_config
        eos = generation.eos_token_id
        self.eos_ids = frozenset([eos] if isinstance(eos, int) else (eos or []))
        self.eos_mask = torch.zeros(self.vocab, dtype=torch.bool, device=self.device)
        self.eos_mask[list(self.eos_ids)] = True
        self.penalty = float(generation.repetition_penalty or 1.0)
        self.scores_in_float32 = _bmm_to_float32_works(self.device, self.dtype)
        # Token t's bit in a grammar bitmask: bit t % 32 of int32 word t // 32 (xgrammar's layout).
        token_ids = torch.arange(self.vocab, device=self.device)
        self.bit_word = token_ids // 32
        self.bit_shift = (token_ids % 32).to(torch.int32)

    def allowed(self, bitmask: torch.Tensor) -> torch.Tensor:
        """int32 bitmask [n, ceil(vocab / 32)] on the device -> bool [n, vocab]."""
        return ((bitmask[:, self.bit_word] >> self.bit_shift) & 1).bool()

    def attention_scores(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """query [n, G, D] x keys [n, L, D] -> float32 scores [n, G, L] (bf16 in, fp32 accumulated and out)."""
        if self.scores_in_float32:
            return torch.bmm(query, keys.transpose(1, 2), out_dtype=torch.float32)
        return torch.bmm(query.float(), keys.float().transpose(1, 2))

    def choose(
        self, logits: torch.Tensor, seen: torch.Tensor, suppress_eos: torch.Tensor, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Greedy choice after the processors ``generate`` applies for this model (float32 logits),
        among the ``allowed`` tokens when a grammar constrains the row."""
        if self.penalty != 1.0:
            penalised = torch.where(logits < 0, logits * self.penalty, logits / self.penalty)
            logits = torch.where(seen, penalised, logits)
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
            # The grammar wins over min_new_tokens: where only an end is allowed, the row ends.
            suppress_eos = suppress_eos & (allowed & ~self.eos_mask).any(dim=-1)
        # min_new_tokens: no end of sequence before that many tokens.
        logits = logits.masked_fill(self.eos_mask & suppress_eos[:, None], float("-inf"))
        return logits.argmax(dim=-1)


class _DecodeState:
    """Static buffers for one (batch, cache length) shape, and the decode step over them.

    Every tensor the step reads or writes lives here and is updated in place, so a CUDA graph
    captured once replays correctly for every request that fits the shape.
    """

    def __init__(self, stack: _TextStack, batch: int, length: int) -> None:
        self.stack = stack
        device = stack.device
        shape = (batch, stack.kv_heads, length, stack.head_dim)
        self.keys = [torch.zeros(shape, dtype=stack.dtype, device=device) for _ in stack.layers]
        self.values = [torch.zeros(shape, dtype=stack.dtype, device=device) for _ in stack.layers]
        self.kv_valid = torch.zeros(batch, length, dtype=torch.bool, device=device)
        self.seen = torch.zeros(batch, stack.vocab, dtype=torch.bool, device=device)
        self.logits = torch.zeros(batch, stack.vocab, dtype=torch.float32, device=device)
        long = {"dtype": torch.long, "device": device}
        self.tokens = torch.zeros(batch, **long)  # the step's input, then its output
        self.positions = torch.zeros(batch, **long)  # M-RoPE text position of the input token
        self.min_new = torch.zeros(batch, **long)
        words = -(-stack.vocab // 32)
        self.allowed_bits = torch.full((batch, words), -1, dtype=torch.int32, device=device)  # grammar masks
        self.slot = torch.zeros(1, **long)  # cache index the input token is written to
        self.generated = torch.zeros(1, **long)  # tokens generated before the step's output
        pinned = device.type == "cuda"
        self.host = [torch.zeros(batch, dtype=torch.long, pin_memory=pinned) for _ in range(2)]
        self.events = [torch.cuda.Event() for _ in range(2)] if pinned else []
        self.graph: torch.cuda.CUDAGraph | None = None
        # The constrained step: forward, then pick (captured on first use).
        self.split_graphs: tuple[torch.cuda.CUDAGraph, torch.cuda.CUDAGraph] | None = None
        self.batch, self.length = batch, length

    def reset(self, limits: Sequence[RowLimits]) -> None:
        for tensor in (self.kv_valid, self.seen, self.tokens, self.positions, self.slot, self.generated):
            tensor.zero_()
        self.min_new.zero_()
        self.min_new[: len(limits)] = torch.tensor([limit.min_new_tokens for limit in limits])
        self.allowed_bits.fill_(-1)

    def step(self) -> None:
        self.forward()
        self.pick(constrained=False)

    def forward(self) -> None:
        """The model on the rows' input tokens: their next logits into ``self.logits``."""
        stack, batch = self.stack, self.batch
        hidden = stack.embed(self.tokens[:, None])
        cos, sin = stack.rotary(hidden, self.positions.view(1, batch, 1).expand(3, batch, 1))
        self.kv_valid.index_fill_(1, self.slot, True)
        mask = self.kv_valid[:, None, None, :]  # [batch, 1, 1, length]: a row's own prompt and tokens
        for layer, keys, values in zip(stack.layers, self.keys, self.values):
            attended = self._attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, keys, values, mask)
            hidden = hidden + attended
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        self.logits.copy_(stack.lm_head(stack.norm(hidden))[:, 0])

    def pick(self, *, constrained: bool) -> None:
        """The next token of every row from ``self.logits`` (masked by ``allowed_bits`` when
        constrained), fed back as the next input."""
        stack = self.stack
        allowed = stack.allowed(self.allowed_bits) if constrained else None
        chosen = stack.choose(self.logits, self.seen, self.generated < self.min_new, allowed)
        self.seen.scatter_(1, chosen[:, None], True)
        self.tokens.copy_(chosen)
        self.positions.add_(1)
        self.slot.add_(1)
        self.generated.add_(1)

    def _attention(self, attention: Any, hidden, cos, sin, keys, values, mask) -> torch.Tensor:
        stack, batch = self.stack, self.batch
        query = attention.q_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        key = attention.k_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        value = attention.v_proj(hidden).view(batch, 1, -1, stack.head_dim).transpose(1, 2)
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        keys.index_copy_(2, self.slot, key)
        values.index_copy_(2, self.slot, value)
        # Attention for one token as two batched matrix products: the query heads of a KV head form
        # the rows, so the cache is read once, never repeated per query head, and the products split
        # over the cache length. (SDPA's fused kernels run one block per head here: 5.8 ms a step of
        # 36 layers on an H100, against well under 1 ms this way.) Scores and softmax in float32,
        # as the fused kernels keep them.
        rows = batch * stack.kv_heads
        query = query.reshape(rows, stack.groups, stack.head_dim)
        scores = stack.attention_scores(query, keys.view(rows, self.length, stack.head_dim))
        scores = scores.view(batch, stack.kv_heads, stack.groups, self.length) * stack.scaling
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1).to(values.dtype)
        out = torch.matmul(weights, values)  # [batch, kv_heads, groups, head_dim]
        return attention.o_proj(out.reshape(batch, 1, -1))

    def capture(self) -> None:
        """Warm up on a side stream (lazy initialisation stays out of the graph), then capture."""
        self.graph = _captured(self.step)

    def capture_split(self) -> None:
        """The constrained step's two graphs. They share the memory pool of the whole step's graph:
        no two of the three ever run at once, and their temporaries are dead when each ends."""
        forward = _captured(self.forward, pool=self.graph.pool() if self.graph is not None else None)
        self.split_graphs = (forward, _captured(lambda: self.pick(constrained=True), pool=forward.pool()))

    def run(self) -> None:
        if self.graph is not None:
            self.graph.replay()
        else:
            self.step()

    def run_forward(self) -> None:
        if self.split_graphs is not None:
            self.split_graphs[0].replay()
        else:
            self.forward()

    def run_pick(self) -> None:
        if self.split_graphs is not None:
            self.split_graphs[1].replay()
        else:
            self.pick(constrained=True)

    def read_back(self, index: int) -> Callable[[], list[int]]:
        """Start copying the step's tokens to the host; the returned function waits for them."""
        if not self.events:
            tokens = self.tokens.tolist()
            return lambda: tokens
        host, event = self.host[index % 2], self.events[index % 2]
        host.copy_(self.tokens, non_blocking=True)
        event.record()

        def wait() -> list[int]:
            event.synchronize()
            return host.tolist()

        return wait


def _captured(step: Callable[[], None], pool: Any = None) -> torch.cuda.CUDAGraph:
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: the worker's other threads may touch CUDA while this one captures.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        step()
    return graph


class FastDecoder:
    """Greedy decoding of one or more prompts; see the module docstring.

    ``cuda_graphs`` replays the decode step as a CUDA graph (CUDA only); if a capture fails for a
    reason other than memory, the decoder logs it and runs the step eagerly from then on.
    """

    def __init__(self, model: PreTrainedModel, *, cuda_graphs: bool) -> None:
        self.model = model
        self.stack = _TextStack(model)
        self.cuda_graphs = cuda_graphs and self.stack.device.type == "cuda"
        self._states: OrderedDict[tuple[int, int], _DecodeState] = OrderedDict()

    def release(self) -> None:
        """Drop the cached buffers and graphs (after running out of memory, say)."""
        self._states.clear()

    def decode(
        self,
        prompts: Sequence[dict[str, torch.Tensor]],
        limits: Sequence[RowLimits],
        *,
        should_stop: Callable[[], bool] = lambda: False,
        observe: Callable[[torch.Tensor], None] | None = None,
        dropped: Set[int] = frozenset(),
        constraints: RowConstraints | None = None,
    ) -> Iterator[list[DecodedToken]]:
        """Yield, step by step, the new token of every row still running.

        ``prompts``: one processor output per row (batch of one, on the model's device). The first
        token of a row is yielded right after its own prefill. ``observe``, for checks and benchmarks,
        is called with the rows' raw float32 logits for the first tokens and after every step (this
        turns off the one-step read-back lag). Rows whose index is in ``dropped`` (the caller adds
        them while decoding: a cancelled job) are skipped from the next prefill or step on; their
        slots keep computing in the fixed-size graph but nothing more is yielded for them.
        ``constraints`` (describer/inference/constraints.py) holds the grammar matchers of the
        rows that have one; every token of such a row, the first included, is one its grammar allows.
        """
        if len(prompts) != len(limits) or not prompts:
            raise ValueError("decode() needs one RowLimits per prompt, and at least one prompt.")
        with torch.no_grad():
            prompt_length = max(inputs["input_ids"].shape[1] for inputs in prompts)
            longest = max(limit.max_new_tokens for limit in limits)
            state = self._state(
                _batch_bucket(len(prompts)), _round_up(prompt_length + longest, LENGTH_STEP), split=constraints is not None
            )
            state.reset(limits)
            remaining: dict[int, int] = {}
            for row, (inputs, limit) in enumerate(zip(prompts, limits)):
                if should_stop():
                    return
                if row in dropped:
                    continue
                token = self._prefill(state, row, inputs, prompt_length, constraints)
                ended = token in self.stack.eos_ids
                finished = limit.max_new_tokens <= 1 or ended
                if not finished:
                    remaining[row] = limit.max_new_tokens - 1
                yield [DecodedToken(row, token, finished, cut_off=finished and not ended)]
            state.slot.fill_(prompt_length)
            state.generated.fill_(1)
            if observe is not None:
                observe(state.logits[: len(prompts)].clone())
            if constraints is None:
                yield from self._decode_steps(state, remaining, should_stop, observe, dropped)
            else:
                yield from self._decode_constrained(state, remaining, should_stop, observe, dropped, constraints)

    def _state(self, batch: int, length: int, *, split: bool = False) -> _DecodeState:
        key = (batch, length)
        state = self._states.pop(key, None)
        if state is None:
            while len(self._states) >= MAX_CACHED_GRAPHS:
                self._states.popitem(last=False)
            state = _DecodeState(self.stack, batch, length)
        # Captured before the state is reset for a request: capturing runs the step.
        if self.cuda_graphs and state.graph is None:
            self._capture(state, state.capture)
        if self.cuda_graphs and split and state.split_graphs is None:
            self._capture(state, state.capture_split)
        self._states[key] = state
        return state

    def _capture(self, state: _DecodeState, capture: Callable[[], None]) -> None:
        try:
            capture()
        except Exception as error:
            if is_cuda_oom(error):
                raise
            logger.warning("Capturing the decode step as a CUDA graph failed (%s); decoding eagerly.", short_reason(error))
            self.cuda_graphs = False
            state.graph = state.split_graphs = None

    def _prefill(
        self,
        state: _DecodeState,
        row: int,
        inputs: dict[str, torch.Tensor],
        prompt_length: int,
        constraints: RowConstraints | None = None,
    ) -> int:
        """Run one row's prompt through the model, copy its keys and values right-aligned into the
        cache, and return its first token (one its grammar allows, if it has one)."""
        input_ids = inputs["input_ids"]
        length = input_ids.shape[1]
        positions, delta = self._prompt_positions(inputs)
        output = self.model(**inputs, position_ids=positions, use_cache=True, logits_to_keep=1)
        cache = getattr(output, "cache", None)
        if cache is None:
            cache = output.past_key_values
        start = prompt_length - length
        for index, layer in enumerate(cache.layers):
            state.keys[index][row, :, start:prompt_length].copy_(layer.keys[0])
            state.values[index][row, :, start:prompt_length].copy_(layer.values[0])
        state.kv_valid[row, start:prompt_length] = True
        state.seen[row, input_ids[0]] = True
        logits = output.logits[:, -1].float()
        del output, cache
        state.logits[row] = logits[0]
        allowed = None
        if constraints is not None and constraints.constrained(row):
            state.allowed_bits[row].copy_(constraints.fill([row])[row])
            allowed = self.stack.allowed(state.allowed_bits[row : row + 1])
        suppress = state.generated < state.min_new[row : row + 1]
        token = self.stack.choose(logits, state.seen[row : row + 1], suppress, allowed)
        if constraints is not None:
            constraints.accept(row, int(token[0]))
        state.seen[row, token] = True
        state.tokens[row] = token[0]
        # The next text position: after the prompt's largest M-RoPE position, on all three sections.
        state.positions[row] = length + delta
        return int(token[0])

    def _prompt_positions(self, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | int]:
        return prompt_positions(self.model, inputs)

    def _decode_steps(
        self,
        state: _DecodeState,
        remaining: dict[int, int],
        should_stop: Callable[[], bool],
        observe: Callable[[torch.Tensor], None] | None,
        dropped: Set[int] = frozenset(),
    ) -> Iterator[list[DecodedToken]]:
        # With a graph the host reads step k's tokens while step k+1 runs on the GPU; a row's end is
        # then seen one step late, and that extra step's tokens are dropped.
        depth = 2 if state.graph is not None and observe is None else 1
        budget = max(remaining.values(), default=0)
        launched = 0
        in_flight: deque[Callable[[], list[int]]] = deque()
        while _still_running(remaining, dropped, should_stop):
            if launched < budget:
                state.run()
                in_flight.append(state.read_back(launched))
                launched += 1
            if not in_flight:
                return
            if len(in_flight) >= depth or launched >= budget:
                tokens = in_flight.popleft()()
                if observe is not None:
                    observe(state.logits[: len(tokens)].clone())
                yield self._take(tokens, remaining)

    def _decode_constrained(
        self,
        state: _DecodeState,
        remaining: dict[int, int],
        should_stop: Callable[[], bool],
        observe: Callable[[torch.Tensor], None] | None,
        dropped: Set[int],
        constraints: RowConstraints,
    ) -> Iterator[list[DecodedToken]]:
        """One step at a time: the forward is launched first, the rows' bitmask filled on the host
        while it runs, copied, and the pick launched; the tokens are read back at once (the next
        mask needs them) and the next forward launched before the matchers take them."""
        if remaining:
            state.run_forward()
        while _still_running(remaining, dropped, should_stop):
            bitmask = constraints.fill(remaining)
            state.allowed_bits[: len(bitmask)].copy_(bitmask, non_blocking=True)
            state.run_pick()
            tokens = state.read_back(0)()
            if observe is not None:
                observe(state.logits[: len(tokens)].clone())
            decoded = self._take(tokens, remaining)
            if remaining:
                state.run_forward()  # the GPU's next step runs while the matchers take these tokens
            for item in decoded:
                constraints.accept(item.row, item.token)
            yield decoded

    def _take(self, tokens: list[int], remaining: dict[int, int]) -> list[DecodedToken]:
        decoded = []
        for row in list(remaining):
            token = tokens[row]
            remaining[row] -= 1
            ended = token in self.stack.eos_ids
            finished = remaining[row] == 0 or ended
            if finished:
                del remaining[row]
            decoded.append(DecodedToken(row, token, finished, cut_off=finished and not ended))
        return decoded


def prompt_positions(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | int]:
    """3-D M-RoPE positions of a prompt, and the offset of text positions after it (as generate)."""
    input_ids = inputs["input_ids"]
    if inputs.get("image_grid_thw") is not None and inputs.get("mm_token_type_ids") is not None:
        positions, deltas = model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs.get("attention_mask"),
        )
        return positions, deltas[0, 0]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).view(1, 1, -1).expand(3, 1, -1)
    return positions, 0


def _still_running(remaining: dict[int, int], dropped: Set[int], should_stop: Callable[[], bool]) -> bool:
    """Whether to decode another step: rows the caller dropped leave first."""
    if should_stop():
        return False
    for row in set(dropped).intersection(remaining):  # a copy: the consumer thread adds to it
        del remaining[row]
    return bool(remaining)


def _bmm_to_float32_works(device: torch.device, dtype: torch.dtype) -> bool:
    """torch.bmm(..., out_dtype=float32) on half inputs: CUDA only, and only in recent torch."""
    if device.type != "cuda" or dtype == torch.float32:
        return False
    try:
        probe = torch.ones(1, 1, 8, dtype=dtype, device=device)
        return torch.bmm(probe, probe.transpose(1, 2), out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError):
        return False


def _batch_bucket(batch: int) -> int:
    bucket = 1
    while bucket < batch:
        bucket *= 2
    return bucket


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step
