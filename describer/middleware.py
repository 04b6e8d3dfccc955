from __future__ import annotations

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.shortcuts import resolve_url
from django.utils.cache import patch_cache_control
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


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's header (CONTENT_SECURITY_POLICY in settings.py), with this host's own
    WebSocket addresses added to connect-src. CSP3 counts ws:/wss: of the page's host as
    'self', but not every browser in use does; the host is only known per request."""

    def get_policy_parts(self, request, response, report_only: bool = False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()  # validated against ALLOWED_HOSTS: no header injection
        except DisallowedHost:
            return parts
        update = dict(parts.update or {})  # a view's @csp_update, if any, is kept
        update["connect-src"] = [*update.get("connect-src", ()), f"ws://{host}", f"wss://{host}"]
        parts.update = update
        return parts


class PrivateCacheMiddleware:
    """A page with a user's data must not be kept by a shared cache (a proxy or CDN would
    give it to the next visitor): every response to a signed-in user is `Cache-Control:
    private`. The API needs no mark: a shared cache never stores the answer to a request
    with an Authorization header unless told it may (RFC 9111, section 3.5). Static files
    never get here (WhiteNoise answers first)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)  # absent if a middleware before AuthenticationMiddleware answered
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True)
        return response
