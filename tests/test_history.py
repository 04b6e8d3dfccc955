"""The history: the user's own conversions, newest first, paginated, filtered and
searched with htmx; delete with a confirmation in the page's dialog; a detail page each."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from describer.models import Conversion

DONE, FAILED, QUEUED = Conversion.Status.DONE, Conversion.Status.FAILED, Conversion.Status.QUEUED
TEXT = Conversion.Kind.TEXT_TO_DIAGRAM


@pytest.fixture
def timeline(make_conversion):
    """Conversions created a minute apart, in the order given (the last is the newest)."""
    start = timezone.now() - timedelta(hours=1)

    def make(*specs: dict) -> list[Conversion]:
        return [make_conversion(created_at=start + timedelta(minutes=i), **spec) for i, spec in enumerate(specs)]

    return make


def titles(response) -> list[str]:
    return [conversion.title for conversion in response.context["page"].object_list]


def test_it_lists_only_my_conversions_newest_first(alice, other_user, timeline, make_conversion):
    timeline({"title": "First"}, {"title": "Second"}, {"title": "Third"})
    make_conversion(other_user, title="Mallory's secret")

    response = alice.get(reverse("history"))

    assert response.status_code == 200
    assert titles(response) == ["Third", "Second", "First"]
    assert "Mallory" not in response.content.decode()


def test_it_says_so_when_there_is_nothing_yet(alice):
    response = alice.get(reverse("history"))

    assert "No conversions yet" in response.content.decode()


def test_it_paginates_by_the_configured_page_size(alice, settings, timeline):
    settings.HISTORY_PAGE_SIZE = 2
    timeline(*({"title": f"Flow {i}"} for i in range(5)))

    first = alice.get(reverse("history"))
    last = alice.get(reverse("history"), {"page": 3})

    assert titles(first) == ["Flow 4", "Flow 3"]
    assert titles(last) == ["Flow 0"]
    assert "Page 1 of 3" in first.content.decode()
    assert "page=2" in first.content.decode()
    assert titles(alice.get(reverse("history"), {"page": 99})) == ["Flow 0"]
    assert titles(alice.get(reverse("history"), {"page": "x"})) == ["Flow 4", "Flow 3"]


def test_pages_keep_the_filters(alice, settings, timeline):
    settings.HISTORY_PAGE_SIZE = 1
    timeline({"title": "A", "status": DONE}, {"title": "B", "status": DONE}, {"title": "C", "status": FAILED})

    response = alice.get(reverse("history"), {"status": "done"})

    assert titles(response) == ["B"]
    assert "?status=done&page=2" in response.content.decode()


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        pytest.param({"kind": "text_to_diagram"}, ["Invoice text"], id="kind"),
        pytest.param({"kind": "diagram_to_text"}, ["Hiring chart", "Order chart"], id="other-kind"),
        pytest.param({"status": "failed"}, ["Hiring chart"], id="status"),
        pytest.param({"q": "ORDER"}, ["Order chart"], id="search-title-any-case"),
        pytest.param({"q": "approve the invoice"}, ["Invoice text"], id="search-input-text"),
        pytest.param({"q": "interview"}, ["Hiring chart"], id="search-output-text"),
        pytest.param({"q": "scan_0042"}, ["Order chart"], id="search-file-name"),
        pytest.param({"q": "chart", "status": "done"}, ["Order chart"], id="search-and-status"),
        pytest.param({"q": "nothing like this"}, [], id="no-match"),
        pytest.param({"status": "bogus"}, ["Invoice text", "Hiring chart", "Order chart"], id="invalid-filter-ignored"),
    ],
)
def test_it_filters_by_kind_status_and_text(alice, timeline, filters, expected):
    timeline(
        {"title": "Order chart", "status": DONE, "original_filename": "scan_0042.png"},
        {"title": "Hiring chart", "status": FAILED, "output_text": "1. Interview the candidate"},
        {"title": "Invoice text", "kind": TEXT, "status": QUEUED, "input_text": "Approve the invoice, then pay."},
    )

    response = alice.get(reverse("history"), filters)

    assert titles(response) == expected


def test_it_says_when_filters_match_nothing(alice, timeline):
    timeline({"title": "Order chart"})

    response = alice.get(reverse("history"), {"q": "zebra"})

    assert "No conversions match these filters" in response.content.decode()


def test_an_htmx_request_gets_only_the_results(alice, timeline):
    timeline({"title": "Order chart", "status": DONE}, {"title": "Hiring chart", "status": FAILED})

    response = alice.get(reverse("history"), {"status": "done"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and "<form" not in html
    assert '<table class="history conversions">' in html
    assert "Order chart" in html and "Hiring chart" not in html
    assert "HX-Request" in response["Vary"]


def test_an_htmx_history_restore_gets_the_whole_page(alice):
    response = alice.get(reverse("history"), HTTP_HX_REQUEST="true", HTTP_HX_HISTORY_RESTORE_REQUEST="true")

    assert "<html" in response.content.decode()


def test_the_page_wires_filters_and_the_dialog_for_htmx(alice, make_conversion):
    conversion = make_conversion(title="Order chart")

    html = alice.get(reverse("history")).content.decode()

    assert 'hx-get="/" hx-target="#history-results"' in html
    assert '<div id="history-results">' in html
    assert '<dialog id="modal"></dialog>' in html
    delete_url = reverse("delete", args=[conversion.pk])
    assert f'hx-get="{delete_url}?from=history" hx-target="#modal"' in html
    assert 'src="/static/vendor/htmx.min.js"' in html


def test_rows_show_thumbnails_of_diagrams(alice, make_conversion):
    diagram = make_conversion(title="Order chart")
    make_conversion(kind=TEXT, input_text="A then B", title="Text only")

    html = alice.get(reverse("history")).content.decode()

    assert html.count('<td class="thumb"><img') == 1
    assert f'src="{reverse("thumbnail", args=[diagram.pk])}"' in html
    thumbnail = alice.get(reverse("thumbnail", args=[diagram.pk]))
    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"].startswith("image/")


def test_the_delete_confirmation_loads_into_the_dialog(alice, make_conversion):
    conversion = make_conversion(title="Order chart")
    url = reverse("delete", args=[conversion.pk])

    response = alice.get(url, {"from": "history"}, HTTP_HX_REQUEST="true")

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert "Delete “Order chart”" in html
    assert f'hx-post="{url}" hx-target="#row-{conversion.pk}" hx-swap="outerHTML"' in html
    assert 'name="from" value="history"' in html
    assert Conversion.objects.filter(pk=conversion.pk).exists()


def test_deleting_from_the_history_removes_the_row_and_the_files(
    alice, make_conversion, media_root, django_capture_on_commit_callbacks
):
    conversion = make_conversion(title="Order chart")
    files = [Path(conversion.input_image.path), Path(conversion.input_thumbnail.path)]
    assert all(path.exists() for path in files)

    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post(reverse("delete", args=[conversion.pk]), {"from": "history"}, HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert response.content == b""  # swapped for the row: the row disappears
    assert not Conversion.objects.filter(pk=conversion.pk).exists()
    assert not any(path.exists() for path in files)
    assert "was deleted" not in alice.get(reverse("history")).content.decode()  # no stale message later


def test_deleting_without_htmx_confirms_then_returns_to_the_history(alice, make_conversion):
    conversion = make_conversion(title="Order chart")
    url = reverse("delete", args=[conversion.pk])

    page = alice.get(url)
    assert "<html" in page.content.decode() and "Delete “Order chart”" in page.content.decode()
    assert Conversion.objects.filter(pk=conversion.pk).exists()

    response = alice.post(url, follow=True)

    assert response.redirect_chain == [(reverse("history"), 302)]
    assert "The conversion was deleted." in response.content.decode()
    assert not Conversion.objects.filter(pk=conversion.pk).exists()


def test_deleting_from_the_detail_page_with_htmx_navigates_to_the_history(alice, make_conversion):
    conversion = make_conversion(title="Order chart")

    response = alice.post(reverse("delete", args=[conversion.pk]), HTTP_HX_REQUEST="true")

    assert response["HX-Redirect"] == reverse("history")
    assert not Conversion.objects.filter(pk=conversion.pk).exists()


def test_the_detail_page_shows_a_queued_conversion(alice, make_conversion):
    conversion = make_conversion(title="Order chart", original_filename="scan_0042.png")

    response = alice.get(conversion.get_absolute_url())

    html = response.content.decode()
    assert response.status_code == 200
    assert "<h1>Order chart</h1>" in html
    assert "scan_0042.png" in html
    assert f'src="{reverse("image", args=[conversion.pk])}"' in html
    assert "Waiting in the queue" in html
    assert f'href="{reverse("delete", args=[conversion.pk])}"' in html


def test_the_detail_page_of_a_text_conversion_shows_the_text(alice, make_conversion):
    conversion = make_conversion(kind=TEXT, input_text="Receive the order, then ship it.", title="Shipping")

    html = alice.get(conversion.get_absolute_url()).content.decode()

    assert "Receive the order, then ship it." in html


def test_the_cached_history_shows_a_status_change_made_by_the_worker(alice, make_conversion):
    conversion = make_conversion(title="Cached row")
    assert "Queued" in alice.get("/").content.decode()

    # The worker changes status with QuerySet.update(): no signals, no save().
    Conversion.objects.filter(pk=conversion.pk).update(status=Conversion.Status.DONE)

    page = alice.get("/").content.decode()
    assert "Done" in page and "badge queued" not in page


def test_the_cached_history_shows_new_and_deleted_conversions(alice, make_conversion):
    first = make_conversion(title="First row")
    assert "First row" in alice.get("/").content.decode()
    make_conversion(title="Second row")
    first.delete()

    page = alice.get("/").content.decode()
    assert "Second row" in page and "First row" not in page
