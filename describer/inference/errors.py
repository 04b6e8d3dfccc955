"""Errors the inference layer raises, with messages a user or operator can act on.

This module imports nothing heavy: the web process catches these names too.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class: ``str(error)`` is a complete, user-readable sentence."""

    default_message = "The describer model failed."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self)


class ModelUnavailable(InferenceError):
    """The model path or hub id is missing or cannot be loaded."""

    default_message = "The model could not be loaded."

    @classmethod
    def for_source(cls, source: str, reason: str, *, setting: str = "DESCRIBER_MODEL") -> ModelUnavailable:
        reason = reason.rstrip(". ")
        return cls(
            f"Could not load the model from {source!r}: {reason}. "
            f"Set {setting} to a Hugging Face model id or a local model directory (a first start needs "
            "network access to download it), or use DESCRIBER_MODEL=tiny / `python manage.py make_tiny_models` "
            "for tiny test models."
        )


class OutOfMemory(InferenceError):
    default_message = (
        "The GPU ran out of memory while describing this image; "
        "try a smaller image or lower DESCRIBER_BATCH_SIZE / raise MODEL_MAX_VRAM."
    )


class GenerationTimeout(InferenceError):
    """Generation hit its time limit; the partial output so far may still be useful."""

    def __init__(self, limit_s: float | None = None, message: str | None = None) -> None:
        self.limit_s = limit_s
        if message is None:
            limit = f" of {limit_s:.3g} seconds" if limit_s is not None else ""
            message = (
                f"Generation stopped at the time limit{limit} (DESCRIBER_TIME_LIMIT_S); "
                "try a smaller image, or ask the administrator to raise the limit."
            )
        super().__init__(message)
