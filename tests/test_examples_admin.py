"""Curating examples: the admin pages and actions, and staff promoting a finished conversion
to an example from its page."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from describer import examples
from describer.models import Conversion, Example
from tests.conftest import diagram_png, png_bytes
from tests.example_files import copy_starter, write_example

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:describer_example_changelist")
ADD = reverse("admin:describer_example_add")
DESCRIPTION = "# Order handling\n\n## Steps\n1. Take the order\n2. Ship it\n   - Next: end: Delivered.\n"


@pytest.fixture
def three_examples(tmp_path):
    """One embedded, one pending, one failed."""
    names = ("flow-en-make-tea", "bpmn-ru-zakupka", "flow-ru-oplata-zakaza")
    examples.import_folder(copy_starter(tmp_path / "in", *names))
    Example.objects.filter(name="flow-en-make-tea").update(embedding=[0.1] * 512, embedding_model="clip-ViT-B-32")
    Example.objects.filter(name="flow-ru-oplata-zakaza").update(embedding_error="The image file is missing.")
    return {example.name: example for example in Example.objects.all()}


def test_staff_see_the_list_with_thumbnail_excerpt_and_embedding_status(staff, three_examples):
    response = staff.get(CHANGELIST)

    page = response.content.decode()
    assert response.status_code == 200
    assert reverse("admin:describer_example_thumbnail", args=[three_examples["bpmn-ru-zakupka"].pk]) in page
    assert "Закупка канцелярских товаров" in page  # the description's excerpt
    assert "icon-yes.svg" in page and "icon-unknown.svg\" alt=\"\"> pending" in page
    assert "failed: The image file is missing." in page
    assert "BPMN process" in page and "Russian" in page


@pytest.mark.parametrize(
    "status, expected", [("yes", "flow-en-make-tea"), ("pending", "bpmn-ru-zakupka"), ("failed", "flow-ru-oplata-zakaza")]
)
def test_the_list_filters_by_embedding_status(staff, three_examples, status, expected):
    response = staff.get(CHANGELIST, {"embedding": status})

    assert list(response.context["cl"].result_list) == [three_examples[expected]]


def test_staff_see_the_change_and_add_pages(staff, three_examples):
    example = three_examples["bpmn-ru-zakupka"]

    change = staff.get(reverse("admin:describer_example_change", args=[example.pk]))
    add = staff.get(ADD)

    assert change.status_code == 200 and "Отдел закупок" in change.content.decode()
    assert add.status_code == 200


@pytest.mark.parametrize("url_name", ["changelist", "add", "change"])
def test_other_users_are_sent_to_the_admin_login(client, user, three_examples, url_name):
    args = [three_examples["flow-en-make-tea"].pk] if url_name == "change" else []
    url = reverse(f"admin:describer_example_{url_name}", args=args)
    anonymous = client.get(url)
    client.force_login(user)

    signed_in = client.get(url)

    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("login"))
    assert signed_in.status_code == 302 and signed_in["Location"].startswith(reverse("admin:login"))


def test_adding_an_example_leaves_it_pending_for_the_worker(staff):
    upload = SimpleUploadedFile("order.png", diagram_png("Order"), content_type="image/png")
    data = {"name": "", "description": DESCRIPTION, "mermaid": "", "diagram_type": "flowchart", "language": "en"}

    response = staff.post(ADD, {**data, "image": upload})

    example = Example.objects.get()
    assert response.status_code == 302
    assert example.name == "flow-en-order-handling"  # suggested from the title
    assert example.embedding is None and example.embedding_error == ""
    assert example.image_sha256 == examples.file_sha256(example.image)


def test_an_image_that_is_not_a_png_or_jpeg_is_refused_with_the_reason(staff):
    gif = SimpleUploadedFile("order.gif", png_bytes(size=(100, 80), fmt="GIF"), content_type="image/gif")
    data = {"name": "x", "description": DESCRIPTION, "mermaid": "", "diagram_type": "flowchart", "language": "en"}

    response = staff.post(ADD, {**data, "image": gif})

    assert response.status_code == 200 and not Example.objects.exists()
    assert "does not have a .png, .jpg or .jpeg extension" in response.content.decode()


def test_replacing_the_image_resets_the_embedding_and_removes_the_old_file(
    staff, three_examples, media_root, django_capture_on_commit_callbacks
):
    example = three_examples["flow-en-make-tea"]
    data = {"name": example.name, "description": example.description, "mermaid": example.mermaid}
    data |= {"diagram_type": example.diagram_type, "language": example.language}
    upload = SimpleUploadedFile("new.png", diagram_png("New picture"), content_type="image/png")

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(reverse("admin:describer_example_change", args=[example.pk]), {**data, "image": upload})

    changed = Example.objects.get(pk=example.pk)
    assert response.status_code == 302
    assert changed.embedding is None and changed.embedding_model == ""
    assert changed.image_sha256 == examples.file_sha256(changed.image) != example.image_sha256
    assert not (media_root / example.image.name).exists()


def test_editing_only_the_text_keeps_the_embedding(staff, three_examples):
    example = three_examples["flow-en-make-tea"]
    data = {"name": example.name, "description": DESCRIPTION, "mermaid": "", "diagram_type": "flowchart"}

    staff.post(reverse("admin:describer_example_change", args=[example.pk]), {**data, "language": "en"})

    changed = Example.objects.get(pk=example.pk)
    assert "Ship it" in changed.description
    assert changed.embedding is not None


def test_re_embed_queues_the_selection_for_the_worker(staff, three_examples):
    selected = [three_examples["flow-en-make-tea"].pk, three_examples["flow-ru-oplata-zakaza"].pk]

    response = staff.post(CHANGELIST, {"action": "re_embed", "_selected_action": selected}, follow=True)

    assert "2 examples queued" in response.content.decode()
    assert Example.objects.needs_embedding("clip-ViT-B-32").count() == 3
    assert not Example.objects.exclude(embedding_error="").exists()


def test_export_selected_downloads_a_zip_in_the_import_layout(staff, three_examples):
    selected = [three_examples["bpmn-ru-zakupka"].pk]

    response = staff.post(CHANGELIST, {"action": "export_selected", "_selected_action": selected})

    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert response["Content-Type"] == "application/zip"
    assert sorted(archive.namelist()) == ["bpmn-ru-zakupka.mmd", "bpmn-ru-zakupka.png", "bpmn-ru-zakupka.txt"]
    assert archive.read("bpmn-ru-zakupka.mmd").startswith(b"%% type: bpmn, lang: ru\nflowchart LR\n")


def test_bulk_delete_removes_the_image_files(staff, three_examples, media_root, django_capture_on_commit_callbacks):
    files = [media_root / example.image.name for example in three_examples.values()]
    data = {"action": "delete_selected", "_selected_action": [e.pk for e in three_examples.values()], "post": "yes"}

    with django_capture_on_commit_callbacks(execute=True):
        staff.post(CHANGELIST, data)

    assert not Example.objects.exists()
    assert not any(path.exists() for path in files)


def test_deleting_one_example_removes_its_file(tmp_path, media_root, django_capture_on_commit_callbacks):
    write_example(tmp_path / "in", "one")
    examples.import_folder(tmp_path / "in")
    example = Example.objects.get()

    with django_capture_on_commit_callbacks(execute=True):
        example.delete()

    assert not (media_root / example.image.name).exists()


# --- Promote a finished conversion to an example ------------------------------------------------


@pytest.fixture
def finished(make_conversion, staff_user):
    return make_conversion(
        owner=staff_user,
        status=Conversion.Status.DONE,
        title="Order handling",
        output_text=DESCRIPTION,
        output_structure={"title": "Order handling", "language": "en", "participants": []},
    )


def promote(client, conversion, **fields):
    data = {"name": "flow-en-order", "description": DESCRIPTION, "diagram_type": "flowchart", "language": "en"}
    return client.post(reverse("promote_example", args=[conversion.pk]), data | fields)


def test_staff_see_the_promote_form_on_a_finished_result(staff, finished):
    page = staff.get(finished.get_absolute_url()).content.decode()

    assert reverse("promote_example", args=[finished.pk]) in page
    assert 'value="flow-en-order-handling"' in page  # a suggested name


def test_staff_promote_a_result_with_an_edited_description(staff, finished):
    edited = DESCRIPTION.replace("Ship it", "Ship the parcel")

    response = promote(staff, finished, description=edited)

    example = Example.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:describer_example_change", args=[example.pk])
    assert example.source_conversion == finished
    assert "Ship the parcel" in example.description
    assert example.image.read() == finished.input_image.read()
    assert example.embedding is None and example.embedding_error == ""
    assert example.image_sha256 == examples.file_sha256(example.image)


def test_a_taken_name_is_refused_with_the_form_shown_again(staff, finished):
    promote(staff, finished)

    response = promote(staff, finished)

    assert response.status_code == 400
    assert "already exists" in response.content.decode()
    assert Example.objects.count() == 1


def test_an_unfinished_conversion_cannot_be_promoted(staff, finished):
    Conversion.objects.filter(pk=finished.pk).update(status=Conversion.Status.RUNNING)

    response = promote(staff, finished)

    assert response.status_code == 302 and response["Location"] == finished.get_absolute_url()
    page = staff.get(response["Location"]).content.decode()
    assert "Only a finished diagram → text conversion can become an example." in page
    assert not Example.objects.exists()


def test_other_users_cannot_promote_and_see_no_form(client, user, other_user, make_conversion):
    mine = make_conversion(status=Conversion.Status.DONE, output_text=DESCRIPTION, output_structure={"title": "x"})
    theirs = make_conversion(other_user, status=Conversion.Status.DONE, output_text=DESCRIPTION)
    client.force_login(user)

    page = client.get(mine.get_absolute_url()).content.decode()
    response = promote(client, mine)

    assert "promote" not in page
    assert response.status_code == 403
    assert promote(client, theirs).status_code == 404  # like every URL of another user's conversion
    assert not Example.objects.exists()


def test_staff_cannot_promote_someone_elses_conversion(staff, make_conversion):
    theirs = make_conversion(status=Conversion.Status.DONE, output_text=DESCRIPTION)

    assert promote(staff, theirs).status_code == 404


def test_the_web_side_of_examples_imports_no_torch():
    code = (
        "import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'diagramsite.settings'); "
        "django.setup(); import describer.admin, describer.examples, describer.views; "
        "import describer.management.commands.import_examples, describer.management.commands.retrieval_report; "
        "heavy = [name for name in ('torch', 'transformers') if name in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)
