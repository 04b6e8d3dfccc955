"""What the model sees of an upload. No Django here: the training code imports it on the GPU
machine, where Django is not installed (bench/finetune_gpu.py)."""

from __future__ import annotations

from PIL import Image


def load_for_model(path, max_pixels: int) -> Image.Image:
    """The stored upload as RGB, scaled down (never up) to at most `max_pixels`."""
    with Image.open(path) as stored:
        image = stored.convert("RGB")
    pixels = image.width * image.height
    if pixels > max_pixels:
        scale = (max_pixels / pixels) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image
