"""The seed's routings.py."""

from django.urls import re_path

from seedws import consumers

websocket_urlpatterns = [
    # 心跳 (heartbeat)
    re_path(r"^heartbeat/(?P<room_name>\w+)/$", consumers.BaseConsumer.as_asgi()),
]
