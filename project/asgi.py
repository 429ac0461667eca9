"""ASGI entry point, served as the seed deploys it::

    daphne -b 0.0.0.0 -p 8010 --proxy-headers project.asgi:application

HTTP goes to Django; WebSockets pass the Origin check (scheme, host and port:
``ws/origins.py``) and session authentication before the URL router picks a
consumer, which then accepts a token where there is no session.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models (the auth middleware does).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from ws.origins import OriginValidator  # noqa: E402
from ws.routing import websocket_urlpatterns  # noqa: E402
from ws.sessions import websocket_session_stack  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Channels' AuthMiddlewareStack, with a session middleware that leaves
        # ``send`` unwrapped (ws/sessions.py).
        "websocket": OriginValidator(
            websocket_session_stack(AuthMiddleware(URLRouter(websocket_urlpatterns)))
        ),
    }
)
