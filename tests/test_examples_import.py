"""import_examples / export_examples: the folder layout, idempotency, refusals with reasons,
and the round trip."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from describer import examples
from describer.models import Example
from tests.conftest import diagram_png, png_bytes
from tests.example_files import MIXED, STARTER, copy_starter, write_example

pytestmark = pytest.mark.django_db


def run_import(folder, *args) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_examples", str(folder), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_a_fresh_database_gets_the_starter_set_and_a_second_run_adds_nothing():
    first, _ = run_import(STARTER)
    count = Example.objects.count()
    second, _ = run_import(STARTER)

    assert count >= 40
    assert f"{count} added, 0 updated, 0 unchanged (skipped), 0 refused" in first
    assert f"0 added, 0 updated, {count} unchanged (skipped), 0 refused" in second
    assert Example.objects.count() == count
    assert not Example.objects.embedded().exists()  # left to the worker


def test_the_first_start_import_leaves_a_curated_set_alone(tmp_path):
    folder = copy_starter(tmp_path / "in", *MIXED[:2])
    run_import(folder, "--if-empty")
    Example.objects.filter(name=MIXED[0]).delete()  # an admin removed one

    out, _ = run_import(folder, "--if-empty")

    assert "Examples exist already" in out
    assert not Example.objects.filter(name=MIXED[0]).exists()


def test_it_shows_progress_and_lists_each_outcome_when_verbose(tmp_path):
    folder = copy_starter(tmp_path / "in", *MIXED[:2])

    out, err = run_import(folder, "-v", "2")

    assert "Importing: 2/2" in err
    assert "  added flow-en-make-tea" in out


def test_changed_texts_are_updated_and_the_embedding_is_kept(tmp_path):
    folder = copy_starter(tmp_path / "in", "flow-en-make-tea")
    examples.import_folder(folder)
    Example.objects.update(embedding=[0.1] * 512, embedding_model="m")
    text = (folder / "flow-en-make-tea.txt").read_text().replace("Boil the water", "Boil fresh water")
    (folder / "flow-en-make-tea.txt").write_text(text)

    report = examples.import_folder(folder)

    example = Example.objects.get()
    assert report.updated == ["flow-en-make-tea"]
    assert "Boil fresh water" in example.description
    assert example.embedding is not None


def test_new_only_leaves_existing_examples_as_curated(tmp_path):
    folder = copy_starter(tmp_path / "in", "flow-en-make-tea")
    examples.import_folder(folder)
    Example.objects.update(description="# Edited in the admin\n\n## Steps\n1. Brew")
    write_example(folder, "flow-en-new-one")

    out, _ = run_import(folder, "--new-only")

    assert "1 added, 0 updated, 1 unchanged (skipped)" in out
    assert Example.objects.get(name="flow-en-make-tea").description.startswith("# Edited in the admin")


def test_a_changed_image_replaces_the_file_and_waits_for_a_new_embedding(
    tmp_path, media_root, django_capture_on_commit_callbacks
):
    folder = copy_starter(tmp_path / "in", "flow-en-make-tea")
    examples.import_folder(folder)
    Example.objects.update(embedding=[0.1] * 512, embedding_model="m")
    old = Example.objects.get()
    (folder / "flow-en-make-tea.png").write_bytes(diagram_png("A different picture"))

    with django_capture_on_commit_callbacks(execute=True):
        report = examples.import_folder(folder)

    example = Example.objects.get()
    assert report.updated == ["flow-en-make-tea"]
    assert example.embedding is None and example.embedding_error == ""
    assert example.image_sha256 != old.image_sha256
    assert not (media_root / old.image.name).exists()
    assert (media_root / example.image.name).read_bytes() == (folder / "flow-en-make-tea.png").read_bytes()


def test_it_refuses_what_it_cannot_import_and_says_why(tmp_path):
    folder = tmp_path / "in"
    write_example(folder, "good")
    (folder / "lonely.png").write_bytes(diagram_png())
    (folder / "orphan.txt").write_text("# Orphan\n")
    write_example(folder, "empty")
    (folder / "empty.txt").write_text("  \n\n")
    write_example(folder, "not-an-image", image=b"just some text, not a picture")
    write_example(folder, "truncated", image=diagram_png()[:300])
    write_example(folder, "tiny", image=png_bytes(size=(8, 8)))
    write_example(folder, "bad name")
    write_example(folder, "twice")
    (folder / "twice.jpg").write_bytes(png_bytes(fmt="JPEG"))
    write_example(folder, "latin")
    (folder / "latin.txt").write_bytes("Caf\xe9".encode("latin-1"))
    write_example(folder, "sequence", mermaid="%% type: sequence, lang: en\nsequenceDiagram\n")
    (folder / "notes.md").write_text("not an example")

    report = examples.import_folder(folder)

    reasons = dict(report.refused)
    assert report.added == ["good"]
    assert "no description: add lonely.txt" in reasons["lonely"]
    assert "has no image: add orphan.png or orphan.jpg" in reasons["orphan"]
    assert "empty.txt is empty" in reasons["empty"]
    assert "not-an-image.png: The file is not a PNG or JPEG image" in reasons["not-an-image"]
    assert "truncated or corrupt" in reasons["truncated"]
    assert "only 8×8 pixels" in reasons["tiny"]
    assert "not a valid example name" in reasons["bad name.png"]
    assert "two images for one example (twice.jpg, twice.png)" in reasons["twice"]
    assert "latin.txt is not UTF-8 text" in reasons["latin"]
    assert "allowed: flowchart, bpmn, other" in reasons["sequence"]
    assert "not part of an example" in reasons["notes.md"]
    assert report.summary() == "1 added, 0 updated, 0 unchanged (skipped), 12 refused"
    assert list(Example.objects.values_list("name", flat=True)) == ["good"]


def test_the_command_lists_refusals_and_notes(tmp_path):
    folder = tmp_path / "in"
    write_example(folder, "prose", "Someone fills in a form, then a clerk checks it.")
    (folder / "stray.png").write_bytes(diagram_png())

    out, _ = run_import(folder)

    assert "1 added, 0 updated, 0 unchanged (skipped), 1 refused" in out
    assert "refused stray: stray.png has no description: add stray.txt." in out
    assert "note prose: the description is not exactly in the describer's layout" in out


def test_type_and_language_come_from_the_mermaid_line_then_the_name_then_the_text(tmp_path):
    folder = tmp_path / "in"
    write_example(folder, "flow-en-header-wins", mermaid="%% type: bpmn, lang: ru\nflowchart LR\n  a --> b\n")
    write_example(folder, "bpmn-ru-from-the-name")
    write_example(folder, "no-hints", "# Заявка\n\n## Шаги\n1. Подать заявку\n")

    examples.import_folder(folder)

    found = {e.name: (e.diagram_type, e.language, e.mermaid) for e in Example.objects.all()}
    assert found["flow-en-header-wins"] == ("bpmn", "ru", "flowchart LR\n  a --> b")
    assert found["bpmn-ru-from-the-name"] == ("bpmn", "ru", "")
    assert found["no-hints"] == ("other", "ru", "")


def test_export_writes_the_layout_import_reads_byte_for_byte(tmp_path):
    source = copy_starter(tmp_path / "in", *MIXED)
    examples.import_folder(source)

    call_command("export_examples", str(tmp_path / "out"), stdout=io.StringIO())

    exported = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert exported == sorted(path.name for path in source.iterdir())
    for path in source.iterdir():
        assert (tmp_path / "out" / path.name).read_bytes() == path.read_bytes(), path.name


def test_an_export_imported_elsewhere_recreates_the_examples(tmp_path):
    folder = tmp_path / "in"
    write_example(folder, "plain", "# Plain\n\n## Steps\n1. Work\n")
    examples.import_folder(folder)
    Example.objects.filter(name="plain").update(diagram_type="bpmn", language="en", mermaid="")
    before = list(Example.objects.values("name", "description", "mermaid", "diagram_type", "language", "image_sha256"))
    call_command("export_examples", str(tmp_path / "out"), stdout=io.StringIO())
    Example.objects.all().delete()

    report = examples.import_folder(tmp_path / "out")

    after = list(Example.objects.values("name", "description", "mermaid", "diagram_type", "language", "image_sha256"))
    assert report.added == ["plain"] and after == before
    assert (tmp_path / "out" / "plain.mmd").read_text() == "%% type: bpmn, lang: en\n"


def test_export_can_pick_examples(tmp_path):
    examples.import_folder(copy_starter(tmp_path / "in", *MIXED))
    out = io.StringIO()

    call_command("export_examples", str(tmp_path / "out"), "--type", "bpmn", "--language", "ru", stdout=out)

    assert "Exported 2 examples" in out.getvalue()
    assert sorted(path.stem for path in (tmp_path / "out").glob("*.txt")) == ["bpmn-ru-vypusk-karty", "bpmn-ru-zakupka"]


def test_the_command_refuses_a_missing_folder(tmp_path):
    with pytest.raises(CommandError, match="is not a folder"):
        call_command("import_examples", str(tmp_path / "nowhere"))
