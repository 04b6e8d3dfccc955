"""Uploading a diagram: what is refused (and how), and how accepted images are stored.

The files are generated here: a corpus of bad ones (each refusal must say what was
wrong and what is allowed, and leave nothing behind) and of odd-but-valid ones
(accepted and normalised to 8-bit RGB without metadata).
"""

from __future__ import annotations

import functools
import io
import random
import re
import struct
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DataError
from django.urls import reverse
from django.utils.html import escape
from PIL import Image

from describer import services
from describer.forms import UploadForm
from describer.images import allowed_text, normalise_upload
from describer.models import Conversion
from tests.conftest import diagram_png, png_bytes

ALLOWED = "Allowed: PNG or JPEG, at most"


def post_upload(client, name: str, content: bytes, **headers):
    return client.post(reverse("upload"), {"image": SimpleUploadedFile(name, content), "language": ""}, **headers)


def files_under(root: Path) -> list[Path]:
    return [path for path in Path(root).rglob("*") if path.is_file()]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG that declares `width`×`height` RGB pixels but holds none."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")


@functools.cache
def zlib_bomb_png() -> bytes:
    """A complete, valid 8000×8000 greyscale PNG of ~60 KB that decodes to 64 MB."""
    side = 8000
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    pixels = zlib.compress(bytes((side + 1) * side), 9)  # every row: filter byte 0, then black
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    """Right header, garbage in the middle of the compressed pixel data."""
    noise = Image.frombytes("RGB", (200, 200), random.Random(7).randbytes(200 * 200 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 1000
    data[start : start + 2000] = b"\xff" * 2000
    return bytes(data)


def jpeg_bytes(size=(320, 200), mode="RGB", color="white", **save_args) -> bytes:
    return png_bytes(size, mode, color, fmt="JPEG", **save_args)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


REFUSED = [
    # id, file name, content thunk, settings to change, what the message must say
    ("not-an-image", "diagram.png", lambda: b"Start -> Review -> End\n" * 20, {}, "not a PNG or JPEG image"),
    ("empty-file", "diagram.png", lambda: b"", {}, "The file is empty"),
    ("truncated-png", "diagram.png", lambda: half(diagram_png()), {}, "truncated or corrupt"),
    ("corrupt-png-data", "diagram.png", corrupt_png, {}, "truncated or corrupt"),
    ("truncated-jpeg", "photo.jpg", lambda: half(jpeg_bytes((640, 480), color="navy")), {}, "truncated or corrupt"),
    ("decompression-bomb-header", "bomb.png", lambda: png_header_only(100_000, 100_000), {}, "decompression bomb"),
    ("decompression-bomb-zlib", "bomb.png", zlib_bomb_png, {}, "8000×8000 pixels (64 megapixels), which is too many"),
    ("too-many-pixels-default-limit", "wide.png", lambda: png_header_only(8000, 6000), {}, "which is too many"),
    ("too-many-pixels-setting", "diagram.png", lambda: png_bytes((200, 100)), {"UPLOAD_MAX_PIXELS": 10_000}, "200×100 pixels"),
    ("too-many-bytes", "diagram.png", diagram_png, {"UPLOAD_MAX_BYTES": 1000}, "which is too large"),
    ("too-small", "dot.png", lambda: png_bytes((8, 8)), {}, "at least 16 pixels on each side"),
    ("gif", "diagram.gif", lambda: png_bytes(fmt="GIF"), {}, "does not have a .png, .jpg or .jpeg extension"),
    ("png-named-gif", "diagram.gif", diagram_png, {}, "does not have a .png, .jpg or .jpeg extension"),
    ("png-named-txt", "diagram.txt", diagram_png, {}, "does not have a .png, .jpg or .jpeg extension"),
    ("png-without-extension", "diagram", diagram_png, {}, "does not have a .png, .jpg or .jpeg extension"),
    ("gif-named-png", "diagram.png", lambda: png_bytes(fmt="GIF"), {}, "a GIF file, not a PNG or JPEG image"),
    ("bmp-named-jpg", "diagram.jpg", lambda: png_bytes(fmt="BMP"), {}, "a BMP file, not a PNG or JPEG image"),
]


@pytest.mark.parametrize(
    ("name", "make_content", "overrides", "problem"),
    [pytest.param(*case[1:], id=case[0]) for case in REFUSED],
)
def test_it_refuses_bad_files_saying_why_and_leaves_nothing_behind(
    alice, settings, media_root, name, make_content, overrides, problem
):
    for setting, value in overrides.items():
        setattr(settings, setting, value)

    response = post_upload(alice, name, make_content())

    assert response.status_code == 400
    [message] = response.context["form"].errors["image"]
    assert problem in message
    assert ALLOWED in message
    assert escape(message) in response.content.decode()
    assert Conversion.objects.count() == 0
    assert files_under(media_root) == []


def test_the_refusal_names_the_configured_limits(alice, settings):
    settings.UPLOAD_MAX_BYTES = 1000
    settings.UPLOAD_MAX_PIXELS = 2_000_000

    response = post_upload(alice, "diagram.png", diagram_png())

    [message] = response.context["form"].errors["image"]
    assert "at most 1000\xa0bytes and 2 megapixels" in message


def test_it_refuses_a_post_without_a_file_saying_what_is_allowed(alice):
    response = alice.post(reverse("upload"), {"language": ""})

    assert response.status_code == 400
    [message] = response.context["form"].errors["image"]
    assert "Choose a diagram image" in message and ALLOWED in message


def test_an_htmx_refusal_returns_only_the_form_with_the_error(alice, media_root):
    response = post_upload(alice, "diagram.png", half(diagram_png()), HTTP_HX_REQUEST="true")

    assert response.status_code == 400
    html = response.content.decode()
    assert "<html" not in html
    assert 'id="upload-form"' in html
    assert "truncated or corrupt" in html
    assert Conversion.objects.count() == 0
    assert files_under(media_root) == []


def test_the_upload_page_states_the_limits(alice):
    response = alice.get(reverse("upload"))

    assert response.status_code == 200
    assert ALLOWED in response.content.decode()
    assert 'accept="image/png,image/jpeg"' in response.content.decode()


def palette_png(transparent: bool = False) -> bytes:
    image = Image.new("P", (64, 48), 1)
    image.putpalette([0, 0, 0, 200, 30, 30] + [255, 255, 255] * 254)
    image.paste(0, (0, 0, 32, 48))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **({"transparency": 0} if transparent else {}))
    return buffer.getvalue()


def rgba_png() -> bytes:
    """Left half fully transparent (red underneath), right half opaque blue."""
    image = Image.new("RGBA", (64, 48), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (32, 0, 64, 48))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


ACCEPTED = [
    # id, file name, content thunk, stored format, pixel at (2, 2) after normalising (None: not checked)
    ("rgb-png", "diagram.png", diagram_png, "PNG", (255, 255, 255)),
    ("rgb-jpeg", "diagram.jpg", lambda: jpeg_bytes(color="white"), "JPEG", None),
    ("jpeg-extension", "diagram.jpeg", lambda: jpeg_bytes(color="white"), "JPEG", None),
    ("upper-case-extension", "DIAGRAM.PNG", diagram_png, "PNG", (255, 255, 255)),
    ("palette-png", "palette.png", palette_png, "PNG", (0, 0, 0)),
    ("palette-png-with-transparency", "palette.png", lambda: palette_png(transparent=True), "PNG", (255, 255, 255)),
    ("rgba-png-on-white", "alpha.png", rgba_png, "PNG", (255, 255, 255)),
    ("greyscale-png", "grey.png", lambda: png_bytes((64, 48), "L", 128), "PNG", (128, 128, 128)),
    ("greyscale-alpha-png", "grey.png", lambda: png_bytes((64, 48), "LA", (0, 255)), "PNG", (0, 0, 0)),
    ("bilevel-png", "bw.png", lambda: png_bytes((64, 48), "1", 0), "PNG", (0, 0, 0)),
    ("16-bit-greyscale-png", "deep.png", lambda: png_bytes((64, 48), "I;16", 40_000), "PNG", (156, 156, 156)),
    ("greyscale-jpeg", "grey.jpg", lambda: jpeg_bytes((64, 48), "L", 128), "JPEG", None),
    ("cmyk-jpeg", "print.jpg", lambda: jpeg_bytes((64, 48), "CMYK", (0, 0, 0, 0)), "JPEG", None),
    ("png-content-named-jpg", "diagram.jpg", diagram_png, "PNG", (255, 255, 255)),
]


@pytest.mark.parametrize(
    ("name", "make_content", "stored_format", "pixel"),
    [pytest.param(*case[1:], id=case[0]) for case in ACCEPTED],
)
def test_it_accepts_odd_but_valid_images_as_rgb(alice, user, name, make_content, stored_format, pixel):
    content = make_content()
    original = Image.open(io.BytesIO(content))

    response = post_upload(alice, name, content)

    conversion = Conversion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == conversion.get_absolute_url()
    assert conversion.owner == user
    assert conversion.status == Conversion.Status.QUEUED
    assert conversion.original_filename == name
    with conversion.input_image.open("rb") as stored_file, Image.open(stored_file) as stored:
        assert stored.format == stored_format
        assert stored.mode == "RGB"
        assert stored.size == original.size == (conversion.image_width, conversion.image_height)
        if pixel is not None:
            assert stored.getpixel((2, 2)) == pixel
    if stored_format == "JPEG":
        assert conversion.input_image.name.endswith(".jpg")
    else:
        assert conversion.input_image.name.endswith(".png")


def test_an_htmx_upload_sends_the_browser_to_the_detail_page(alice):
    response = post_upload(alice, "diagram.png", diagram_png(), HTTP_HX_REQUEST="true")

    conversion = Conversion.objects.get()
    assert response.status_code == 200
    assert response["HX-Redirect"] == conversion.get_absolute_url()


def test_it_keeps_the_requested_language(alice):
    alice.post(reverse("upload"), {"image": SimpleUploadedFile("d.png", diagram_png()), "language": "ru"})

    assert Conversion.objects.get().language == "ru"


def exif_jpeg(size=(300, 200), orientation: int = 6) -> bytes:
    """A landscape JPEG whose EXIF says "rotate 90° clockwise to display", plus private metadata."""
    image = Image.new("RGB", size, "white")
    image.paste((255, 0, 0), (0, 0, 30, 30))  # a red mark in the top-left corner as stored
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "SecretCam Inc"  # Make
    exif[0x013B] = "Alice Secretary"  # Artist
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), comment=b"internal: project orchid")
    return buffer.getvalue()


