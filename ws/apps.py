from django.apps import AppConfig


class WsConfig(AppConfig):
    """The transport: sockets, topics, the push API."""

    name = "ws"
    verbose_name = "WebSocket push"

    def ready(self) -> None:
        from ws import signals

        signals.connect()
