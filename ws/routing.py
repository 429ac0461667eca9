"""WebSocket routes (the seed called this module ``routings``)."""

from django.urls import re_path

from ws.consumers import MultiplexConsumer, NotFoundConsumer, SeedRoomConsumer

websocket_urlpatterns = [
    re_path(r"^ws/heartbeat/(?P<room_name>[^/]+)/$", SeedRoomConsumer.as_asgi()),
    re_path(r"^heartbeat/(?P<room_name>[^/]+)/$", SeedRoomConsumer.as_asgi()),
    re_path(r"^ws/$", MultiplexConsumer.as_asgi()),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
