"""Pages of diagramsite. Thin: validate, call a service or a QuerySet, render.

Every object lookup goes through `_get_conversion_for_user`, so another user's
id is a 404 by construction.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect

from describer import examples, exports, services
from describer.forms import HistoryFilterForm, MermaidForm, PromoteForm, RepairForm, SignupForm, TextForm, UploadForm
from describer.models import Conversion, Example, MermaidVersion


def _get_conversion_for_user(request: HttpRequest, pk) -> Conversion:
    return get_object_or_404(Conversion, pk=pk, owner=request.user)


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    """htmx requests follow redirects themselves; tell them to navigate instead."""
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def _wants_fragment(request: HttpRequest) -> bool:
    """htmx swaps a fragment in, except for boosted links and history restores (they want the page)."""
    return bool(request.htmx) and not request.htmx.boosted and not request.htmx.history_restore_request


@vary_on_headers("HX-Request")  # the page and its fragment share a URL; caches must keep them apart
def history(request: HttpRequest) -> HttpResponse:
    filters = HistoryFilterForm(request.GET)
    results = _history_results(request, filters)
    if _wants_fragment(request):
        return HttpResponse(results)
    return render(request, "describer/history.html", {"filters": filters, "results": results})


HISTORY_CACHE_SECONDS = 600


def _history_results(request: HttpRequest, filters: HistoryFilterForm) -> str:
    """The rendered results, cached until one of the user's conversions changes state.

    Rendering the rows is most of the page's cost; the key holds a summary of the user's
    conversions (one aggregate query), so any new, deleted or changed conversion misses."""
    mine = Conversion.objects.owned_by(request.user)
    key = "history:%s:%s:%s:%s" % (
        request.user.pk,
        translation.get_language(),
        hashlib.sha256(request.GET.urlencode().encode()).hexdigest()[:16],
        mine.history_version(),
    )
    results = cache.get(key)
    if results is None:
        # source and derived: the round-trip links of each row ("drawn from …", "drawn as …").
        conversions = filters.filter(mine.select_related("source").prefetch_related("derived"))
        page = Paginator(conversions, settings.HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
        query = request.GET.copy()
        query.pop("page", None)
        context = {"page": page, "query": query.urlencode()}
        results = render_to_string("describer/_history_results.html", context, request)
        cache.set(key, results, HISTORY_CACHE_SECONDS)
    # Our own template's output (autoescaped when rendered), not user or model text.
    return mark_safe(results)  # noqa: S308


@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Each image sent becomes its own conversion, all or none; one goes to its page, several to
    the history, where they are listed together."""
    form = UploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        conversions = services.conversions_create_from_images(
            owner=request.user, images=form.normalised_images, language=form.cleaned_data["language"]
        )
        if len(conversions) == 1:
            return _redirect(request, conversions[0].get_absolute_url())
        names = ", ".join(conversion.original_filename for conversion in conversions)
        messages.success(request, _("Each image is queued as its own conversion: %(names)s.") % {"names": names})
        return _redirect(request, reverse("history"))
    status = 400 if form.is_bound else 200
    template = "describer/_upload_form.html" if request.htmx else "describer/upload.html"
    return render(request, template, {"form": form}, status=status)


@require_http_methods(["GET", "POST"])
def text_new(request: HttpRequest) -> HttpResponse:
    form = TextForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        conversion = services.conversion_create_from_text(owner=request.user, text=form.cleaned_data["text"])
        return _redirect(request, conversion.get_absolute_url())
    status = 400 if form.is_bound else 200
    template = "describer/_text_form.html" if request.htmx else "describer/text_new.html"
    return render(request, template, {"form": form}, status=status)


