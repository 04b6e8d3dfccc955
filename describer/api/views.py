"""The endpoints of /api/v1/. Thin, like the pages: validate with the web's own
forms, call a service or a QuerySet, return a schema.

Every lookup goes through `_get_conversion_for_token`, so another user's id is
a 404 by construction. `request.auth` is the caller's ApiToken (see auth.py);
`request.user` (the session) is never used here.
"""

from __future__ import annotations

from uuid import UUID

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils.translation import gettext as _
from ninja import File, Form, Query, Router, Schema, Status, UploadedFile

from describer import exports, services
from describer.api.problems import ApiProblem, form_problem
from describer.api.ratelimit import HEADERS_SCHEMA, check_job_rate
from describer.api.schemas import (
    ConversionOut,
    ConversionPage,
    ListFilters,
    MermaidIn,
    MermaidVersionOut,
    Problem,
    RepairIn,
    TextIn,
    with_output_relations,
)
from describer.api.sse import event_stream
from describer.forms import HistoryFilterForm, MermaidForm, RepairForm, TextForm, UploadForm
from describer.models import Conversion, MermaidVersion

router = Router(tags=["conversions"])
API_CLIENT = MermaidVersion.ParseChecker.API_CLIENT


def problems(*codes: int) -> dict[int, type[Problem]]:
    return {code: Problem for code in codes}


def rate_limited(status: int) -> dict:
    """openapi_extra of an operation that counts against API_JOBS_PER_MINUTE: its headers."""
    retry_after = {"Retry-After": {"description": "Seconds until a job may be queued again.",
                                   "schema": {"type": "integer"}}}  # fmt: skip
    # int keys, as ninja's own responses have: the dicts are merged.
    too_many = {"headers": {**HEADERS_SCHEMA, **retry_after}}
    return {"responses": {status: {"headers": HEADERS_SCHEMA}, 429: too_many}}


def _get_conversion_for_token(request: HttpRequest, pk: UUID) -> Conversion:
    conversion = with_output_relations(Conversion.objects.owned_by(request.auth.user)).filter(pk=pk).first()
    if conversion is None:
        raise Http404(_("You have no conversion with the id %(id)s. List yours with GET /api/v1/conversions.")
                      % {"id": pk})
    return conversion


def _refuse_unknown_parameters(request: HttpRequest, schema: type[Schema]) -> None:
    """A misspelt filter (`?staus=done`) would otherwise be ignored without a word."""
    known = set(schema.model_fields)
    unknown = sorted(set(request.GET) - known)
    if unknown:
        message = _("Unknown parameter; the parameters are %(known)s.") % {"known": ", ".join(schema.model_fields)}
        errors = {name: [message] for name in unknown}
        raise ApiProblem(422, " ".join(f"{name}: {message}" for name in unknown), errors=errors)


def _created(request: HttpRequest, response: HttpResponse, conversion: Conversion) -> Status:
    response["Location"] = request.build_absolute_uri(reverse("api:conversion", args=[conversion.pk]))
    return Status(201, conversion)


@router.post(
    "/conversions/diagram-to-text",
    response={201: ConversionOut, **problems(400, 401, 413, 422, 429)},
    summary="Describe a diagram (diagram → text)",
    openapi_extra=rate_limited(201),
)
def create_diagram_to_text(
    request: HttpRequest,
    response: HttpResponse,
    image: File[UploadedFile],
    language: Form[Conversion.Language] = Conversion.Language.AUTO,
):
    """Upload a PNG or JPEG diagram (multipart/form-data) and queue its description. The image is
    checked as on the upload page: type, size (UPLOAD_MAX_BYTES, 10 MB by default; larger files get
    413) and pixels (UPLOAD_MAX_PIXELS). Follow the job with its `events_url`, or poll `url`."""
    check_job_rate(request)
    form = UploadForm({"language": language}, {"image": image})
    if not form.is_valid():
        raise form_problem(form, status=413 if image.size > settings.UPLOAD_MAX_BYTES else 422)
    conversion = services.conversion_create_from_image(
        owner=request.auth.user,
        image=form.normalised,
        original_filename=image.name or "",
        language=form.cleaned_data["language"],
    )
    return _created(request, response, conversion)


