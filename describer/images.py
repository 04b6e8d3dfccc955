"""Checking and normalising uploaded diagrams with Pillow.

An upload is refused with a message that says what was wrong and what is
allowed; an accepted one is decoded fully, turned upright (EXIF), converted to
8-bit RGB and re-encoded without metadata, so nothing of the original file but
its pixels is kept.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from decimal import Decimal
from typing import BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from PIL import Image, ImageOps, UnidentifiedImageError

from describer.model_input import load_for_model  # noqa: F401 - where the worker's code finds it

ALLOWED_FORMATS = ["PNG", "JPEG"]
# Pillow names a JPEG with extra frames (some cameras) MPO; its first frame is a plain JPEG.
EXTENSION_FOR_FORMAT = {"PNG": "png", "JPEG": "jpg", "MPO": "jpg"}
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
        "pixels": megapixels(settings.UPLOAD_MAX_PIXELS),
    }


def megapixels(pixels: int) -> str:
    """At most 3 significant digits, with the active language's decimal mark (40.5 / 40,5)."""
    return number_format(Decimal(f"{pixels / 1_000_000:.3g}"))


def refuse(problem: str) -> ValidationError:
    return ValidationError(f"{problem} {allowed_text()}")


# The problems, as functions: the upload page's script gets the same texts (placeholders as values).
def extension_problem() -> str:
    # No file name here: callers that check several files put it in front of the whole message.
    return _("The file does not have a .png, .jpg or .jpeg extension.")


def size_problem(size: str) -> str:
    return _("The file is %(size)s, which is too large.") % {"size": size}


def pixels_problem(width: int | str, height: int | str, mp: str) -> str:
    return _("The image is %(w)s×%(h)s pixels (%(mp)s megapixels), which is too many.") % {
        "w": width,
        "h": height,
        "mp": mp,
    }


def small_problem(width: int | str, height: int | str) -> str:
    return _("The image is only %(w)s×%(h)s pixels; a diagram needs at least %(min)s pixels on each side.") % {
        "w": width,
        "h": height,
        "min": MIN_SIDE,
    }


def format_problem() -> str:
    return _("The file is not a PNG or JPEG image (or it is damaged).")


def check_extension(filename: str) -> None:
    lowered = filename.lower()
    if not any(lowered.endswith(ext) for ext in ALLOWED_EXTENSIONS):
        raise refuse(extension_problem())


def check_size(size: int) -> None:
    if size > settings.UPLOAD_MAX_BYTES:
        raise refuse(size_problem(filesizeformat(size)))
    if size == 0:
        raise refuse(_("The file is empty."))


# Formats people often send instead of PNG/JPEG, named so the refusal can say what the file is.
# Only magic bytes are compared: no other Pillow decoder ever sees the upload.
OTHER_FORMATS = [
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "SVG/XML"),
]


def name_other_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:8] == b"ftyp":
        return "HEIC/AVIF"
    for magic, name in OTHER_FORMATS:
        if data.startswith(magic):
            return name
    return None


def refuse_unknown_format(data: bytes) -> ValidationError:
    other = name_other_format(data[:64].lstrip())
    if other:
        return refuse(_("The file is a %(format)s file, not a PNG or JPEG image.") % {"format": other})
    return refuse(format_problem())


def open_checked(source: bytes | BinaryIO) -> Image.Image:
    """Identify the format and dimensions from the header, before any pixel is decoded.

    This is the decompression-bomb guard: a file that declares more pixels than
    UPLOAD_MAX_PIXELS is refused here, however few bytes it has. Pillow's own
    guard (DecompressionBombError) is only a backstop for absurd sizes. Given a
    file, Pillow reads only as far as the header.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        image = Image.open(stream, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        stream.seek(0)
        raise refuse_unknown_format(stream.read(64)) from None
    except Image.DecompressionBombError:
        raise refuse(_("The image declares far too many pixels (a decompression bomb).")) from None
    except Exception:  # Pillow reports broken headers with many exception types.
        raise refuse(_("The image is damaged and cannot be read.")) from None
    width, height = image.size
    if width * height > settings.UPLOAD_MAX_PIXELS:
        raise refuse(pixels_problem(width, height, megapixels(width * height)))
    if min(width, height) < MIN_SIDE:
        raise refuse(small_problem(width, height))
    return image


def check_upload(file: BinaryIO, filename: str, size: int) -> None:
    """The checks that need no decoding (name, size, header), for every file of an upload
    before any is decoded: a refusal of one of several files comes at once."""
    check_extension(filename)
    check_size(size)
    open_checked(file)
    file.seek(0)


def decode_fully(image: Image.Image) -> Image.Image:
    """Decode every pixel; truncated or corrupt data fails here, not later in the worker."""
    try:
        image.load()
    except Exception:  # OSError, SyntaxError, ValueError, EOFError… depending on the damage.
        raise refuse(_("The image is truncated or corrupt and cannot be read.")) from None
    return image


def upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block only loses the rotation."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Palette, alpha, greyscale, 16-bit and CMYK all become 8-bit RGB on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything to white.
        image = image.point(lambda value: value / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", image.size, "white")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def normalise_upload(data: bytes, filename: str) -> NormalisedImage:
    """Validate an uploaded diagram and return it re-encoded without metadata."""
    check_extension(filename)
    check_size(len(data))
    image = open_checked(data)
    extension = EXTENSION_FOR_FORMAT[image.format]
    image = to_rgb(upright(decode_fully(image)))
    # convert() copies `info` (ICC profile, comments, DPI…), and the encoders write some of it back.
    image.info = {}
    buffer = io.BytesIO()
    if extension == "jpg":
        image.save(buffer, format="JPEG", quality=92, optimize=True)
    else:
        image.save(buffer, format="PNG")
    return NormalisedImage(buffer.getvalue(), extension, image.width, image.height)


def thumbnail_from_bytes(content: bytes, size: int = 320) -> bytes:
    """A small JPEG for lists; made once at upload, not per page view."""
    with Image.open(io.BytesIO(content)) as image:
        image.thumbnail((size, size))
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="JPEG", quality=80)
        return buffer.getvalue()
