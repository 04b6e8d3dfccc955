from __future__ import annotations

from django.conf import settings
from django.shortcuts import resolve_url
from django_htmx.http import HttpResponseClientRedirect


class HtmxLoginRedirectMiddleware:
    """An htmx request whose session has expired would swap the login page into
    a fragment of the page; make the browser navigate to the login page instead."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.login_path = resolve_url(settings.LOGIN_URL)

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.headers.get("HX-Request") == "true"
            and response.status_code == 302
            and response.get("Location", "").startswith(self.login_path)
        ):
            return HttpResponseClientRedirect(response["Location"])
        return response
