"""The ``system`` dashboard: open sockets, pushes per second, the worker queue's length."""

from __future__ import annotations

from typing import Any

from kombu.exceptions import ChannelError

from tasks.registry import dashboard
from ws.census import open_sockets
from ws.publisher import pushes_per_s


def queue_length(queue: str = "celery") -> int:
    """Tasks waiting in the broker's default queue (a passive declare: any broker)."""
    from project.celery import app

    with app.connection_for_read() as connection:
        try:
            declared = connection.default_channel.queue_declare(queue=queue, passive=True)
        except ChannelError:  # Redis keeps no empty list: an empty queue is "not found"
            return 0
        return int(declared.message_count)


@dashboard("system", every_s=2, public=True)
def system() -> dict[str, Any]:
    """Live figures of the whole deployment, gathered from Redis."""
    return {
        "open_sockets": open_sockets(),
        "pushes_per_s": round(pushes_per_s(), 2),
        "queue_length": queue_length(),
    }
