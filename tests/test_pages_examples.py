"""Curated examples on the pages: small thumbnails (not the 2,400-pixel originals), the admin's
"Currently:" link, and what a page says when there are no curated examples at all."""

from __future__ import annotations

import base64
import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from describer import examples
from describer.models import Conversion, ConversionExample, Example
from tests.conftest import png_bytes
from tests.example_files import write_example

pytestmark = pytest.mark.django_db

BIG = (2400, 1600)


@pytest.fixture
def big_example(tmp_path) -> Example:
    write_example(tmp_path / "in", "flow-en-big", image=png_bytes(BIG, color="lightblue"))
    examples.import_folder(tmp_path / "in")
    return Example.objects.get(name="flow-en-big")


def size_of(content: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(content)) as image:
        return image.size


def data_uri_sizes(page: str) -> list[tuple[int, int]]:
    return [size_of(base64.b64decode(data)) for data in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)]


def used_by(conversion: Conversion, example: Example) -> Conversion:
    ConversionExample.objects.create(conversion=conversion, example=example, similarity=0.9, rank=1)
    return conversion


def test_an_imported_example_gets_a_small_thumbnail(big_example):
    assert size_of(big_example.image.read()) == BIG
    assert size_of(big_example.thumbnail.read()) == (192, 128)


def test_a_description_shows_the_examples_it_used_as_small_thumbnails(alice, make_conversion, big_example):
    conversion = used_by(make_conversion(status=Conversion.Status.DONE, output_structure={"title": "x"}), big_example)

    page = alice.get(conversion.get_absolute_url()).content.decode()

    assert data_uri_sizes(page) == [(192, 128)]
    full_size = reverse("example_image", args=[big_example.pk])
    assert f'src="{full_size}"' not in page, "the page loads the thumbnail, not the full-size image"
    assert f'data-zoom-image="{full_size}"' in page, "the full-size image opens only in the zoom viewer"


def test_a_drawing_shows_its_examples_as_small_thumbnails(alice, make_conversion, big_example):
    drawing = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Pay.", status=Conversion.Status.DONE,
                              output_mermaid="flowchart TD\n  a --> b")  # fmt: skip
    used_by(drawing, big_example)

    assert data_uri_sizes(alice.get(drawing.get_absolute_url()).content.decode()) == [(192, 128)]


def test_an_example_from_before_thumbnails_gets_one_when_first_shown(alice, make_conversion, big_example):
    big_example.thumbnail.delete(save=True)
    conversion = used_by(make_conversion(status=Conversion.Status.DONE, output_structure={"title": "x"}), big_example)

    page = alice.get(conversion.get_absolute_url()).content.decode()

    big_example.refresh_from_db()
    assert data_uri_sizes(page) == [(192, 128)]
    assert big_example.thumbnail and size_of(big_example.thumbnail.read()) == (192, 128)


def test_a_promoted_result_gets_a_thumbnail(staff, staff_user, make_conversion):
    conversion = make_conversion(staff_user, status=Conversion.Status.DONE, output_text="# Pay\n\n## Steps\n1. Pay\n",
                                 output_structure={"title": "Pay"})  # fmt: skip
    fields = {"name": "flow-en-pay", "description": conversion.output_text, "diagram_type": "flowchart", "language": "en"}

    assert staff.post(reverse("promote_example", args=[conversion.pk]), fields).status_code == 302

    assert size_of(Example.objects.get().thumbnail.read()) == (192, 120)  # from the 640×400 upload


def test_the_admin_list_shows_the_thumbnail_not_the_image(staff, big_example):
    page = staff.get(reverse("admin:describer_example_changelist")).content.decode()
    thumbnail_url = reverse("admin:describer_example_thumbnail", args=[big_example.pk])

    response = staff.get(thumbnail_url)

    assert thumbnail_url in page
    assert reverse("example_image", args=[big_example.pk]) not in page
    assert response.status_code == 200 and response["Content-Type"] == "image/jpeg"
    assert size_of(b"".join(response.streaming_content) if response.streaming else response.content) == (192, 128)


def test_only_staff_get_the_admins_thumbnails(client, user, big_example):
    client.force_login(user)

    response = client.get(reverse("admin:describer_example_thumbnail", args=[big_example.pk]))

    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))


