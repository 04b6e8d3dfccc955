"""Text → diagram on the server: the job on the real tiny model (streamed, extracted,
kept as a version), few-shot examples, repairs (queued, bounded, each kept), saving and
restoring versions, the .mmd download, the round trip from a description, and owner-only
access to all of it."""

from __future__ import annotations

import asyncio
import io
import re

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.base import ContentFile
from django.template.loader import render_to_string
from django.urls import reverse
from PIL import Image

from describer import prompts, services
from describer.graph.mermaid import close_cut_off
from describer.mermaid import extract_mermaid
from describer.models import Conversion, Example, MermaidVersion
from describer.progress import group_name
from tests.conftest import diagram_png, run_next

pytestmark = pytest.mark.django_db

TEXT = Conversion.Kind.TEXT_TO_DIAGRAM
GOOD = 'flowchart TD\n    A(["Заявка получена"]) --> B{"Одобрена?"}\n    B -->|"Да"| C(["Готово"])'
BROKEN = 'flowchart TD\n    A["Start"] --> B{"Ok?"\n    B --> C'
PARSER_ERROR = "Parse error on line 3:\n...Expecting 'DIAMOND_STOP', got 'NODE_STRING'"


@pytest.fixture
def drawing(make_conversion):
    """A finished text → diagram conversion with its first version."""

    def make(owner=None, code=GOOD, **fields):
        conversion = make_conversion(
            owner, kind=TEXT, status=Conversion.Status.DONE, input_text="Заявка: получить, одобрить.", **fields
        )
        services.mermaid_version_add(conversion, code=code, origin=MermaidVersion.Origin.MODEL)
        return conversion

    return make


def make_example(name: str, *, mermaid: str = "flowchart TD\n  A --> B", runtime=None) -> Example:
    content = diagram_png(name)
    example = Example(name=name, description=f"# {name}\n1. Step", mermaid=mermaid)
    example.image.save(f"{name}.png", ContentFile(content), save=False)
    if runtime is not None:
        example.embedding = runtime.embed_image(Image.open(io.BytesIO(content)))
    example.save()
    return example


# --- The job on the tiny model ------------------------------------------------------------


def test_a_described_process_is_drawn_by_the_model_and_kept_as_version_1(alice, runner):
    response = alice.post(reverse("text_new"), {"text": "# Отпуск\nСотрудник подаёт заявление."})
    conversion = Conversion.objects.get()
    assert response.status_code == 302 and response["Location"] == conversion.get_absolute_url()

    job = run_next(runner)

    assert job.status == Conversion.Status.DONE, job.error_message
    assert job.output_raw and job.tokens_generated == 48
    # The tiny model writes nonsense: whatever it wrote is the code, for the parser to judge.
    assert job.cut_off  # 48 tokens forced: it stopped at the limit
    assert job.output_mermaid == extract_mermaid(close_cut_off(job.output_raw))
    [version] = job.mermaid_versions.all()
    assert (version.number, version.origin, version.code) == (1, MermaidVersion.Origin.MODEL, job.output_mermaid)
    assert job.timings["tokens"] == 48 and "retrieval_s" in job.timings


def test_the_answer_streams_to_the_page_as_it_grows(make_conversion, runner):
    conversion = make_conversion(kind=TEXT, input_text="Order: receive, pay, ship.")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group_name(conversion.pk), channel)

    run_next(runner)

    events = async_to_sync(receive_until_finished)(layer, channel)
    texts = [event["text"] for event in events if event["type"] == "conversion.progress" and event["text"]]
    assert {event.get("stage") for event in events} >= {"retrieval", "generation", "postprocessing"}
    assert len(set(texts)) >= 2, "partial answers go out while the model writes"
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))


async def receive_until_finished(layer, channel) -> list[dict]:
    events = []
    while not events or events[-1]["type"] != "conversion.finished":
        events.append(await asyncio.wait_for(layer.receive(channel), timeout=10))
    return events


def test_curated_examples_with_mermaid_code_are_the_few_shot_turns(make_conversion, runner):
    with_code = make_example("orders")
    make_example("no-code", mermaid="")
    make_conversion(kind=TEXT, input_text="Hiring: interview, offer.")

    job = run_next(runner)

    assert [item.example for item in job.examples_used.all()] == [with_code]


