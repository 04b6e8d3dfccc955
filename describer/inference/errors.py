"""Errors the inference layer raises, with messages a user or operator can act on.

This module imports nothing heavy: the web process catches these names too.
Messages are lazy: `str(error)` renders them in the active language, so the
worker can write each job's error in the language its user works in.
"""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _


class InferenceError(Exception):
    """Base class: ``str(error)`` is a complete, user-readable sentence."""

    default_message = _("The describer model failed.")

    def __init__(self, message: str | None = None, **params) -> None:
        self.template = message or self.default_message
        self.params = params
        super().__init__(self.template)

    def __str__(self) -> str:
        text = str(self.template)
        return text % self.params if self.params else text

    @property
    def message(self) -> str:
        return str(self)


class ModelUnavailable(InferenceError):
    """The model path or hub id is missing or cannot be loaded."""

    default_message = _("The model could not be loaded.")

    @classmethod
    def for_source(cls, source: str, reason: str, *, setting: str = "DESCRIBER_MODEL") -> ModelUnavailable:
        return cls(
            _(
                "Could not load the model from %(source)r: %(reason)s. Set %(setting)s to a Hugging Face model id "
                "or a local model directory (a first start needs network access to download it), or use "
                "DESCRIBER_MODEL=tiny / `python manage.py make_tiny_models` for tiny test models."
            ),
            source=source,
            reason=reason.rstrip(". "),
            setting=setting,
        )


class OutOfMemory(InferenceError):
    default_message = _(
        "The GPU ran out of memory while describing this image; "
        "try a smaller image or lower DESCRIBER_BATCH_SIZE / raise MODEL_MAX_VRAM."
    )


class GenerationTimeout(InferenceError):
    """Generation hit its time limit; the partial output so far may still be useful."""

    def __init__(self, limit_s: float | None = None, message: str | None = None) -> None:
        self.limit_s = limit_s
        if message is not None:
            super().__init__(message)
            return
        super().__init__(
            _(
                "Generation stopped at the time limit (%(limit)s s, DESCRIBER_TIME_LIMIT_S); "
                "try a smaller image, or ask the administrator to raise the limit."
            ),
            limit=f"{limit_s:.3g}" if limit_s is not None else "?",
        )


class PromptTooLong(InferenceError):
    """A prompt and its answer longer than the continuous-batching engine's slots hold."""

    def __init__(self, *, tokens: int, new: int, slot: int) -> None:
        super().__init__(
            _(
                "The prompt (%(tokens)s tokens) and %(new)s new tokens do not fit the decoder's slots of %(slot)s "
                "tokens (DESCRIBER_MAX_PROMPT_TOKENS + DESCRIBER_MAX_NEW_TOKENS); try a smaller image, or ask "
                "the administrator to raise DESCRIBER_MAX_PROMPT_TOKENS."
            ),
            tokens=tokens,
            new=new,
            slot=slot,
        )


class NoSlot(InferenceError):
    """MODEL_MAX_VRAM leaves no room for even one decoding slot beside the weights."""

    def __init__(self, budget) -> None:
        gib = lambda value: f"{value / 2**30:.2f} GiB"  # noqa: E731
        super().__init__(
            _(
                "MODEL_MAX_VRAM (%(vram)s) holds no decoding slot: the weights take %(weights)s, a largest "
                "prefill %(prefill)s, the decode graphs %(graphs)s, and one slot needs %(slot)s. Raise "
                "MODEL_MAX_VRAM, or lower DESCRIBER_MAX_PROMPT_TOKENS or DESCRIBER_MAX_NEW_TOKENS."
            ),
            vram=gib(budget.vram),
            weights=gib(budget.weights),
            prefill=gib(budget.prefill_peak),
            graphs=gib(budget.graphs),
            slot=gib(budget.slot_bytes),
        )
        self.budget = budget


class EngineStopped(InferenceError):
    default_message = _(
        "The worker unloaded the model (an adapter switch, or it is stopping) while this job was on it; "
        "retry the conversion."
    )
