"""Grammar-constrained decoding with xgrammar: the worker's side of describer/graph/grammar.py.

Each row of a batch that has a grammar gets its own `xgrammar.GrammarMatcher`. Before every
token, the matchers fill one bitmask of allowed tokens (32 tokens to an int32, one row per batch
row) on the host; the decoder copies it to the device and masks the logits with it, and after
the token is picked each matcher accepts its row's token. Rows without a grammar keep an
all-ones row and cost no matcher work; a batch without any grammar never builds this object.

Grammars are compiled once per worker (a few tens of milliseconds each) and cached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import xgrammar

from describer.graph.grammar import description_grammar, mermaid_grammar

logger = logging.getLogger("describer.inference")

DESCRIPTION = "description"
MERMAID = "mermaid"


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
        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_token_ids)
        )
        self.vocab_size = vocab_size
        self._compiler = xgrammar.GrammarCompiler(info)
        self._compiled: dict[str, xgrammar.CompiledGrammar] = {}

    def compiled(self, name: str) -> xgrammar.CompiledGrammar:
        if name not in self._compiled:
            self._compiled[name] = self._compiler.compile_grammar(grammar_source(name))
        return self._compiled[name]

    def matcher(self, name: str) -> xgrammar.GrammarMatcher:
        return xgrammar.GrammarMatcher(self.compiled(name))

    def rows(self, names: Sequence[str | None]) -> RowConstraints | None:
        """The matchers of a batch (one name or None per row); None when no row has a grammar."""
        if not any(names):
            return None
        return RowConstraints([self.matcher(name) if name else None for name in names], self.vocab_size)

    def logits_processor(self, name: str) -> Any:
        """For transformers' generate (the fallback when the fast decoder cannot run)."""
        from xgrammar.contrib.hf import LogitsProcessor

        return LogitsProcessor(self.compiled(name))


class RowConstraints:
    """The matchers of one batch and the host-side bitmask they fill.

    `bitmask` is pinned on CUDA hosts so that its copy to the device overlaps the model's step.
    Rows without a matcher stay all ones (every token allowed) from the start.
    """

    def __init__(self, matchers: list[xgrammar.GrammarMatcher | None], vocab_size: int) -> None:
        self.matchers = matchers
        words = xgrammar.get_bitmask_shape(len(matchers), vocab_size)[1]
        self.bitmask = torch.full((len(matchers), words), -1, dtype=torch.int32, pin_memory=torch.cuda.is_available())
        self._batch_matcher = xgrammar.BatchGrammarMatcher()
        self.rejected: set[int] = set()  # rows whose token the grammar did not take (never expected)

    def constrained(self, row: int) -> bool:
        return row < len(self.matchers) and self.matchers[row] is not None and row not in self.rejected

    def fill(self, rows: Iterable[int]) -> torch.Tensor:
        """Fill the bitmask rows of `rows` (the constrained ones among them) for their next token."""
        rows = [row for row in rows if self.constrained(row)]
        if len(rows) == 1:
            self.matchers[rows[0]].fill_next_token_bitmask(self.bitmask, rows[0])
        elif rows:
            self._batch_matcher.batch_fill_next_token_bitmask(
                [self.matchers[row] for row in rows], self.bitmask, rows
            )
        return self.bitmask

    def accept(self, row: int, token: int) -> None:
        """The row's matcher takes its token. A token the grammar refuses cannot be picked under
        its mask; if it happens anyway the row goes on unconstrained rather than fail the job."""
        if not self.constrained(row):
            return
        matcher = self.matchers[row]
        if matcher.is_terminated():
            return
        if not matcher.accept_token(token):
            logger.warning("Row %s: the grammar refused token %s; the row goes on unconstrained.", row, token)
            self.rejected.add(row)
            self.bitmask[row].fill_(-1)