def test_embedded_examples_are_chosen_by_the_texts_clip_embedding(make_conversion, runner, tiny_runtime, settings):
    settings.RETRIEVAL_K = 2
    examples = {make_example(name, runtime=tiny_runtime) for name in ("a", "b", "c")}
    make_conversion(kind=TEXT, input_text="Invoices: check and pay. " * 200)  # longer than CLIP reads

    job = run_next(runner)

    used = list(job.examples_used.all())
    assert len(used) == 2 and {item.example for item in used} <= examples
    assert used[0].similarity >= used[1].similarity


def test_the_prompt_is_a_chat_of_examples_then_the_text():
    messages = prompts.draw_messages("Pay the invoice.", [("Ship it.", "flowchart TD\n A --> B")])

    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "```mermaid" in messages[0]["content"] and "flowchart TD" in messages[0]["content"]
    assert messages[2]["content"] == "```mermaid\nflowchart TD\n A --> B\n```"
    assert messages[-1]["content"].endswith("Pay the invoice.")


def test_without_curated_examples_the_prompt_shows_the_built_in_ones():
    messages = prompts.draw_messages("Pay the invoice.", [])

    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(assistant) == len(prompts.BUILT_IN_DRAWING_EXAMPLES)
    assert any("Согласовано" in code for code in assistant)


def test_the_repair_prompt_carries_the_code_and_the_parsers_message():
    [system, user] = prompts.repair_messages(BROKEN, PARSER_ERROR)

    assert "rejected" in system["content"]
    assert PARSER_ERROR in user["content"] and BROKEN in user["content"]


# --- Repairs --------------------------------------------------------------------------------


def test_repair_queues_the_code_and_error_and_the_model_answers_with_a_new_version(alice, drawing, runner):
    conversion = drawing(code=BROKEN)

    response = alice.post(reverse("repair", args=[conversion.pk]), {"code": BROKEN, "parse_error": PARSER_ERROR})

    assert response.status_code == 302 and response["Location"] == conversion.get_absolute_url()
    conversion.refresh_from_db()
    assert (conversion.status, conversion.repair_error, conversion.repair_attempts) == ("queued", PARSER_ERROR, 1)
    assert conversion.mermaid_versions.get(number=1).parse_error == PARSER_ERROR

    job = run_next(runner)

    assert job.status == Conversion.Status.DONE, job.error_message
    assert job.repair_error == ""
    latest = job.mermaid_versions.first()
    assert (latest.number, latest.origin, latest.code) == (2, MermaidVersion.Origin.REPAIR, job.output_mermaid)
    assert not job.examples_used.exists(), "a repair sends the code, not the examples"


def test_repairing_edited_code_keeps_the_edit_as_a_version_first(alice, drawing):
    conversion = drawing()
    edited = GOOD + "\n    C --> D{"

    alice.post(reverse("repair", args=[conversion.pk]), {"code": edited, "parse_error": PARSER_ERROR})

    edit = conversion.mermaid_versions.first()
    assert (edit.number, edit.origin, edit.code, edit.parse_error) == (2, "edit", edited, PARSER_ERROR)


def test_repairs_are_bounded(alice, drawing, settings):
    settings.DESCRIBER_MAX_REPAIRS = 2
    conversion = drawing(code=BROKEN, repair_attempts=2)

    response = alice.post(
        reverse("repair", args=[conversion.pk]), {"code": BROKEN, "parse_error": PARSER_ERROR}, follow=True
    )

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE and conversion.repair_error == ""
    assert "All 2 repair attempts have been used" in response.content.decode()
    assert "edit the code by hand" in response.content.decode()


def test_code_that_parses_is_not_sent_for_repair(alice, drawing):
    conversion = drawing()

    response = alice.post(reverse("repair", args=[conversion.pk]), {"code": GOOD, "parse_error": ""}, follow=True)

    conversion.refresh_from_db()
    assert conversion.status == Conversion.Status.DONE and conversion.repair_attempts == 0
    assert "nothing to repair" in response.content.decode()