def test_it_applies_the_exif_orientation(alice):
    post_upload(alice, "photo.jpg", exif_jpeg(orientation=6))

    conversion = Conversion.objects.get()
    with conversion.input_image.open("rb") as stored_file, Image.open(stored_file) as stored:
        assert stored.size == (200, 300)
        # Turned 90° clockwise: the mark that was top-left is now top-right.
        red, green, _ = stored.getpixel((200 - 10, 10))
        assert red > 200 and green < 60
    assert (conversion.image_width, conversion.image_height) == (200, 300)


def test_it_stores_a_jpeg_without_its_exif_or_comment(alice):
    post_upload(alice, "photo.jpg", exif_jpeg())

    stored_bytes = Conversion.objects.get().input_image.read()
    stored = Image.open(io.BytesIO(stored_bytes))
    assert not stored.getexif()
    assert "exif" not in stored.info and "comment" not in stored.info
    for secret in (b"Exif", b"SecretCam", b"Alice Secretary", b"orchid"):
        assert secret not in stored_bytes


def test_it_stores_a_png_without_its_text_chunks_or_colour_profile(alice):
    from PIL import ImageCms, PngImagePlugin

    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Alice Secretary")
    text.add_text("Comment", "internal: project orchid")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = Image.open(io.BytesIO(diagram_png()))
    buffer = io.BytesIO()
    image.save(buffer, "PNG", pnginfo=text, icc_profile=profile)

    post_upload(alice, "diagram.png", buffer.getvalue())

    stored_bytes = Conversion.objects.get().input_image.read()
    stored = Image.open(io.BytesIO(stored_bytes))
    assert set(stored.info) <= {"dpi", "gamma", "srgb"}  # nothing that came from the upload
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"eXIf", b"Alice", b"orchid"):
        assert chunk not in stored_bytes