def test_the_admins_currently_link_opens_the_image(staff, big_example):
    page = staff.get(reverse("admin:describer_example_change", args=[big_example.pk])).content.decode()

    [link] = re.findall(r'Currently:\s*<a href="([^"]+)"', page)
    response = staff.get(link)

    assert link == reverse("example_image", args=[big_example.pk])
    assert response.status_code == 200
    assert size_of(b"".join(response.streaming_content)) == BIG


def test_replacing_the_image_in_the_admin_replaces_the_thumbnail(staff, big_example, django_capture_on_commit_callbacks):
    old_thumbnail = big_example.thumbnail.name
    url = reverse("admin:describer_example_change", args=[big_example.pk])
    fields = {"name": big_example.name, "description": big_example.description, "mermaid": "",
              "diagram_type": "flowchart", "language": "en",
              "image": SimpleUploadedFile("new.png", png_bytes((1000, 1000)), content_type="image/png")}  # fmt: skip

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(url, fields)

    big_example.refresh_from_db()
    assert response.status_code == 302
    assert size_of(big_example.thumbnail.read()) == (192, 192)
    assert big_example.thumbnail.name != old_thumbnail
    assert not big_example.thumbnail.storage.exists(old_thumbnail)


def test_deleting_an_example_deletes_its_thumbnail(big_example, django_capture_on_commit_callbacks):
    storage, name = big_example.thumbnail.storage, big_example.thumbnail.name

    with django_capture_on_commit_callbacks(execute=True):
        big_example.delete()

    assert not storage.exists(name)


# --- What a page says without examples ------------------------------------------------------------


def describe_without_examples(make_conversion) -> Conversion:
    return make_conversion(status=Conversion.Status.DONE, output_structure={"title": "x"})


def test_without_any_examples_the_page_says_there_are_none_yet(alice, make_conversion):
    page = alice.get(describe_without_examples(make_conversion).get_absolute_url()).content.decode()

    assert "There are no curated examples yet, so the model worked from the image alone." in page
    assert "No curated example was similar enough" not in page
    assert "import_examples" not in page  # the how-to is for staff


def test_staff_are_told_how_to_add_examples(staff, staff_user, make_conversion):
    conversion = make_conversion(staff_user, status=Conversion.Status.DONE, output_structure={"title": "x"})

    page = staff.get(conversion.get_absolute_url()).content.decode()

    assert "There are no curated examples yet" in page
    assert reverse("admin:describer_example_add") in page
    assert "python manage.py import_examples examples/starter" in page


def test_with_examples_none_similar_enough_says_so(alice, make_conversion, big_example):
    page = alice.get(describe_without_examples(make_conversion).get_absolute_url()).content.decode()

    assert "No curated example was similar enough; the model worked from the image alone." in page
    assert "There are no curated examples yet" not in page


def test_a_drawing_without_any_examples_says_there_are_none_yet(alice, make_conversion):
    drawing = make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="Pay.", status=Conversion.Status.DONE,
                              output_mermaid="flowchart TD\n  a --> b")  # fmt: skip

    page = alice.get(drawing.get_absolute_url()).content.decode()

    assert "There are no curated examples yet, so the model saw the built-in examples." in page


# --- The admin's conversion page ----------------------------------------------------------------------


def test_the_admins_conversion_page_shows_the_upload_through_a_url_that_works(staff, user, make_conversion):
    conversion = make_conversion(user)

    page = staff.get(reverse("admin:describer_conversion_change", args=[conversion.pk])).content.decode()
    image_url = reverse("admin:describer_conversion_image", args=[conversion.pk])
    response = staff.get(image_url)

    assert f'href="{image_url}"' in page
    assert "/private-media/" not in page  # MEDIA_URL serves nothing
    assert response.status_code == 200 and size_of(b"".join(response.streaming_content)) == (640, 400)


def test_only_staff_get_a_conversions_upload_from_the_admin(client, other_user, make_conversion):
    conversion = make_conversion()
    client.force_login(other_user)

    response = client.get(reverse("admin:describer_conversion_image", args=[conversion.pk]))

    assert response.status_code == 302 and response["Location"].startswith(reverse("admin:login"))
