"""WebSockets: an unknown address (or a malformed id) is closed with 4404, not a 500 with
a traceback; and only the site's own pages may connect, compared as whole origins
(scheme, host and port), or those named in CSRF_TRUSTED_ORIGINS.

In process through diagramsite.asgi's application (channels' WebsocketCommunicator),
then against a real daphne, speaking the handshake over a plain socket."""

from __future__ import annotations

import socket
import struct

import pytest
from channels.testing import WebsocketCommunicator

from describer.consumers import CLOSE_NOT_FOUND
from diagramsite.asgi import application
from tests.processes import free_port, start_daphne, stop

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = "/ws/nothing-here/"


def headers(origin: str | None = "http://localhost:8000", host: str | None = "localhost:8000", *extra):
    sent = [(b"host", host.encode())] if host is not None else []
    if origin is not None:
        sent.append((b"origin", origin.encode()))
    return [*sent, *extra]


async def connect(path: str = NOWHERE, sent=None, scheme: str = "ws") -> tuple[bool, int | None]:
    """(admitted, close code): the catch-all route accepts and closes, so an admitted
    socket always reports its code."""
    communicator = WebsocketCommunicator(application, path, headers=headers() if sent is None else sent)
    communicator.scope["scheme"] = scheme
    connected, _ = await communicator.connect(timeout=5)
    code = None
    if connected:
        message = await communicator.receive_output(timeout=5)
        assert message["type"] == "websocket.close"
        code = message.get("code")
    await communicator.disconnect()
    return connected, code


# --- Unknown addresses -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("path", [NOWHERE, "/ws/conversions/xyz/", "/ws/conversions/", "/", "/ws/conversions/%00/"])
async def test_an_unknown_address_is_closed_with_4404(path):
    assert await connect(path) == (True, CLOSE_NOT_FOUND)


@pytest.mark.asyncio
async def test_a_known_address_still_reaches_its_consumer(make_conversion):
    from channels.db import database_sync_to_async

    from describer.consumers import CLOSE_NOT_LOGGED_IN

    conversion = await database_sync_to_async(make_conversion)()

    assert await connect(f"/ws/conversions/{conversion.id}/") == (True, CLOSE_NOT_LOGGED_IN)


# --- Origins ---------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://localhost:8000", "localhost:8000", "ws"),
        ("http://LOCALHOST:8000", "localhost:8000", "ws"),
        ("http://localhost", "localhost", "ws"),
        ("http://localhost:80", "localhost", "ws"),  # default ports on either side
        ("http://localhost", "localhost:80", "ws"),
        ("https://localhost", "localhost", "wss"),
        ("https://localhost:443", "localhost:443", "wss"),
        ("http://[::1]:8000", "[::1]:8000", "ws"),
    ],
)
async def test_the_sites_own_origin_is_admitted(settings, origin, host, scheme):
    settings.ALLOWED_HOSTS = ["localhost", "[::1]"]

    admitted, _code = await connect(sent=headers(origin, host), scheme=scheme)

    assert admitted


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "host", "scheme"),
    [
        ("http://localhost:8666", "localhost:8000", "ws"),  # another program on the user's machine
        ("http://localhost", "localhost:8000", "ws"),
        ("https://localhost:8000", "localhost:8000", "ws"),  # scheme differs
        ("http://localhost", "localhost", "wss"),  # plain http page next to an https site
        ("https://localhost:8443", "localhost", "wss"),
        ("http://evil.example", "localhost:8000", "ws"),
        ("http://localhost.evil.example:8000", "localhost:8000", "ws"),
        ("null", "localhost:8000", "ws"),  # sandboxed iframes, file:// pages
        ("http://localhost:8000/", "localhost:8000", "ws"),  # not an origin
        ("http://user@localhost:8000", "localhost:8000", "ws"),
        ("ftp://localhost:8000", "localhost:8000", "ws"),
        ("http://localhost:99999", "localhost:8000", "ws"),
        ("", "localhost:8000", "ws"),
    ],
)
async def test_any_other_origin_is_refused(origin, host, scheme):
    assert await connect(sent=headers(origin, host), scheme=scheme) == (False, None)


