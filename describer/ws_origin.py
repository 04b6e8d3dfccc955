"""Which pages may open the site's WebSockets: only the site's own, compared as whole
origins (scheme, host and port).

Browsers send cookies with a WebSocket handshake from any page, and the same-origin
policy does not apply to WebSockets, so the Origin check is what stops another site's
page from reading a user's live progress. channels' AllowedHostsOriginValidator only
compares host names against ALLOWED_HOSTS: http://localhost:8666 (any other program on
the user's machine) or plain http:// next to an https:// site would pass.

Admitted: an Origin equal to the request's own (its Host header, with ws ↔ http and
wss ↔ https), or to an entry of CSRF_TRUSTED_ORIGINS ("https://*.example.com" covers
subdomains, as for CSRF). Refused, before the handshake (HTTP 403): no Origin, "null",
several Origin or Host headers, and a Host that ALLOWED_HOSTS does not allow.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import is_same_domain, split_domain_port, validate_host

log = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
SECURE_SCHEMES = {"https", "wss"}

Origin = tuple[str, str, int]  # ("https", "example.com", 443)


def parse_origin(value: str) -> Origin | None:
    """An origin as the browser serialises it ("https://example.com:8443"); None for
    anything else (no scheme or host, another scheme, a path, a user name, a bad port)."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
        return None
    return scheme, parts.hostname.rstrip("."), port or DEFAULT_PORTS[scheme]


def _headers(scope: dict, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", []) if key.lower() == name]


def _is_secure(scope: dict) -> bool:
    """As Django's request.is_secure(): behind a TLS proxy (SECURE_PROXY_SSL_HEADER) the
    proxy's header says; otherwise the connection itself."""
    if settings.SECURE_PROXY_SSL_HEADER:
        meta_name, secure_value = settings.SECURE_PROXY_SSL_HEADER
        header = meta_name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
        values = _headers(scope, header)
        if values:
            return values[0].split(",", 1)[0].strip() == secure_value
    return scope.get("scheme", "ws") in SECURE_SCHEMES


def _allowed_hosts() -> list[str]:
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]  # Django's own default in debug
    return settings.ALLOWED_HOSTS


def own_origin(host: str, scope: dict) -> Origin | None:
    """The origin of the page that a socket with this Host header belongs to; None if
    ALLOWED_HOSTS does not allow the host (an HTTP request with it would get 400)."""
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    return parse_origin(f"{'https' if _is_secure(scope) else 'http'}://{host}")


def _trusted(origin: Origin, entry: str) -> bool:
    wildcard = "://*." in entry
    trusted = parse_origin(entry.replace("://*.", "://", 1) if wildcard else entry)
    if trusted is None:
        return False
    (scheme, host, port), (trusted_scheme, trusted_host, trusted_port) = origin, trusted
    if (scheme, port) != (trusted_scheme, trusted_port):
        return False
    return is_same_domain(host, f".{trusted_host}") if wildcard else host == trusted_host


def origin_allowed(scope: dict) -> bool:
    origins, hosts = _headers(scope, b"origin"), _headers(scope, b"host")
    origin = parse_origin(origins[0]) if len(origins) == 1 else None
    if origin is None or len(hosts) > 1:
        return False
    if not hosts:
        # Browsers always send Host, so this is a program that could write any Origin too;
        # with no page origin to compare, keep channels' old check of the host name alone.
        _scheme, host, _port = origin
        return validate_host(f"[{host}]" if ":" in host else host, _allowed_hosts())
    own = own_origin(hosts[0], scope)
    if own is None:
        return False
    return origin == own or any(_trusted(origin, entry) for entry in settings.CSRF_TRUSTED_ORIGINS)


class SiteOriginValidator:
    """ASGI middleware for the websocket protocol (see the module's docstring)."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope: dict, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            log.info("WebSocket to %s refused: Origin %s is not this site's", scope.get("path"),
                     _headers(scope, b"origin") or "missing")
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