def test_it_stores_the_upload_under_a_random_name(alice, media_root):
    post_upload(alice, "Secret merger plan.png", diagram_png())
    post_upload(alice, "Secret merger plan.png", diagram_png())

    first, second = Conversion.objects.order_by("created_at")
    assert first.input_image.name != second.input_image.name
    for conversion in (first, second):
        for field in (conversion.input_image, conversion.input_thumbnail):
            assert re.fullmatch(r"uploads/\d{4}/\d{2}/[A-Za-z0-9_-]{24}\.(png|jpg)", field.name)
    assert all("ecret" not in str(path) and "plan" not in str(path) for path in files_under(media_root))
    assert len(files_under(media_root)) == 4  # two images and two thumbnails, nothing else


def test_it_makes_a_small_jpeg_thumbnail(alice):
    post_upload(alice, "diagram.png", diagram_png(size=(1600, 1000)))

    with Conversion.objects.get().input_thumbnail.open("rb") as thumb_file, Image.open(thumb_file) as thumb:
        assert thumb.format == "JPEG"
        assert max(thumb.size) == 320


def test_a_failed_save_leaves_no_files_behind(user, media_root):
    image = normalise_upload(diagram_png(), "diagram.png")

    with pytest.raises(DataError):
        # The language column holds 5 characters: PostgreSQL refuses the row.
        services.conversion_create_from_image(
            owner=user, image=image, original_filename="diagram.png", language="klingon"
        )

    assert Conversion.objects.count() == 0
    assert files_under(media_root) == []


