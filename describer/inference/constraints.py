"""Grammar-constrained decoding with xgrammar: the worker's side of describer/graph/grammar.py.

Each row of a batch that has a grammar gets its own `xgrammar.GrammarMatcher`. Before every
token, the matchers fill one bitmask of allowed tokens (32 tokens to an int32, one row per batch
row) on the host; the decoder copies it to the device and masks the logits with it, and after
the token is picked each matcher accepts its row's token. Rows without a grammar keep an
all-ones row and cost no matcher work; a batch without any grammar never builds this object.

Labels have no length bound in the grammars (describer/graph/grammar.py says why), so a row
whose current line has grown past LONG_LINE_CHARS is made to end it: of the tokens its grammar
allows, only those holding a line break stay, or where there are none (inside a quoted Mermaid
label) those holding a quote. A model looping inside a label then moves on, and the answer keeps its structure within
its token budget.

The grammars compile in about a second each against a 150k-token vocabulary, so the worker
compiles all of them at start, in parallel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import xgrammar

from describer.graph.grammar import description_grammar, mermaid_grammar

logger = logging.getLogger("describer.inference")

DESCRIPTION = "description"
MERMAID = "mermaid"
# Longer than any line of a real answer (a step with its participant, a Mermaid edge with two
# labelled nodes): past it the line is made to end.
LONG_LINE_CHARS = 240
# Every grammar a job can ask for (describing.Describe.grammar, drawing.Draw.grammar).
ALL_GRAMMARS = ("description:en", "description:ru", "description:", MERMAID)


def grammar_source(name: str) -> str:
    """The EBNF of a grammar name: "mermaid", or "description:<language>" ("description:" for
    either language)."""
    kind, _, language = name.partition(":")
    if kind == DESCRIPTION:
        return description_grammar(language)
    if kind == MERMAID and not language:
        return mermaid_grammar()
    raise ValueError(f"Unknown grammar {name!r}: expected 'mermaid' or 'description:<language>'.")


class Grammars:
    """The compiled grammars for one model's tokenizer and vocabulary."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_token_ids: Iterable[int]) -> None:
        self.info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self.lines = _TokenLines(self.info.decoded_vocab, vocab_size)
        self._compiler = xgrammar.GrammarCompiler(self.info)
        self._compiled: dict[str, xgrammar.CompiledGrammar] = {}
        self._batch_matcher = xgrammar.BatchGrammarMatcher()

    def compiled(self, name: str) -> xgrammar.CompiledGrammar:
        if name not in self._compiled:
            self._compiled[name] = self._compiler.compile_grammar(grammar_source(name))
        return self._compiled[name]

    def compile_all(self, names: Sequence[str] = ALL_GRAMMARS) -> float:
        """Compile every grammar now, in parallel; the seconds it took."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            compiled = list(pool.map(lambda name: self._compiler.compile_grammar(grammar_source(name)), names))
        self._compiled.update(zip(names, compiled))
        seconds = time.monotonic() - started
        logger.info("Grammars for constrained decoding ready in %.1f s (%s).", seconds, ", ".join(names))
        return seconds

    def matcher(self, name: str) -> xgrammar.GrammarMatcher:
        return xgrammar.GrammarMatcher(self.compiled(name))

    def rows(self, names: Sequence[str | None]) -> RowConstraints:
        """The matchers of a batch: one grammar name or None per row. (The runtime asks only when
        some row has a grammar.)"""
        matchers = [self.matcher(name) if name else None for name in names]
        return RowConstraints(matchers, self.lines, self._batch_matcher)

    def logits_processor(self, name: str) -> Any:
        """For transformers' generate (the fallback when the fast decoder cannot run)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(name))


