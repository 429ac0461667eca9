"""The push transport. Public API: ``push``, ``apush``, and the seed's ``SendMessage``."""

from typing import TYPE_CHECKING, Any

from ws.push import apush, push

if TYPE_CHECKING:
    from ws.seed import SendMessage

__all__ = ["SendMessage", "apush", "push"]


def __getattr__(name: str) -> Any:
    # The seed's helper lives with the rest of the seed (ws/seed): loaded on first use.
    if name == "SendMessage":
        from ws.seed import SendMessage

        return SendMessage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
