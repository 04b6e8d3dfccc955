from __future__ import annotations

from django.urls import path, re_path

from describer import consumers


async def no_such_socket(scope: dict, receive, send) -> None:
    """Every other WebSocket address, a malformed id included: closed with 4404 like an
    unknown conversion, where the router would raise ("No route found") and daphne answer 500.
    A plain ASGI app, not a consumer: nothing here needs the channel layer."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    # Accept first, then close: a close before accept loses the code.
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.close", "code": consumers.CLOSE_NOT_FOUND})


websocket_urlpatterns = [
    path("ws/conversions/<uuid:pk>/", consumers.ConversionProgressConsumer.as_asgi()),
    re_path(r"", no_such_socket),  # last: it matches any path
]