def test_a_conversion_the_model_is_working_on_cannot_be_repaired_or_edited(alice, drawing):
    conversion = drawing()
    Conversion.objects.filter(pk=conversion.pk).update(status=Conversion.Status.RUNNING)

    alice.post(reverse("repair", args=[conversion.pk]), {"code": BROKEN, "parse_error": PARSER_ERROR})
    response = alice.post(reverse("mermaid_save", args=[conversion.pk]), {"code": BROKEN}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400 and "still working" in response.content.decode()
    assert conversion.mermaid_versions.count() == 1
    assert Conversion.objects.get(pk=conversion.pk).repair_attempts == 0


def test_a_failed_repair_keeps_the_diagram_and_an_edit_makes_it_the_result_again(
    alice, drawing, runner, tiny_runtime, monkeypatch
):
    conversion = drawing(code=BROKEN)
    alice.post(reverse("repair", args=[conversion.pk]), {"code": BROKEN, "parse_error": PARSER_ERROR})
    monkeypatch.setattr(tiny_runtime.model, "forward", lambda *args, **kwargs: 1 / 0)

    job = run_next(runner)

    assert job.status == Conversion.Status.FAILED
    page = alice.get(job.get_absolute_url()).content.decode()
    assert "The conversion failed" in page and 'id="mermaid-code"' in page

    alice.post(reverse("mermaid_save", args=[job.pk]), {"code": GOOD}, HTTP_HX_REQUEST="true")

    job.refresh_from_db()
    assert (job.status, job.error_message, job.repair_error, job.output_mermaid) == ("done", "", "", GOOD)


# --- The editor: versions ----------------------------------------------------------------------


def test_saving_an_edit_adds_a_version_and_returns_the_version_list(alice, drawing):
    conversion = drawing()
    edited = GOOD + '\n    B -->|"Нет"| D(["Отказ"])'

    response = alice.post(
        reverse("mermaid_save", args=[conversion.pk]),
        {"code": edited.replace("\n", "\r\n"), "parse_error": ""},  # browsers send CRLF
        HTTP_HX_REQUEST="true",
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<section id="diagram-versions"')
    assert "Saved as version 2." in html and "Edited by you" in html
    conversion.refresh_from_db()
    assert conversion.output_mermaid == edited
    version = conversion.mermaid_versions.first()
    assert (version.number, version.origin, version.code) == (2, "edit", edited)
    assert version.created_at is not None


def test_saving_unchanged_code_adds_no_version(alice, drawing):
    conversion = drawing()

    response = alice.post(reverse("mermaid_save", args=[conversion.pk]), {"code": GOOD}, HTTP_HX_REQUEST="true")

    assert "No changes to save." in response.content.decode()
    assert conversion.mermaid_versions.count() == 1


def test_a_version_that_does_not_parse_keeps_the_parsers_message(alice, drawing):
    conversion = drawing()

    data = {"code": BROKEN, "parse_error": PARSER_ERROR}
    alice.post(reverse("mermaid_save", args=[conversion.pk]), data, HTTP_HX_REQUEST="true")

    assert conversion.mermaid_versions.first().parse_error == PARSER_ERROR


@pytest.mark.parametrize(
    ("code", "message"),
    [("", "The Mermaid code is empty"), ("  \n ", "The Mermaid code is empty"), ("A" * 50_001, "at most 50,000")],
)
def test_invalid_code_is_refused_with_a_reason(alice, drawing, code, message):
    conversion = drawing()

    response = alice.post(reverse("mermaid_save", args=[conversion.pk]), {"code": code}, HTTP_HX_REQUEST="true")

    assert response.status_code == 400 and message in response.content.decode()
    assert conversion.mermaid_versions.count() == 1


def test_restoring_a_version_adds_it_again_as_the_newest(alice, drawing):
    conversion = drawing()
    services.mermaid_save(conversion, code=BROKEN, parse_error=PARSER_ERROR)

    response = alice.post(reverse("mermaid_restore", args=[conversion.pk]), {"version": 1}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200 and html.lstrip().startswith("<div id=\"diagram\"")
    assert "Version 1 restored as version 3." in html
    conversion.refresh_from_db()
    assert conversion.output_mermaid == GOOD
    versions = [(v.number, v.origin) for v in conversion.mermaid_versions.all()]
    assert versions == [(3, "restore"), (2, "edit"), (1, "model")]
    assert re.search(r'<textarea[^>]*id="mermaid-code"[^>]*>\s*flowchart TD', html)


@pytest.mark.parametrize("version", ["7", "", "x"])
def test_an_unknown_version_is_a_404(alice, drawing, version):
    conversion = drawing()
    assert alice.post(reverse("mermaid_restore", args=[conversion.pk]), {"version": version}).status_code == 404


def test_the_result_page_lists_every_version_with_its_time_and_origin(alice, drawing):
    conversion = drawing()
    services.mermaid_save(conversion, code=BROKEN, parse_error=PARSER_ERROR)

    html = alice.get(conversion.get_absolute_url()).content.decode()

    assert 'id="version-1"' in html and 'id="version-2"' in html
    assert "Written by the model" in html and "Edited by you" in html and "does not parse" in html
    assert html.count("<time datetime=") >= 3  # the page's own, and one per version


def test_the_mermaid_file_downloads_the_current_code(alice, drawing):
    conversion = drawing(title="Отпуск")

    response = alice.get(reverse("download_mermaid", args=[conversion.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="{conversion.download_stem()}.mmd"'
    assert response.content.decode() == GOOD + "\n"


# --- Owner only -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method", "data"),
    [
        ("download_mermaid", "get", {}),
        ("mermaid_save", "post", {"code": BROKEN}),
        ("repair", "post", {"code": BROKEN, "parse_error": PARSER_ERROR}),
        ("draw", "post", {}),
        ("mermaid_restore", "post", {"version": 1}),
    ],
)
def test_another_users_diagram_is_a_404_and_stays_untouched(alice, other_user, drawing, name, method, data):
    theirs = drawing(other_user)

    response = getattr(alice, method)(reverse(name, args=[theirs.pk]), data, HTTP_HX_REQUEST="true")

    assert response.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.status, theirs.output_mermaid, theirs.mermaid_versions.count()) == ("done", GOOD, 1)
    assert Conversion.objects.count() == 1


# --- The round trip -----------------------------------------------------------------------------


@pytest.fixture
def description(make_conversion):
    return make_conversion(
        status=Conversion.Status.DONE,
        title="Hiring",
        output_text="# Hiring\n\n## Steps\n1. Interview the candidate.\n2. Make an offer.",
        output_structure={"title": "Hiring", "steps": [{"number": 1, "text": "Interview the candidate."}]},
    )


def test_draw_it_turns_a_description_into_a_diagram_conversion_of_it(alice, description):
    page = alice.get(description.get_absolute_url()).content.decode()
    assert f'hx-post="{reverse("draw", args=[description.pk])}"' in page

    response = alice.post(reverse("draw", args=[description.pk]), HTTP_HX_REQUEST="true")

    drawn = Conversion.objects.get(kind=TEXT)
    assert response["HX-Redirect"] == drawn.get_absolute_url()
    assert (drawn.source, drawn.input_text, drawn.title, drawn.status) == (
        description, description.output_text, "Hiring", "queued"
    )


def test_the_drawing_is_shown_next_to_the_original_image_and_the_two_link_to_each_other(alice, description, drawing):
    drawn = drawing(source=description, title="Hiring")

    drawn_page = alice.get(drawn.get_absolute_url()).content.decode()
    source_page = alice.get(description.get_absolute_url()).content.decode()
    history = alice.get(reverse("history")).content.decode()

    assert f'<img src="{reverse("image", args=[description.pk])}"' in drawn_page
    assert "drawn from" in drawn_page and description.get_absolute_url() in drawn_page
    assert "drawn as" in source_page and drawn.get_absolute_url() in source_page
    assert "drawn from" in history and "drawn as" in history


@pytest.mark.parametrize("status", [Conversion.Status.QUEUED, Conversion.Status.FAILED])
def test_only_a_finished_description_can_be_drawn(alice, make_conversion, status):
    unfinished = make_conversion(status=status, output_text="1. Step")

    response = alice.post(reverse("draw", args=[unfinished.pk]), follow=True)

    assert not Conversion.objects.filter(kind=TEXT).exists()
    assert "Only a finished diagram → text description can be drawn." in response.content.decode()


# --- The page ------------------------------------------------------------------------------------


def test_model_output_is_only_ever_text_on_the_page(alice, drawing):
    evil = 'flowchart TD\n A["</textarea><script>alert(1)</script>"] --> B'
    conversion = drawing(code=evil)

    html = alice.get(conversion.get_absolute_url()).content.decode()

    assert "<script>alert(1)" not in html
    assert "&lt;/textarea&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html)), "no inline scripts"


def test_only_diagram_pages_load_mermaid(alice, drawing, description):
    assert "mermaid-editor.js" in alice.get(drawing().get_absolute_url()).content.decode()
    assert "mermaid.min.js" not in alice.get(description.get_absolute_url()).content.decode()


def test_the_result_pushed_over_the_websocket_holds_the_editor(drawing):
    conversion = drawing()

    html = render_to_string("describer/_result_update.html", {"conversion": conversion})

    assert 'data-mermaid-editor' in html and "Заявка получена" in html
    assert f'hx-post="{reverse("mermaid_save", args=[conversion.pk])}"' in html  # CSRF from the page's hx-headers
