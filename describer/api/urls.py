"""URLs of /api/v1/ (included by diagramsite/urls.py under the namespace "api").

The API authenticates by token, not session: its views are exempt from
LoginRequiredMiddleware (and, being ninja's, from CSRF). Answers that ninja
gives outside its operations are made problem details too: a method the
address does not take (405) and an address with no endpoint (404). The rate
limit's headers are added here to every answer of a counted request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.urls import URLPattern, re_path
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt

from describer.api.app import api
from describer.api.problems import ApiProblem, problem_response

app_name = "api"


def _finished(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    """Every answer of a rate-limited request carries its X-RateLimit headers (ratelimit.py), the
    errors' too; a 405 becomes a problem."""
    for name, value in getattr(request, "rate_limit_headers", {}).items():
        response[name] = value
    return _as_problem(request, response)


def _as_problem(request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
    if not isinstance(response, HttpResponseNotAllowed):
        return response
    allowed = response["Allow"]
    problem = ApiProblem(405, _("%(method)s is not allowed here; this address takes %(allowed)s.")
                         % {"method": request.method, "allowed": allowed}, headers={"Allow": allowed})
    return problem_response(request, problem)


def api_view(view: Callable) -> Callable:
    """ninja's view, exempt from the login requirement, with problem details for 405."""
    if iscoroutinefunction(view):
        async def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
            return _finished(request, await view(request, *args, **kwargs))
    else:
        def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
            return _finished(request, view(request, *args, **kwargs))
    return csrf_exempt(login_not_required(functools.wraps(view)(wrapper)))


@csrf_exempt
@login_not_required
def no_such_endpoint(request: HttpRequest, **kwargs) -> HttpResponseBase:
    return problem_response(request, ApiProblem(
        404, _("There is no API endpoint at %(path)s. The endpoints are listed at /api/v1/docs.")
        % {"path": request.path}))


def _exempted(pattern: URLPattern) -> URLPattern:
    # ninja's root view only marks where the API is mounted (its name is reversed); it answers 404.
    view = no_such_endpoint if pattern.name == "api-root" else api_view(pattern.callback)
    return URLPattern(pattern.pattern, view, pattern.default_args, pattern.name)


def _one_per_route(patterns: list[URLPattern]) -> list[URLPattern]:
    """ninja adds one pattern per operation, so GET and DELETE of one address are two patterns with
    the same route; the first already serves every method of that address, the others are unreachable."""
    seen: set[str] = set()
    unique = []
    for pattern in patterns:
        if str(pattern.pattern) not in seen:
            seen.add(str(pattern.pattern))
            unique.append(pattern)
    return unique


urlpatterns = [
    *(_exempted(pattern) for pattern in _one_per_route(api.urls[0])),
    re_path(r"^[\s\S]*$", no_such_endpoint),  # not ".": a path may hold an encoded newline
]