@pytest.mark.asyncio
async def test_no_origin_header_is_refused():
    assert await connect(sent=headers(origin=None)) == (False, None)


@pytest.mark.asyncio
async def test_two_origin_headers_are_refused():
    sent = headers("http://localhost:8000", "localhost:8000", (b"origin", b"http://evil.example"))

    assert await connect(sent=sent) == (False, None)


@pytest.mark.asyncio
async def test_a_host_that_allowed_hosts_does_not_allow_is_refused_even_with_its_own_origin():
    # DNS rebinding: evil.example resolves to this server; the page is evil.example's own.
    assert await connect(sent=headers("http://evil.example:8000", "evil.example:8000")) == (False, None)


@pytest.mark.asyncio
async def test_without_a_host_header_the_origins_host_must_be_allowed():
    # Not a browser (browsers always send Host): channels' old host-name check still applies.
    assert (await connect(sent=headers("http://localhost", host=None)))[0]
    assert await connect(sent=headers("http://evil.example", host=None)) == (False, None)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("origin", "admitted"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://a.sub.example.org", True),
        ("https://sub.example.org", True),
        ("https://example.org.evil.example", False),
        ("https://other.example.com", False),
    ],
)
async def test_csrf_trusted_origins_are_admitted_as_whole_origins(settings, origin, admitted):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.sub.example.org"]

    assert (await connect(sent=headers(origin)))[0] is admitted


@pytest.mark.asyncio
async def test_behind_a_tls_proxy_the_forwarded_scheme_counts(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = (b"x-forwarded-proto", b"https")

    assert (await connect(sent=headers("https://example.com", "example.com", forwarded)))[0]
    assert await connect(sent=headers("http://example.com", "example.com", forwarded)) == (False, None)
    assert await connect(sent=headers("https://example.com", "example.com")) == (False, None)


@pytest.mark.asyncio
async def test_without_a_proxy_setting_a_forwarded_scheme_is_ignored(settings):
    settings.ALLOWED_HOSTS = ["example.com"]
    settings.SECURE_PROXY_SSL_HEADER = None
    forwarded = (b"x-forwarded-proto", b"https")

    assert await connect(sent=headers("https://example.com", "example.com", forwarded)) == (False, None)


# --- Through a real daphne -------------------------------------------------------------------


@pytest.fixture(scope="module")
def daphne(tmp_path_factory):
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    port = free_port()
    server = start_daphne(port, log, DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost")
    yield port, log
    stop(server)


def handshake(port: int, path: str, origin: str | None) -> tuple[int, int | None]:
    """(HTTP status, close code if the socket was accepted and then closed)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *([f"Origin: {origin}"] if origin is not None else []),
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            return status, None
        while len(rest) < 4:
            rest += sock.recv(4096)
    assert rest[0] == 0x88, "a close frame"  # FIN + opcode 8; server frames are not masked
    return status, struct.unpack("!H", rest[2:4])[0]


@pytest.mark.parametrize("path", [NOWHERE, "/ws/conversions/xyz/", "/ws/conversions/12345678/"])
def test_daphne_closes_an_unknown_address_with_4404_and_logs_no_error(daphne, path):
    port, log = daphne

    assert handshake(port, path, f"http://127.0.0.1:{port}") == (101, CLOSE_NOT_FOUND)
    text = log.read_text()
    assert "Traceback" not in text and "ERROR" not in text, text[-3000:]


@pytest.mark.parametrize("origin", [None, "http://127.0.0.1:1", "https://127.0.0.1", "http://localhost", "null"])
def test_daphne_refuses_other_origins_before_the_handshake(daphne, origin):
    port, log = daphne

    assert handshake(port, NOWHERE, origin) == (403, None)
    assert "Traceback" not in log.read_text()
