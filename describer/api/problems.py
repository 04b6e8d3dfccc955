"""Every error of the API as RFC 9457 problem details (`application/problem+json`).

Views raise `ApiProblem`; ninja's own exceptions (validation, authentication,
unreadable bodies) and anything unexpected are turned into the same shape by
the handlers that `install_handlers` registers. URLs that ninja answers outside
its operations (an unknown address, a method the address does not take) get the
same treatment in describer/api/urls.py.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation, TooManyFieldsSent
from django.http import Http404, HttpRequest, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext as _
from ninja.errors import AuthenticationError, HttpError, ValidationError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
# Where ninja reads parameters from; the first element of a validation error's `loc`.
PARAMETER_SOURCES = {"body", "query", "path", "form", "file", "header", "cookie"}

# Text fields the site's forms check refuse NUL (Django's ProhibitNullCharactersValidator);
# the schema says so, so that clients (and schemathesis) know it before they send one.
NO_NUL = r"^[^\x00]*$"


def titles() -> dict[int, str]:
    # A function, not a constant: the titles follow the request's language.
    return {
        400: _("Bad request"),
        401: _("Not authenticated"),
        404: _("Not found"),
        405: _("Method not allowed"),
        409: _("Conflict"),
        413: _("Content too large"),
        415: _("Unsupported media type"),
        422: _("Invalid input"),
        429: _("Too many requests"),
        500: _("Server error"),
    }


class ApiProblem(Exception):
    """An error the caller can act on; `detail` says what was wrong and what to do."""

    def __init__(self, status: int, detail: str, *, errors: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def problem_response(request: HttpRequest, problem: ApiProblem) -> JsonResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": titles().get(problem.status, _("Error")),
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.path,
    }
    if problem.errors:
        body["errors"] = problem.errors
    response = JsonResponse(body, status=problem.status, content_type=PROBLEM_MEDIA_TYPE,
                            json_dumps_params={"ensure_ascii": False})
    for name, value in problem.headers.items():
        response[name] = value
    return response


def form_problem(form, *, status: int = 422) -> ApiProblem:
    """A Django form's errors, field by field, with the same messages the web pages show."""
    errors = {field: [str(message) for message in messages] for field, messages in form.errors.items()}
    detail = " ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
    return ApiProblem(status, detail, errors=errors)


def not_authenticated() -> ApiProblem:
    return ApiProblem(
        401,
        _("Send your API token in the Authorization header, as “Authorization: Bearer <token>”. "
          "Create a token on your settings page (/settings/)."),
        headers={"WWW-Authenticate": 'Bearer realm="diagramsite"'},
    )


def _field_name(loc: tuple) -> str:
    """("body", "body", "text") → "text"; ("query", "page") → "page"; ("file", "image") → "image"."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in PARAMETER_SOURCES:
        parts = parts[1:]
    if loc and loc[0] == "body" and len(parts) > 1:
        parts = parts[1:]  # the name of the view's body argument says nothing to the caller
    return ".".join(parts) or "body"


def _validation_message(error: dict) -> str:
    if error.get("type") == "string_pattern_mismatch" and error.get("ctx", {}).get("pattern") == NO_NUL:
        return _("Null characters are not allowed.")  # Django's own words for the same rule
    if error.get("type") == "missing":
        return _("This field is required.")
    return str(error.get("msg", _("This value is not valid.")))


def _on_validation_error(request: HttpRequest, exc: ValidationError) -> JsonResponse:
    errors: dict[str, list[str]] = {}
    for error in exc.errors:
        errors.setdefault(_field_name(tuple(error.get("loc", ()))), []).append(_validation_message(error))
    detail = " ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
    return problem_response(request, ApiProblem(422, detail, errors=errors))


def _on_authentication_error(request: HttpRequest, exc: AuthenticationError) -> JsonResponse:
    if type(exc) is AuthenticationError:  # ninja's own: no usable Authorization header at all
        return problem_response(request, not_authenticated())
    return problem_response(request, ApiProblem(401, exc.message, headers={
        "WWW-Authenticate": 'Bearer realm="diagramsite", error="invalid_token"'}))


def _on_http_error(request: HttpRequest, exc: HttpError) -> JsonResponse:
    if isinstance(exc.__cause__, ApiProblem):  # raised by our body parser (parsing.py), wrapped by ninja
        return problem_response(request, exc.__cause__)
    detail = exc.message
    if exc.status_code == 400 and detail.startswith("Cannot parse request body"):
        detail = _('The request body is not valid JSON. Send a JSON object such as {"text": "…"} '
                   "with the header Content-Type: application/json.")
    return problem_response(request, ApiProblem(exc.status_code, detail))


def _on_suspicious(request: HttpRequest, exc: SuspiciousOperation) -> JsonResponse:
    if isinstance(exc, RequestDataTooBig):
        detail = _("The request is too large; at most %(size)s is accepted besides an uploaded image.") % {
            "size": filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)}
        return problem_response(request, ApiProblem(413, detail))
    if isinstance(exc, TooManyFieldsSent):
        return problem_response(request, ApiProblem(400, _("The request has too many form fields.")))
    return problem_response(request, ApiProblem(400, _("The request could not be read: %(error)s") % {
        "error": exc}))


def _on_unexpected(request: HttpRequest, exc: Exception) -> JsonResponse:
    log.exception("API error on %s %s", request.method, request.path, exc_info=exc)
    return problem_response(request, ApiProblem(
        500, _("Something went wrong on our side; the error was logged. Try again in a minute, and tell "
               "the administrator if it keeps happening.")))


def install_handlers(api) -> None:
    api.add_exception_handler(ApiProblem, lambda request, exc: problem_response(request, exc))
    api.add_exception_handler(ValidationError, _on_validation_error)
    api.add_exception_handler(AuthenticationError, _on_authentication_error)
    api.add_exception_handler(HttpError, _on_http_error)
    api.add_exception_handler(Http404, lambda request, exc: problem_response(
        request, ApiProblem(404, str(exc) or _("There is nothing at this address."))))
    api.add_exception_handler(SuspiciousOperation, _on_suspicious)
    api.add_exception_handler(Exception, _on_unexpected)
