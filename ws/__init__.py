"""The push transport. Public API: ``push``, ``apush``, ``push_many``, ``apush_many``
(with ``PushMessage``), and the seed's ``SendMessage``."""

from typing import TYPE_CHECKING, Any

from ws.push import PushMessage, apush, apush_many, push, push_many

if TYPE_CHECKING:
    from ws.seed import SendMessage

__all__ = ["PushMessage", "SendMessage", "apush", "apush_many", "push", "push_many"]


def __getattr__(name: str) -> Any:
    # The seed's helper lives with the rest of the seed (ws/seed): loaded on first use.
    if name == "SendMessage":
        from ws.seed import SendMessage

        return SendMessage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
