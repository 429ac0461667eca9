from django.apps import AppConfig


class ChatConfig(AppConfig):
    """Rooms, direct conversations, messages; who may use the ``chat.<room>`` topics."""

    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from chat import signals, transport

        transport.configure_topics()
        signals.connect()
