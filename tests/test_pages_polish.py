"""What the screenshots showed (issue 16): the admin's list of examples, the API tokens on the
settings page, thumbnails in the history, the drop zone's hint on phones, and the words of a
description in its own language. The layouts themselves are measured in tests/test_browser_polish.py."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from describer import examples
from describer.admin import plain_lines
from describer.api.tokens import api_token_create
from describer.describing import Describe
from describer.models import Conversion, Example
from tests.example_files import write_example

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_ocr")]

INVOICE_RU = """# Согласование счёта

## Шаги
1. Проверить счёт (Бухгалтер)
2. Счёт верен? (Бухгалтер)
   - Если да: перейти к шагу 3.
   - Если нет: конец: Счёт отклонён.
3. Оплатить счёт (Казначейство)
   - Далее: конец: Счёт оплачен.
"""


# --- The admin's list of examples -------------------------------------------------------------------


def test_markdown_markers_are_taken_off_each_line():
    markdown = "# Order **handling**\n\n## Steps\n1. Take the [order](https://x.test)\n   - If no: `end`\n> note"

    assert plain_lines(markdown) == ["Order handling", "", "Steps", "Take the order", "If no: end", "note"]


def test_the_admin_list_shows_a_short_plain_excerpt_with_the_whole_text_as_its_title(staff, tmp_path):
    description = "# Order handling\n\n## Steps\n" + "".join(f"{n}. Check the order line number {n}\n" for n in range(1, 9))
    write_example(tmp_path / "in", "flow-en-orders", description=description)
    examples.import_folder(tmp_path / "in")

    page = staff.get(reverse("admin:describer_example_changelist")).content.decode()

    excerpt = re.search(r'<td class="field-excerpt"><span title="([^"]*)"[^>]*>([^<]*)</span>', page)
    assert excerpt, "no excerpt cell"
    title, text = excerpt.groups()
    assert text.startswith("Order handling · Check the order line number 1 · ") and text.endswith("…")
    assert len(text) <= 80 and "#" not in text and "Steps" not in text
    assert title.startswith("Order handling\nSteps\nCheck the order line number 1\n")
    assert title.endswith("Check the order line number 8")


def test_the_admin_list_has_one_column_for_type_and_language_and_a_short_date(staff, tmp_path):
    write_example(tmp_path / "in", "bpmn-ru-zakaz", description="# Заказ\n\n## Шаги\n1. Принять заказ\n")
    examples.import_folder(tmp_path / "in")
    Example.objects.update(embedding_error="cannot identify image file (the file is truncated): it ends early")

    page = staff.get(reverse("admin:describer_example_changelist")).content.decode()

    headers = re.findall(r'<th scope="col" class="[^"]*column-(\w+)', page)
    assert headers == ["list_thumbnail", "name", "excerpt", "type_and_language", "list_embedding_status", "updated"]
    assert '<td class="field-type_and_language">BPMN process, Russian</td>' in page
    assert re.search(r'<time datetime="[^"]+" title="\d{1,2} \w{3} \d{4}, \d\d:\d\d" style="white-space:nowrap">'
                     r"\d{1,2} \w{3} \d{4}</time>", page)  # fmt: skip
    assert 'title="cannot identify image file (the file is truncated): it ends early"' in page
    assert "failed: cannot identify image file (t…" in page
    example = Example.objects.get()  # the example's own page gives the whole reason
    change = staff.get(reverse("admin:describer_example_change", args=[example.pk])).content.decode()
    assert "failed: cannot identify image file (the file is truncated): it ends early</span>" in change


# --- API tokens on the settings page ------------------------------------------------------------------


def test_each_token_cell_is_labelled_for_the_card_layout(alice, user):
    api_token_create(user=user, name="laptop")

    page = alice.get(reverse("settings")).content.decode()

    for label in ("Token", "Created", "Last used", "Expires"):
        assert f'data-label="{label}"' in page
    assert '<td class="token-name">laptop</td>' in page


def test_a_new_token_is_in_its_own_box_and_the_example_command_in_a_block(alice):
    response = alice.post(reverse("token_create"), {"name": "laptop", "expires_in": "90"}, HTTP_HX_REQUEST="true")

    page = response.content.decode()
    assert re.search(r'<div class="new-token"><code id="new-token">ds_[^<]+</code> <button type="button" '
                     r'data-copy-target="#new-token">Copy</button></div>', page)  # fmt: skip
    assert re.search(r'<pre class="command"><code>curl -H "Authorization: Bearer ds_[^"]+" http://testserver/api/', page)


def test_the_password_link_is_below_the_heading_not_beside_it(alice):
    page = alice.get(reverse("settings")).content.decode()

    # .pagehead gives its first <div> a row of its own when the screen is narrow.
    assert re.search(r'<div class="pagehead">\s*<div><h1>Settings</h1></div>\s*<div class="actions">', page)


# --- History thumbnails -----------------------------------------------------------------------------


def test_a_text_row_has_a_placeholder_where_a_diagram_has_its_thumbnail(alice, make_conversion):
    diagram = make_conversion(title="Order chart")
    make_conversion(kind=Conversion.Kind.TEXT_TO_DIAGRAM, input_text="A then B", title="Text only")

    page = alice.get(reverse("history")).content.decode()

    assert f'<img src="{reverse("thumbnail", args=[diagram.pk])}" alt="" loading="lazy" width="96" height="64">' in page
    assert re.search(r'<td class="thumb"><span class="thumb-placeholder"><svg [^>]*aria-hidden="true".*?</svg>Text</span></td>',
                     page)  # fmt: skip


def test_a_diagram_row_without_its_image_says_so(alice, make_conversion):
    make_conversion(title="Lost", image=False)

    page = alice.get(reverse("history")).content.decode()

    assert '<td class="thumb"><span class="thumb-placeholder">No image</span></td>' in page


# --- The drop zone's hint -----------------------------------------------------------------------------


def test_the_drop_zone_has_a_hint_for_a_mouse_and_one_for_a_touch_screen(alice):
    page = alice.get(reverse("upload")).content.decode()

    assert '<span class="hint-fine-pointer">Drop PNG or JPEG images here, or paste one with Ctrl+V.</span>' in page
    assert '<span class="hint-coarse-pointer">Choose PNG or JPEG images.</span>' in page


# --- A description's words in its own language -----------------------------------------------------


def russian_description(make_conversion) -> Conversion:
    conversion = make_conversion(language="ru", title="Согласование счёта")
    fields, _ = Describe().result(conversion, INVOICE_RU)
    Conversion.objects.filter(pk=conversion.pk).update(**fields, status=Conversion.Status.DONE)
    return conversion


def branch_lines(page: str) -> list[str]:
    lists = re.findall(r'<ul class="branches">(.*?)</ul>', page, re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", "", item).split()) for html in lists for item in re.findall(r"<li>(.*?)</li>", html)]


def test_a_russian_description_shows_its_branches_in_russian_in_the_english_interface(alice, make_conversion):
    conversion = russian_description(make_conversion)

    page = alice.get(conversion.get_absolute_url()).content.decode()

    assert branch_lines(page) == ["Если да → шаг 3", "Если нет → конец: Счёт отклонён", "Далее → конец: Счёт оплачен"]
    assert "<h3>Steps</h3>" in page  # the interface itself stays English


def test_an_english_description_shows_its_branches_in_english_in_the_russian_interface(alice, make_conversion):
    conversion = make_conversion(language="en", title="Order")
    fields, _ = Describe().result(conversion, "# Order\n\n## Steps\n1. Paid?\n   - If no: end: Cancelled.\n2. Ship\n")
    Conversion.objects.filter(pk=conversion.pk).update(**fields, status=Conversion.Status.DONE)
    alice.cookies["django_language"] = "ru"

    page = alice.get(conversion.get_absolute_url()).content.decode()

    assert branch_lines(page)[0] == "If no → end: Cancelled"
    assert "<h3>Шаги</h3>" in page
