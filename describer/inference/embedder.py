"""CLIP alone, for management commands that embed examples outside the worker
(`import_examples --embed`, `retrieval_report --embed`): no vision-language model is loaded.

Loaded through the same code as the worker's runtime (resolve_model_sources, load_clip), so
the vectors are the ones the worker would compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PIL import Image

from describer.inference.loading import load_clip, resolve_model_sources, unit_vector
from describer.inference.tiny import is_tiny_model

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


class ClipEmbedder:
    """The embedding half of DescriberRuntime: ``embed_image`` and ``is_tiny``."""

    def __init__(self, clip: SentenceTransformer, *, source: str, is_tiny: bool) -> None:
        self.clip = clip
        self.source = source
        self.is_tiny = is_tiny

    @classmethod
    def from_settings(cls) -> ClipEmbedder:
        from django.conf import settings

        _, source = resolve_model_sources()
        return cls(load_clip(source, settings.MODEL_CACHE_DIR), source=source, is_tiny=is_tiny_model(source))

    def embed_image(self, image: Image.Image) -> list[float]:
        """L2-normalised, like DescriberRuntime.embed_image (cosine distance = 1 - dot product)."""
        vectors = self.clip.encode(
            [image.convert("RGB")], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return unit_vector(vectors[0])