def test_only_get_and_post_are_allowed(alice):
    assert alice.put(reverse("upload")).status_code == 405


# --- Several files at once ----------------------------------------------------------------


def post_files(client, files: list[tuple[str, bytes]], language: str = "", **headers):
    uploads = [SimpleUploadedFile(name, content) for name, content in files]
    return client.post(reverse("upload"), {"image": uploads, "language": language}, **headers)


def test_several_images_become_one_conversion_each_and_the_history_lists_them(alice, user):
    response = post_files(alice, [("order.png", diagram_png("Order")), ("hiring.jpg", jpeg_bytes())], language="ru")

    assert response.status_code == 302
    assert response["Location"] == reverse("history")
    order, hiring = Conversion.objects.order_by("created_at")
    assert (order.original_filename, hiring.original_filename) == ("order.png", "hiring.jpg")
    assert {order.language, hiring.language} == {"ru"}
    assert {order.owner, hiring.owner} == {user}
    assert order.input_image.name != hiring.input_image.name
    page = alice.get(response["Location"]).content.decode()
    assert "Each image is queued as its own conversion: order.png, hiring.jpg." in page


def test_an_htmx_upload_of_several_images_sends_the_browser_to_the_history(alice):
    response = post_files(alice, [("a.png", diagram_png()), ("b.png", diagram_png())], HTTP_HX_REQUEST="true")

    assert response["HX-Redirect"] == reverse("history")
    assert Conversion.objects.count() == 2


