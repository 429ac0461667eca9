import logging

from django.apps import AppConfig


class WsConfig(AppConfig):
    """The transport: sockets, topics, the push API."""

    name = "ws"
    verbose_name = "WebSocket push"

    def ready(self) -> None:
        from ws import conf, receivers  # noqa: F401 - conf registers its system check
        from ws.outage import QuietReconnects

        receivers.connect()
        # channels-redis logs a traceback a second while Redis is away: one line per outage.
        logging.getLogger("channels_redis.pubsub").addFilter(QuietReconnects())