def detail(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    return render(request, "describer/detail.html", {"conversion": conversion})


@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    if request.method == "POST":
        services.conversion_delete(conversion)
        if request.htmx and request.POST.get("from") == "history":
            return HttpResponse("")  # the row swaps itself out; no message left for a later page
        messages.success(request, _("The conversion was deleted."))
        return _redirect(request, reverse("history"))
    template = "describer/_delete_confirm.html" if request.htmx else "describer/delete.html"
    return render(request, template, {"conversion": conversion})


def _file_response(field, *, filename: str | None = None) -> FileResponse:
    if not field:
        raise Http404("No such file.")
    response = FileResponse(field.open("rb"), filename=filename)
    response["Cache-Control"] = "private, max-age=3600"
    return response


def image(request: HttpRequest, pk) -> FileResponse:
    conversion = _get_conversion_for_user(request, pk)
    return _file_response(conversion.input_image)


def thumbnail(request: HttpRequest, pk) -> FileResponse:
    conversion = _get_conversion_for_user(request, pk)
    return _file_response(conversion.input_thumbnail or conversion.input_image)


def example_image(request: HttpRequest, pk: int) -> FileResponse:
    """Curated examples are shared with every signed-in user (they are the service's own data)."""
    example = get_object_or_404(Example, pk=pk)
    return _file_response(example.image)


@require_POST
def promote_example(request: HttpRequest, pk) -> HttpResponse:
    """Staff save a finished result as a retrieval example, with the description as edited."""
    conversion = _get_conversion_for_user(request, pk)  # another user's: 404, as for every conversion URL
    if not request.user.is_staff:
        raise PermissionDenied
    form = PromoteForm(request.POST)
    if not form.is_valid():
        return render(request, "describer/detail.html", {"conversion": conversion, "promote_form": form}, status=400)
    try:
        example = examples.example_from_conversion(conversion, **form.cleaned_data)
    except examples.PromotionError as error:
        messages.error(request, str(error))
        return _redirect(request, conversion.get_absolute_url())
    notice = _("Saved as the example “%(name)s”; the worker embeds it shortly.")
    messages.success(request, notice % {"name": example.name})
    return _redirect(request, reverse("admin:describer_example_change", args=[example.pk]))


def download_markdown(request: HttpRequest, pk) -> HttpResponse:
    return _download(_get_conversion_for_user(request, pk), "markdown")


@login_not_required
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if not settings.SIGNUP_ENABLED:
        raise Http404("Sign-up is disabled; ask an administrator for an account.")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("history")
    return render(request, "registration/signup.html", {"form": form})


@require_POST
def retry(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    services.conversion_retry(conversion)
    return _redirect(request, conversion.get_absolute_url())


@require_POST
def cancel(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    try:
        services.conversion_cancel(conversion)
    except services.ConversionStateError as error:
        messages.info(request, str(error))
    return _redirect(request, conversion.get_absolute_url())


# --- Text → diagram: the Mermaid editor, repairs, export, the round trip ----------------


def _form_error(form) -> str:
    return next(iter(form.errors.values()))[0]


@require_POST
def mermaid_save(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    form = MermaidForm(request.POST)
    try:
        if not form.is_valid():
            raise services.ConversionStateError(_form_error(form))
        version = services.mermaid_save(conversion, **form.cleaned_data)
    except services.ConversionStateError as error:
        return _saved(request, conversion, error=str(error))
    notice = _("Saved as version %(number)s.") % {"number": version.number} if version else _("No changes to save.")
    return _saved(request, conversion, notice=notice)


def _saved(request: HttpRequest, conversion: Conversion, *, notice: str = "", error: str = "") -> HttpResponse:
    """htmx gets the version list back with the outcome; a plain form post, a message and the page."""
    if not request.htmx:
        messages.add_message(request, messages.ERROR if error else messages.SUCCESS, error or notice)
        return redirect(conversion.get_absolute_url())
    context = {"conversion": conversion, "notice": notice, "save_error": error}
    return render(request, "describer/_diagram_versions.html", context, status=400 if error else 200)


@require_POST
def mermaid_parse_report(request: HttpRequest, pk) -> HttpResponse:
    """The editor says whether the version it drew parses (POST version, code, parse_error), so
    versions no one has saved through the editor, such as repairs, get their badge too."""
    conversion = _get_conversion_for_user(request, pk)
    form = MermaidForm(request.POST)
    number = request.POST.get("version", "")
    if not form.is_valid() or not number.isdigit():
        return HttpResponse(status=400)
    services.mermaid_version_report_parse(
        conversion, number=int(number), code=form.cleaned_data["code"], parse_error=form.cleaned_data["parse_error"]
    )
    return render(request, "describer/_diagram_versions.html", {"conversion": conversion})


@require_POST
def mermaid_restore(request: HttpRequest, pk) -> HttpResponse:
    """Make an earlier version (POST `version`) current; htmx gets the whole editor back."""
    conversion = _get_conversion_for_user(request, pk)
    number = request.POST.get("version", "")
    try:
        version = services.mermaid_restore(conversion, int(number) if number.isdigit() else 0)
    except MermaidVersion.DoesNotExist:
        raise Http404("No such version.") from None
    except services.ConversionStateError as error:
        messages.error(request, str(error))
        return _redirect(request, conversion.get_absolute_url())
    if not request.htmx:
        return redirect(conversion.get_absolute_url())
    notice = _("Version %(old)s restored as version %(new)s.") % {"old": number, "new": version.number}
    return render(request, "describer/_diagram.html", {"conversion": conversion, "notice": notice})


@require_POST
def repair(request: HttpRequest, pk) -> HttpResponse:
    """Send code that does not parse, with the parser's message, back to the model."""
    conversion = _get_conversion_for_user(request, pk)
    form = RepairForm(request.POST)
    try:
        if not form.is_valid():
            raise services.ConversionStateError(_form_error(form))
        services.conversion_request_repair(
            conversion, code=form.cleaned_data["code"], error=form.cleaned_data["parse_error"]
        )
    except services.ConversionStateError as error:
        messages.error(request, str(error))
    return _redirect(request, conversion.get_absolute_url())


def download_mermaid(request: HttpRequest, pk) -> HttpResponse:
    conversion = _get_conversion_for_user(request, pk)
    if not conversion.output_mermaid:  # the drawing's own code; a description's is under download/
        raise Http404("This conversion has no Mermaid code yet.")
    return _download(conversion, "mermaid")


def download(request: HttpRequest, pk) -> HttpResponse:
    """The conversion as a file: ?format=markdown, json, mermaid, bpmn, svg or png (describer/exports.py)."""
    conversion = _get_conversion_for_user(request, pk)
    return _download(conversion, request.GET.get("format") or exports.default_format(conversion))


def _download(conversion: Conversion, fmt: str) -> HttpResponse:
    try:
        file = exports.export(conversion, fmt)
    except KeyError:
        raise Http404(f"No such format; the formats are {', '.join(exports.FORMATS)}.") from None
    except exports.NotAvailable as error:
        raise Http404(str(error)) from None
    return file.response()


@require_POST
def edit_as_mermaid(request: HttpRequest, pk) -> HttpResponse:
    """A description's graph in the Mermaid editor, at once (no model pass)."""
    source = _get_conversion_for_user(request, pk)
    try:
        drawing = services.conversion_edit_as_mermaid(source)
    except services.ConversionStateError as error:
        messages.error(request, str(error))
        return _redirect(request, source.get_absolute_url())
    return _redirect(request, drawing.get_absolute_url())


@require_POST
def draw(request: HttpRequest, pk) -> HttpResponse:
    """The round trip: draw a finished description as a new text → diagram conversion."""
    source = _get_conversion_for_user(request, pk)
    try:
        drawing = services.conversion_draw(source)
    except services.ConversionStateError as error:
        messages.error(request, str(error))
        return _redirect(request, source.get_absolute_url())
    return _redirect(request, drawing.get_absolute_url())
