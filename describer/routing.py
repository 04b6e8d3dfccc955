from django.urls import path

from describer import consumers

websocket_urlpatterns = [
    path("ws/conversions/<uuid:pk>/", consumers.ConversionProgressConsumer.as_asgi()),
]