class RowConstraints:
    """The matchers of one batch and the host-side bitmask they fill.

    `bitmask` is pinned on CUDA hosts so that its copy to the device overlaps the model's step.
    Rows without a matcher stay all ones (every token allowed) from the start.
    """

    def __init__(
        self,
        matchers: list[xgrammar.GrammarMatcher | None],
        lines: _TokenLines,
        batch_matcher: xgrammar.BatchGrammarMatcher | None = None,
    ) -> None:
        self.matchers = matchers
        self.lines = lines
        self.line_length = [0] * len(matchers)  # characters since the row's last line break
        words = xgrammar.get_bitmask_shape(len(matchers), lines.vocab_size)[1]
        self.bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32, pin_memory=torch.cuda.is_available())
        self._batch_matcher = batch_matcher or xgrammar.BatchGrammarMatcher()
        self.rejected: set[int] = set()  # rows whose token the grammar did not take (never expected)
        # Host time spent in the matchers (bitmask filling, accepting tokens), for benchmarks.
        self.fill_s = self.accept_s = 0.0
        self.fills = 0

    # The continuous-batching engine keys rows by slot: a slot gets its row's matcher at
    # admission, and when the last row is compacted into a freed slot, its matcher moves too.
    def assign(self, row: int, matcher: xgrammar.GrammarMatcher | None) -> None:
        self.clear(row)
        self.matchers[row] = matcher

    def move(self, source: int, target: int) -> None:
        self.matchers[target], self.line_length[target] = self.matchers[source], self.line_length[source]
        self.bitmask[target].copy_(self.bitmask[source])
        if source in self.rejected:
            self.rejected.add(target)
        else:
            self.rejected.discard(target)
        self.clear(source)

    def clear(self, row: int) -> None:
        self.matchers[row], self.line_length[row] = None, 0
        self.rejected.discard(row)
        self.bitmask[row].fill_(-1)

    def constrained(self, row: int) -> bool:
        return row < len(self.matchers) and self.matchers[row] is not None and row not in self.rejected

    def fill(self, rows: Iterable[int]) -> torch.Tensor:
        """Fill the bitmask rows of `rows` (the constrained ones among them) for their next token."""
        started = time.perf_counter()
        rows = [row for row in rows if self.constrained(row)]
        if len(rows) == 1:
            self.matchers[rows[0]].fill_next_token_bitmask(self.bitmask, rows[0])
        elif rows:
            self._batch_matcher.batch_fill_next_token_bitmask(
                [self.matchers[row] for row in rows], self.bitmask, rows
            )
        for row in rows:
            if self.line_length[row] >= LONG_LINE_CHARS:
                self._end_line(row)
        self.fill_s += time.perf_counter() - started
        self.fills += 1
        return self.bitmask

    def _end_line(self, row: int) -> None:
        for closers in (self.lines.line_breaks, self.lines.quotes):
            closing = self.bitmask[row] & closers
            if closing.any():
                self.bitmask[row] = closing
                return

    def accept(self, row: int, token: int) -> None:
        """The row's matcher takes its token. A token the grammar refuses cannot be picked under
        its mask; if it happens anyway the row goes on unconstrained rather than fail the job."""
        if not self.constrained(row):
            return
        started = time.perf_counter()
        self._accept(row, token)
        self.accept_s += time.perf_counter() - started

    def _accept(self, row: int, token: int) -> None:
        self.line_length[row] = self.lines.after(self.line_length[row], token)
        matcher = self.matchers[row]
        if matcher.is_terminated():
            return
        if not matcher.accept_token(token):
            logger.warning("Row %s: the grammar refused token %s; the row goes on unconstrained.", row, token)
            self.rejected.add(row)
            self.bitmask[row].fill_(-1)


class _TokenLines:
    """What each token does to the length of the current line, and the tokens holding a line
    break and those holding a quote, as bitmask rows."""

    def __init__(self, decoded_vocab: list[bytes], vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.tail = [0] * vocab_size  # characters after the token's last line break, or all of them
        self.breaks = [False] * vocab_size
        quotes = []
        for token, text in enumerate(decoded_vocab[:vocab_size]):
            newline = text.rfind(b"\n")
            self.breaks[token] = newline >= 0
            # UTF-8: count the bytes that start a character.
            self.tail[token] = sum((byte & 0xC0) != 0x80 for byte in text[newline + 1 :])
            if b'"' in text:
                quotes.append(token)
        self.line_breaks = self._bitmask([token for token, breaks in enumerate(self.breaks) if breaks])
        self.quotes = self._bitmask(quotes)

    def _bitmask(self, tokens: list[int]) -> torch.Tensor:
        bits = torch.zeros(xgrammar.get_bitmask_shape(1, self.vocab_size)[1] * 32, dtype=torch.bool)
        bits[tokens] = True
        weights = torch.tensor([1 << bit for bit in range(31)] + [-(1 << 31)], dtype=torch.int64)
        return (bits.view(-1, 32).long() * weights).sum(dim=1).to(torch.int32)

    def after(self, length: int, token: int) -> int:
        if not 0 <= token < self.vocab_size:
            return length
        return self.tail[token] if self.breaks[token] else length + self.tail[token]
