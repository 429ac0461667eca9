"""The seed compatibility: what the tutorial this project grew from gave its clients.

The seed's clients connect to ``heartbeat/<room>/`` (or ``ws/heartbeat/<room>/``),
are greeted with ``{"msg": "heartbeat", "code": 200, "data": []}`` and get each
push to their room in the envelope ``{"msg", "code", "data"}``; its server code
pushes with ``SendMessage(room).send(data)``, or sends the event ``chat_data`` to
the group ``chat_<room>`` itself. All of that is here:

- this module: ``SendMessage``, the greeting and the seed route's frames;
- ``ws/seed/consumer.py``: ``SeedRoomConsumer`` and ``seed_urlpatterns``.

The core imports none of it. Two doors lead in: ``ws.asgi.push_application``
mounts ``seed_urlpatterns`` unless given ``seed_routes=False``, and
``from ws import SendMessage`` loads this module on first use. A project without
the seed's clients passes ``seed_routes=False`` and never loads it.

What stays in the core is the ``room.<room>`` topic family, group ``chat_<room>``
included (``ws/topics.py``): every process that pushes to a room (a worker, the
shell) must name its group as the web processes do, whether or not they mount
the seed routes, and the multiplexed endpoint serves ``room.<room>`` too.

This module is light (no consumer, no models), so ``SendMessage`` can be
imported anywhere, as before; the consumer and routes load on first use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any

from asgiref.sync import markcoroutinefunction

from ws import topics
from ws.protocol import CloseCode, ProtocolError, load_object
from ws.push import apush, push

if TYPE_CHECKING:
    from ws.seed.consumer import SeedRoomConsumer, seed_urlpatterns

__all__ = ["GREETING", "SeedRoomConsumer", "SendMessage", "seed_urlpatterns"]

GREETING = json.dumps({"msg": "heartbeat", "code": 200, "data": []})
"""What a seed-route client alone gets on connect (the seed sent it to the whole room)."""


def __getattr__(name: str) -> Any:
    # The consumer needs Django's auth models: loaded on first use, once apps are ready.
    if name in ("SeedRoomConsumer", "seed_urlpatterns"):
        from ws.seed import consumer

        return getattr(consumer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_frame(text: str) -> str:
    """Validate a seed-route client frame ``{"message": "..."}``; return the message."""
    message = load_object(text).get("message")
    if not isinstance(message, str):
        raise ProtocolError(CloseCode.MALFORMED, "frame needs a string 'message'")
    return message


def render_message(seq: int, body: str) -> str:
    """A push on the seed route: the seed's envelope, plus the topic's ``seq``."""
    return f'{{{body},"seq":{seq}}}'


def render_error(code: CloseCode, message: str) -> str:
    """An error on the seed route, in the seed's envelope."""
    return json.dumps({"msg": message, "code": int(code), "data": []})


class PushedSeq(int):
    """The ``seq`` of a push already made; awaiting it gives the same number.

    Seed code awaits ``SendMessage.send`` (directly or through
    ``async_to_sync``, which calls it in the caller's thread), so the
    synchronous result must be awaitable too.
    """

    def __await__(self) -> Generator[None, None, int]:
        return int(self)
        yield  # makes this a generator: awaiting it finishes at once


class SendMessage:
    """The seed's helper: push to the seed room ``room`` (group ``chat_<room>``).

    ``send(val)`` takes the seed's dict: without a ``code`` key it is wrapped as
    ``{"msg": "success", "code": 200, "data": val}``; with one it is the
    envelope itself. The seed's ``chat_type`` key is accepted and ignored
    (consumers have one fixed event type). ``send`` works from sync code
    (it returns the ``seq``) and, as in the seed, awaited from async code or
    through ``async_to_sync``.
    """

    def __init__(self, room_group_name: str) -> None:
        self.topic = topics.seed_room_topic(room_group_name)

    def _envelope(self, val: dict[str, Any]) -> tuple[Any, str, int]:
        val = {key: value for key, value in val.items() if key != "chat_type"}
        if not val.get("code"):
            return val, "success", 200
        return val.get("data"), str(val.get("msg", "success")), int(val["code"])

    def send(self, val: dict[str, Any]) -> Any:
        """Push ``val`` to the room: its ``seq`` from sync code, an awaitable in a loop."""
        data, msg, code = self._envelope(val)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return PushedSeq(push(self.topic, data, msg=msg, code=code))
        coroutine: Awaitable[int] = apush(self.topic, data, msg=msg, code=code)
        return coroutine

    # ``async_to_sync(SendMessage(room).send)`` checks for a coroutine function.
    markcoroutinefunction(send)
