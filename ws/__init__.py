"""The push transport. Public API: ``push``, ``apush``, ``SendMessage``."""

from ws.push import SendMessage, apush, push

__all__ = ["SendMessage", "apush", "push"]
