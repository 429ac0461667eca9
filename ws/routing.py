"""The core's WebSocket routes (the seed called this module ``routings``).

``ws.asgi.push_application`` puts them together with the seed's
(``ws.seed.seed_urlpatterns``) and the project's own, ``catch_all`` last.
"""

from django.urls import re_path

from ws.consumers import MultiplexConsumer, NotFoundConsumer

websocket_urlpatterns = [
    re_path(r"^ws/$", MultiplexConsumer.as_asgi()),
]
"""The multiplexed endpoint ``ws/``."""

catch_all = re_path(r"", NotFoundConsumer.as_asgi())
"""Any other path: refused at the handshake (HTTP 403) with one log line, not a traceback."""
