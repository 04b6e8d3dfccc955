"""ASGI entry point: HTTP (Django), WebSockets (progress pages) and the
`describer-gpu` worker channel (only `runworker describer-gpu` consumes it)."""

import os
from http import HTTPStatus

from django.core.asgi import get_asgi_application


def _name_every_status_for_daphne() -> None:
    """Daphne writes the status line from Twisted's table, which lacks 422, 429 and others: the
    API's "422 Invalid input" went out as "422 Unknown Status". Fill the gaps from Python's."""
    try:
        from twisted.web import http
    except ImportError:  # another ASGI server
        return
    for status in HTTPStatus:
        http.RESPONSES.setdefault(status.value, status.phrase.encode())


_name_every_status_for_daphne()

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "diagramsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from describer.routing import websocket_urlpatterns  # noqa: E402
from describer.ws_origin import SiteOriginValidator  # noqa: E402
from describer.consumers import WorkerWakeConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Whole origins (scheme, host, port), not just host names: see describer/ws_origin.py.
        "websocket": SiteOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "channel": ChannelNameRouter({settings.WORKER_CHANNEL: WorkerWakeConsumer.as_asgi()}),
    }
)