def test_one_refused_file_refuses_all_naming_it_and_keeps_the_language(alice, media_root):
    response = post_files(alice, [("order.png", diagram_png()), ("photo.gif", png_bytes(fmt="GIF"))], language="ru")

    assert response.status_code == 400
    form = response.context["form"]
    [message] = form.errors["image"]
    assert message.startswith("photo.gif: The file does not have a .png, .jpg or .jpeg extension. " + ALLOWED)
    assert form.refused_indexes == [1]
    html = response.content.decode()
    assert 'data-refused="1"' in html
    assert '<option value="ru" selected>' in html
    assert Conversion.objects.count() == 0
    assert files_under(media_root) == []


def test_every_refused_file_is_named_in_one_answer(alice):
    files = [("empty.png", b""), ("fine.png", diagram_png()), ("cut.png", half(diagram_png())), ("bomb.png", zlib_bomb_png())]

    response = post_files(alice, files)

    form = response.context["form"]
    # The bomb is refused by its header, with the name and size checks, before any file is decoded.
    assert [message.split(":")[0] for message in form.errors["image"]] == ["empty.png", "bomb.png"]
    assert form.refused_indexes == [0, 3]

    response = post_files(alice, files[1:3])

    assert response.context["form"].errors["image"] == [
        "cut.png: The image is truncated or corrupt and cannot be read. " + allowed_text()
    ]
    assert response.context["form"].refused_indexes == [1]


def test_at_most_ten_files_are_taken_at_once(alice):
    response = post_files(alice, [(f"d{i}.png", diagram_png()) for i in range(11)])

    assert response.status_code == 400
    assert response.context["form"].errors["image"] == ["At most 10 images can be sent at once."]
    assert Conversion.objects.count() == 0


def test_a_failed_save_among_several_leaves_no_rows_or_files_behind(user, media_root):
    images = [("a.png", normalise_upload(diagram_png(), "a.png")), ("b.png", normalise_upload(diagram_png(), "b.png"))]

    with pytest.raises(DataError):
        services.conversions_create_from_images(owner=user, images=images, language="klingon")

    assert Conversion.objects.count() == 0
    assert files_under(media_root) == []


def test_the_page_gives_the_browser_the_servers_limits_and_messages(alice, settings):
    settings.UPLOAD_MAX_BYTES = 3 * 1024 * 1024
    settings.UPLOAD_MAX_PIXELS = 2_500_000

    html = alice.get(reverse("upload")).content.decode()

    assert 'data-max-bytes="3145728"' in html
    assert 'data-max-pixels="2500000"' in html
    assert 'data-min-side="16"' in html
    assert 'data-max-files="10"' in html
    assert 'data-extensions=".jpeg,.jpg,.png"' in html
    assert 'data-size-units="{n}\xa0GB|{n}\xa0MB|{n}\xa0KB|{n}\xa0bytes"' in html
    limits = "Allowed: PNG or JPEG, at most 3.0\xa0MB and 2.5 megapixels."
    assert f'data-msg-size="{{name}}: The file is {{size}}, which is too large. {limits}"' in html
    assert f'data-msg-extension="{{name}}: The file does not have a .png, .jpg or .jpeg extension. {limits}"' in html
    assert "{w}×{h} pixels ({mp} megapixels)" in html
    assert 'multiple' in html and 'name="image"' in html
    assert "js/upload.js" in html


def test_the_browsers_messages_are_in_the_users_language(alice):
    alice.post(reverse("set_language"), {"language": "ru"})

    html = alice.get(reverse("upload")).content.decode()

    assert 'data-size-units="{n}\xa0ГБ|{n}\xa0МБ|{n}\xa0КБ|{n}\xa0байт"' in html
    assert "Допустимы PNG и JPEG размером не более 10,0\xa0МБ и 40 Мп." in html


def test_the_api_still_takes_one_image_through_the_same_form():
    form = UploadForm({"language": ""}, {"image": SimpleUploadedFile("flow.png", diagram_png())})

    assert form.is_valid(), form.errors
    assert (form.normalised.width, form.normalised.height) == (640, 400)
