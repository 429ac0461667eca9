"""The ASGI application of a project that serves ``ws``: one call in its ``asgi.py``.

What ``startproject`` wrote, with its last line replaced::

    import os

    from django.core.asgi import get_asgi_application

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from ws.asgi import push_application  # noqa: E402 - after DJANGO_SETTINGS_MODULE

    application = push_application(get_asgi_application())

(``ws`` reads the settings as it loads: import it once the settings module is named.)
HTTP goes to Django; WebSockets pass the Origin check (scheme, host and port:
``ws/origins.py``) and session authentication before the URL router picks a
consumer, which then accepts a token where there is no session. A project's own
consumers import models, so set Django up before importing their routes::

    django_app = get_asgi_application()
    from mysite.routing import websocket_urlpatterns  # noqa: E402

    application = push_application(django_app, websocket_urlpatterns)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import django
from channels.routing import ProtocolTypeRouter, URLRouter
from django.apps import apps
from django.urls import URLPattern, URLResolver

if TYPE_CHECKING:
    from asgiref.typing import ASGIApplication

    from ws.origins import OriginValidator

__all__ = ["push_application", "websocket_application"]

Route = URLPattern | URLResolver


def push_application(
    http_app: ASGIApplication | None = None,
    websocket_routes: Sequence[Route] = (),
    *,
    seed_routes: bool = True,
) -> ProtocolTypeRouter:
    """HTTP to ``http_app`` (by default Django's, set up here), WebSockets to ws.

    ``websocket_routes`` are the project's own consumers (``re_path(...)``),
    served behind the same checks; ``seed_routes`` mounts the seed's
    ``heartbeat/<room>/`` (``ws.seed``). See ``websocket_application``.
    """
    if http_app is None:
        from django.core.asgi import get_asgi_application

        http_app = get_asgi_application()
    return ProtocolTypeRouter(
        {
            "http": http_app,
            "websocket": websocket_application(websocket_routes, seed_routes=seed_routes),
        }
    )


def websocket_application(
    routes: Sequence[Route] = (), *, seed_routes: bool = True
) -> OriginValidator:
    """The WebSocket side alone, for a project that builds its own ``ProtocolTypeRouter``.

    The Origin check, then the session (without wrapping each frame sent:
    ``ws/sessions.py``), then the user (Channels' ``AuthMiddleware``), then a
    router over ws's ``ws/``, the seed's routes when ``seed_routes``,
    ``routes``, and a catch-all that refuses any other path with HTTP 403.
    """
    if not apps.ready:
        django.setup(set_prefix=False)
    # These import Django's auth models: only once the apps are loaded.
    from channels.auth import AuthMiddleware

    from ws.origins import OriginValidator
    from ws.routing import catch_all, websocket_urlpatterns
    from ws.sessions import websocket_session_stack

    patterns: list[Route] = list(websocket_urlpatterns)
    if seed_routes:  # the only place the seed routes are loaded
        from ws.seed.consumer import seed_urlpatterns

        patterns += seed_urlpatterns
    patterns += [*routes, catch_all]
    return OriginValidator(websocket_session_stack(AuthMiddleware(URLRouter(patterns))))
