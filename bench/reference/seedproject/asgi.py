"""The seed's asgi.py."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "seedproject.settings")
django_asgi_app = get_asgi_application()

# 部署时 防止找不到包 (imported after setup so that deployment finds the package)
import seedws.routings  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(seedws.routings.websocket_urlpatterns),
    }
)
