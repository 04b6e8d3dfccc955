"""Checking and normalising uploaded diagrams with Pillow.

An upload is refused with a message that says what was wrong and what is
allowed; an accepted one is decoded fully, turned upright (EXIF), converted to
8-bit RGB and re-encoded without metadata, so nothing of the original file but
its pixels is kept.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpg"}
ALLOWED_EXTENSIONS = {".png", ".jpg", ".jpeg"}
# Files this small cannot hold a diagram; refusing them early gives a clearer message.
MIN_SIDE = 16


@dataclass(frozen=True)
class NormalisedImage:
    content: bytes
    extension: str  # "png" or "jpg"
    width: int
    height: int


def allowed_text() -> str:
    return _("Allowed: PNG or JPEG, at most %(size)s and %(pixels)s megapixels.") % {
        "size": filesizeformat(settings.UPLOAD_MAX_BYTES),
        "pixels": f"{settings.UPLOAD_MAX_PIXELS / 1_000_000:g}",
    }


def refuse(problem: str) -> ValidationError:
    return ValidationError(f"{problem} {allowed_text()}")


def check_extension(filename: str) -> None:
    lowered = filename.lower()
    if not any(lowered.endswith(ext) for ext in ALLOWED_EXTENSIONS):
        raise refuse(_("“%(name)s” does not have a .png, .jpg or .jpeg extension.") % {"name": filename})


def check_size(size: int) -> None:
    if size > settings.UPLOAD_MAX_BYTES:
        raise refuse(_("The file is %(size)s, which is too large.") % {"size": filesizeformat(size)})
    if size == 0:
        raise refuse(_("The file is empty."))


def open_checked(data: bytes) -> Image.Image:
    """Identify the format and dimensions before decoding any pixels."""
    try:
        image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        raise refuse(_("The file is not a PNG or JPEG image (or it is damaged).")) from None
    except Image.DecompressionBombError:
        raise refuse(_("The image declares far too many pixels (a decompression bomb).")) from None
    width, height = image.size
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise refuse(
            _("The image is %(w)s×%(h)s pixels (%(mp)s megapixels), which is too many.")
            % {"w": width, "h": height, "mp": f"{width * height / 1_000_000:.1f}"}
        )
    if min(width, height) < MIN_SIDE:
        raise refuse(_("The image is only %(w)s×%(h)s pixels, too small to hold a diagram.") % {"w": width, "h": height})
    return image


def decode_fully(image: Image.Image) -> Image.Image:
    """Decode every pixel; truncated or corrupt data fails here, not later in the worker."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise refuse(_("The image is truncated or corrupt and cannot be read.")) from None
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Palette, alpha, greyscale, 16-bit and CMYK all become 8-bit RGB on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def normalise_upload(data: bytes, filename: str) -> NormalisedImage:
    """Validate an uploaded diagram and return it re-encoded without metadata."""
    check_extension(filename)
    check_size(len(data))
    image = open_checked(data)
    source_format = image.format
    image = decode_fully(image)
    image = ImageOps.exif_transpose(image)
    image = to_rgb(image)
    buffer = io.BytesIO()
    if source_format == "JPEG":
        image.save(buffer, format="JPEG", quality=92, optimize=True)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return NormalisedImage(buffer.getvalue(), ALLOWED_FORMATS[source_format], image.width, image.height)


def thumbnail_from_bytes(content: bytes, size: int = 320) -> bytes:
    """A small JPEG for lists; made once at upload, not per page view."""
    with Image.open(io.BytesIO(content)) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()


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