@router.post(
    "/conversions/text-to-diagram",
    response={201: ConversionOut, **problems(400, 401, 413, 415, 422, 429)},
    summary="Draw a process (text → diagram)",
    openapi_extra=rate_limited(201),
)
def create_text_to_diagram(request: HttpRequest, response: HttpResponse, body: TextIn):
    """Queue a Mermaid flowchart for a process described in words (JSON: `{"text": "…"}`, sent with
    Content-Type: application/json; another type gets 415, a lone UTF-16 surrogate in the text 400)."""
    check_job_rate(request)
    form = TextForm({"text": body.text})
    if not form.is_valid():
        raise form_problem(form)
    conversion = services.conversion_create_from_text(owner=request.auth.user, text=form.cleaned_data["text"])
    return _created(request, response, conversion)


@router.get("/conversions", response={200: ConversionPage, **problems(401, 422)}, summary="List your conversions")
def list_conversions(request: HttpRequest, filters: Query[ListFilters]):
    """Newest first, with the same filters as the history page."""
    _refuse_unknown_parameters(request, ListFilters)
    form = HistoryFilterForm({"kind": filters.kind or "", "status": filters.status or "", "q": filters.q})
    if not form.is_valid():
        raise form_problem(form)
    conversions = form.filter(Conversion.objects.owned_by(request.auth.user))
    size = filters.page_size or settings.HISTORY_PAGE_SIZE
    start = (filters.page - 1) * size
    count = conversions.count()
    items = list(with_output_relations(conversions)[start : start + size])

    def page_url(number: int) -> str:
        query = request.GET.copy()
        query["page"] = str(number)
        return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")

    return {
        "count": count,
        "page": filters.page,
        "page_size": size,
        "next": page_url(filters.page + 1) if start + size < count else None,
        "previous": page_url(filters.page - 1) if filters.page > 1 else None,
        "items": items,
    }


@router.get(
    "/conversions/{uuid:conversion_id}",
    response={200: ConversionOut, **problems(401, 404)},
    url_name="conversion",
    summary="Read one conversion",
)
def read_conversion(request: HttpRequest, conversion_id: UUID):
    """Status, queue position, stage, the partial text while running, the final outputs, timings and
    the examples used."""
    return _get_conversion_for_token(request, conversion_id)


@router.delete(
    "/conversions/{uuid:conversion_id}",
    response={204: None, **problems(401, 404)},
    summary="Delete one conversion",
)
def delete_conversion(request: HttpRequest, conversion_id: UUID):
    """Delete the conversion and its uploaded image, as the Delete button of the site does."""
    services.conversion_delete(_get_conversion_for_token(request, conversion_id))
    return Status(204, None)


EXPORT_DESCRIPTION = """The conversion as a file, rendered from its process graph: `format=` one of markdown, json,
mermaid, bpmn, svg, png — or, without `format`, by the Accept header (text/markdown, application/json,
text/vnd.mermaid, application/bpmn+xml, image/svg+xml, image/png). 404 while there is nothing to export yet;
406 for a format it does not know."""


@router.get(
    "/conversions/{uuid:conversion_id}/export",
    response=problems(401, 404, 406),  # the 200 (a file of one of several types) is in openapi_extra
    summary="Download a conversion (Markdown, JSON, Mermaid, BPMN, SVG, PNG)",
    description=EXPORT_DESCRIPTION,
    openapi_extra={"responses": {"200": {"description": "The file.", "content": {
        media: {"schema": {"type": "string", "format": "binary"}} for media in exports.MEDIA_TYPES}}}},
)
def export_conversion(request: HttpRequest, conversion_id: UUID, format: str | None = None):  # noqa: A002
    conversion = _get_conversion_for_token(request, conversion_id)
    fmt = format or _negotiated_format(request.headers.get("Accept", ""))
    if fmt not in exports.FORMATS:
        raise ApiProblem(406, _("Unknown format; the formats are %(formats)s.") % {"formats": ", ".join(exports.FORMATS)})
    try:
        file = exports.export(conversion, fmt)
    except exports.NotAvailable as error:
        raise ApiProblem(404, str(error)) from None
    return file.response()


