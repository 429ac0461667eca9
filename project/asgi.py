"""ASGI entry point, served as the seed deploys it::

    daphne -b 0.0.0.0 -p 8010 --proxy-headers project.asgi:application

HTTP goes to Django; WebSockets pass the Origin check (scheme, host and port:
``ws/origins.py``) and session authentication before the URL router picks a
consumer, which then accepts a token where there is no session. The stack is
``ws.asgi.push_application``'s, the seed routes included.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from ws.asgi import push_application  # after the line above: ws reads the settings as it loads

application = push_application()