def _negotiated_format(accept: str) -> str:
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in exports.MEDIA_TYPES:
            return exports.MEDIA_TYPES[media]
    return "json" if not accept.strip() or "*/*" in accept else ""

@router.post(
    "/conversions/{uuid:conversion_id}/cancel",
    response={200: ConversionOut, **problems(401, 404, 409)},
    summary="Cancel a queued or running conversion",
)
def cancel_conversion(request: HttpRequest, conversion_id: UUID):
    """A queued conversion is cancelled at once; a running one stops at its worker's next decode step
    after the worker sees it (within DESCRIBER_STREAM_INTERVAL_MS), while the rest of its batch goes
    on. The status becomes `cancelled`. A conversion that has already ended gets 409."""
    conversion = _get_conversion_for_token(request, conversion_id)
    try:
        services.conversion_cancel(conversion)
    except services.ConversionStateError as error:
        raise ApiProblem(409, str(error)) from None
    return Status(200, _get_conversion_for_token(request, conversion_id))


@router.post(
    "/conversions/{uuid:conversion_id}/retry",
    response={202: ConversionOut, **problems(401, 404, 409, 429)},
    summary="Queue a failed or cancelled conversion again",
    openapi_extra=rate_limited(202),
)
def retry_conversion(request: HttpRequest, conversion_id: UUID):
    """As the page's Retry button: the conversion runs again from the start with the same input, its
    old outputs and timings cleared. Only a failed or cancelled one (else 409). Counts as a job for the
    rate limit."""
    conversion = _get_conversion_for_token(request, conversion_id)
    check_job_rate(request)
    if not services.conversion_retry(conversion):
        raise ApiProblem(409, _("Only a failed or cancelled conversion can be retried; this one is %(status)s.")
                         % {"status": conversion.status})
    return Status(202, _get_conversion_for_token(request, conversion_id))


def _get_drawing_for_token(request: HttpRequest, pk: UUID) -> Conversion:
    conversion = _get_conversion_for_token(request, pk)
    if conversion.kind != Conversion.Kind.TEXT_TO_DIAGRAM:
        raise ApiProblem(409, _("This is a diagram → text conversion; only text → diagram conversions have "
                                "Mermaid code and versions."))
    return conversion


def _mermaid_form(form_class: type[MermaidForm], body: MermaidIn | RepairIn) -> MermaidForm:
    form = form_class({"code": body.code, "parse_error": body.parse_error})
    if not form.is_valid():
        raise form_problem(form)
    return form


@router.get(
    "/conversions/{uuid:conversion_id}/versions",
    response={200: list[MermaidVersionOut], **problems(401, 404, 409)},
    summary="List the Mermaid versions of a drawing",
)
def list_versions(request: HttpRequest, conversion_id: UUID):
    """Every saved state of a text → diagram conversion's Mermaid code, newest (the current one)
    first, with whether each parses and what checked it. 409 for a diagram → text conversion."""
    return _get_drawing_for_token(request, conversion_id).mermaid_versions.all()


@router.post(
    "/conversions/{uuid:conversion_id}/versions",
    response={200: MermaidVersionOut, 201: MermaidVersionOut, **problems(400, 401, 404, 409, 415, 422)},
    summary="Save Mermaid code as a new version",
)
def save_version(request: HttpRequest, conversion_id: UUID, body: MermaidIn):
    """Your own code becomes the current version and the result (also after a failed repair), as
    "Save as a new version" does in the editor: 201. The current code again: 200 with the current
    version (a `parse_error` sent with it is still kept). 409 while the model is working on it."""
    conversion = _get_drawing_for_token(request, conversion_id)
    form = _mermaid_form(MermaidForm, body)
    try:
        version = services.mermaid_save(conversion, **form.cleaned_data, checked_by=API_CLIENT)
    except services.ConversionStateError as error:
        raise ApiProblem(409, str(error)) from None
    if version is None:
        return Status(200, conversion.current_mermaid_version())
    return Status(201, version)


@router.post(
    "/conversions/{uuid:conversion_id}/versions/{int:number}/restore",
    response={201: MermaidVersionOut, **problems(401, 404, 409)},
    summary="Make an earlier Mermaid version current again",
)
def restore_version(request: HttpRequest, conversion_id: UUID, number: int):
    """The version's code becomes current as a new version (origin `restore`; the history only grows),
    with what is known of whether it parses. 404 for a number it does not have; 409 when its code is
    the current code already, or while the model is working on it."""
    conversion = _get_drawing_for_token(request, conversion_id)
    try:
        version = services.mermaid_restore(conversion, number)
    except MermaidVersion.DoesNotExist:
        message = _("This conversion has no version %(number)s. List its versions with GET "
                    "/api/v1/conversions/%(id)s/versions.") % {"number": number, "id": conversion.pk}
        raise ApiProblem(404, message) from None
    except services.ConversionStateError as error:
        raise ApiProblem(409, str(error)) from None
    return Status(201, version)


@router.post(
    "/conversions/{uuid:conversion_id}/repair",
    response={202: ConversionOut, **problems(400, 401, 404, 409, 415, 422, 429)},
    summary="Send Mermaid code that does not parse back to the model",
    openapi_extra=rate_limited(202),
)
def repair_conversion(request: HttpRequest, conversion_id: UUID, body: RepairIn):
    """The conversion is queued again, and the model answers the code and the parser's message with a
    repaired version (origin `repair`; follow it with `events_url`). The code is kept as a version first
    when it is not the current one. At most DESCRIBER_MAX_REPAIRS repairs per conversion; 409 after
    them, or while the model is working on it. Counts as a job for the rate limit."""
    conversion = _get_drawing_for_token(request, conversion_id)
    check_job_rate(request)
    form = _mermaid_form(RepairForm, body)
    try:
        services.conversion_request_repair(
            conversion, code=form.cleaned_data["code"], error=form.cleaned_data["parse_error"], checked_by=API_CLIENT
        )
    except services.ConversionStateError as error:
        raise ApiProblem(409, str(error)) from None
    return Status(202, _get_conversion_for_token(request, conversion_id))


EVENTS_DESCRIPTION = """Follow a conversion live as Server-Sent Events (`text/event-stream`), the same
progress the web page shows. Events, each with one line of JSON data:

- `state`: the conversion as `GET /conversions/{id}` returns it; first, and again when the queue
  position changes;
- `progress`: `{"stage", "delta", "reset", "tokens", "elapsed"}` — `delta` is the text written since
  the last event (append it); `reset` is true when the text started over (a restarted job: drop
  what you have first). The text so far starts as the `output_raw` of the latest `state`;
- `finished`: the final conversion (done, failed or cancelled), its `output_raw` the whole text;
  then the stream ends;
- `deleted`: the conversion was deleted meanwhile; then the stream ends.

Lines starting with `:` are keep-alive comments (every 15 s). A finished conversion gets `state`
and `finished` at once. With curl: `curl -N -H "Authorization: Bearer …" URL`."""


@router.get(
    "/conversions/{uuid:conversion_id}/events",
    response={200: None, **problems(401, 404)},
    url_name="conversion_events",
    summary="Follow one conversion live (Server-Sent Events)",
    description=EVENTS_DESCRIPTION,
    openapi_extra={"responses": {200: {
        "description": "A stream of Server-Sent Events (see above).",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }}},
)
async def follow_conversion(request: HttpRequest, conversion_id: UUID):
    conversion = await database_sync_to_async(_get_conversion_for_token)(request, conversion_id)
    response = StreamingHttpResponse(event_stream(request, conversion), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response
