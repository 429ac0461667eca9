"""The wire protocol: frame shapes, validation of what clients send, rendering.

Two endpoints speak JSON text frames (docs/protocol.md): the multiplexed
``ws/`` with ``op`` frames, here, and the seed route ``ws/heartbeat/<room>/``
with the seed's envelope ``{"msg", "code", "data"}`` (its frames: ``ws/seed``).
Message bodies are encoded once, by the publisher, as the JSON members
``"msg":..,"code":..,"data":..``; consumers only wrap them.
"""

from __future__ import annotations

import json
from enum import IntEnum
from typing import Any, Literal, NotRequired, TypedDict

from django.core.serializers.json import DjangoJSONEncoder

__all__ = [
    "ClientFrame",
    "CloseCode",
    "ProtocolError",
    "encode_body",
    "encode_data",
    "load_object",
    "parse_client_frame",
]


class CloseCode(IntEnum):
    """Close codes, also used as the ``code`` of error frames."""

    NORMAL = 1000
    WRONG_ORIGIN = 1008
    TOO_LARGE = 1009
    INTERNAL_ERROR = 1011
    # This process is going (a deploy): reconnect now, elsewhere, and resume.
    SERVICE_RESTART = 1012
    # Redis is away: nothing was done; try again with backoff (like HTTP 503; WebSocket's
    # own "Try Again Later", 1013, is one daphne cannot send: it sends 1000 and 3000-4999).
    TRY_AGAIN = 4503
    RESYNC = 4000
    NOT_AUTHENTICATED = 4001
    FORBIDDEN = 4003
    MALFORMED = 4400
    RATE_LIMITED = 4429


class ProtocolError(Exception):
    """A client frame that cannot be served; answered with an error frame."""

    def __init__(self, code: CloseCode, message: str, topic: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.topic = topic


# --- client -> server -------------------------------------------------------------------


class SubscribeFrame(TypedDict):
    op: Literal["subscribe"]
    topic: str
    since: NotRequired[int]
    epoch: NotRequired[str]


class UnsubscribeFrame(TypedDict):
    op: Literal["unsubscribe"]
    topic: str


class PublishFrame(TypedDict):
    op: Literal["publish"]
    topic: str
    data: Any


class PingFrame(TypedDict):
    op: Literal["ping"]


class AuthFrame(TypedDict):
    op: Literal["auth"]
    token: str


ClientFrame = SubscribeFrame | UnsubscribeFrame | PublishFrame | PingFrame | AuthFrame

CLIENT_OPS = ("subscribe", "unsubscribe", "publish", "ping", "auth")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_object(text: str) -> dict[str, Any]:
    """A client frame that must be a JSON object: ``json.loads`` that refuses NaN/Infinity,
    too deep a nesting or another type with a ``ProtocolError`` saying what it expected."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(CloseCode.MALFORMED, "frame is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, oversized integers, NaN
        raise ProtocolError(CloseCode.MALFORMED, f"frame is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(
            CloseCode.MALFORMED, f"frame must be a JSON object, got {type(value).__name__}"
        )
    return value


def _topic_field(frame: dict[str, Any], op: str) -> str:
    topic = frame.get("topic")
    if not isinstance(topic, str) or not topic:
        raise ProtocolError(CloseCode.MALFORMED, f"{op} needs a string 'topic'")
    return topic


def parse_client_frame(text: str) -> ClientFrame:
    """Validate one frame of the multiplexed endpoint, or raise ``ProtocolError``."""
    frame = load_object(text)
    op = frame.get("op")
    if not isinstance(op, str):
        raise ProtocolError(CloseCode.MALFORMED, "frame needs a string 'op'")
    if op == "ping":
        return PingFrame(op="ping")
    if op == "auth":
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError(CloseCode.MALFORMED, "auth needs a string 'token'")
        return AuthFrame(op="auth", token=token)
    if op == "subscribe":
        subscribe = SubscribeFrame(op="subscribe", topic=_topic_field(frame, op))
        if "since" in frame and frame["since"] is not None:
            since = frame["since"]
            if isinstance(since, bool) or not isinstance(since, int) or since < 0:
                raise ProtocolError(
                    CloseCode.MALFORMED,
                    "'since' must be a non-negative integer",
                    subscribe["topic"],
                )
            subscribe["since"] = since
        if "epoch" in frame and frame["epoch"] is not None:
            epoch = frame["epoch"]
            if not isinstance(epoch, str) or len(epoch) > 64:
                raise ProtocolError(
                    CloseCode.MALFORMED, "'epoch' must be a string", subscribe["topic"]
                )
            subscribe["epoch"] = epoch
        return subscribe
    if op == "unsubscribe":
        return UnsubscribeFrame(op="unsubscribe", topic=_topic_field(frame, op))
    if op == "publish":
        topic = _topic_field(frame, op)
        if "data" not in frame:
            raise ProtocolError(CloseCode.MALFORMED, "publish needs 'data'", topic)
        return PublishFrame(op="publish", topic=topic, data=frame["data"])
    shown = op if len(op) <= 32 else op[:32] + "..."
    raise ProtocolError(
        CloseCode.MALFORMED, f"unknown op {shown!r}; expected one of {', '.join(CLIENT_OPS)}"
    )


def frame_too_large(text: str, limit: int) -> bool:
    """True when ``text`` is over ``limit`` bytes of UTF-8 (encodes only when unsure)."""
    if len(text) > limit:
        return True
    return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit


# --- server -> client -------------------------------------------------------------------


def encode_body(data: Any, msg: str, code: int) -> str:
    """The members ``"msg":..,"code":..,"data":..`` of a message, as JSON text.

    Payloads go through ``DjangoJSONEncoder`` here and only here, so a
    ``datetime`` or ``Decimal`` never reaches the layer raw.
    """
    if not isinstance(msg, str):
        raise TypeError(f"msg must be a str, got {type(msg).__name__}")
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"code must be an int, got {type(code).__name__}")
    envelope = json.dumps(
        {"msg": msg, "code": code, "data": data},
        cls=DjangoJSONEncoder,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return envelope[1:-1]


def encode_data(data: Any) -> str:
    """``data`` as JSON text, through ``DjangoJSONEncoder`` (ephemeral events' payloads)."""
    return json.dumps(data, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)


def render_message(topic: str, seq: int, body: str, *, reset: bool = False) -> str:
    """A ``message`` frame of the multiplexed endpoint (topic names need no escaping).

    ``reset`` marks a snapshot sent instead of a replay: the client drops what it had.
    """
    marker = '"reset":true,' if reset else ""
    return f'{{"op":"message","topic":"{topic}","seq":{seq},{marker}{body}}}'


def render_subscribed(
    topic: str, seq: int, epoch: str, *, recovered: bool, continues: str | None = None
) -> str:
    """Where a socket stands; ``continues``: the epoch its history goes on from (a failover)."""
    frame: dict[str, Any] = {
        "op": "subscribed",
        "topic": topic,
        "seq": seq,
        "epoch": epoch,
        "recovered": recovered,
    }
    if continues is not None:
        frame["continues"] = continues
    return json.dumps(frame)


def render_published(topic: str, seq: int | None) -> str:
    """The answer to a publish: its ``seq``, absent when nothing numbered was pushed (typing)."""
    frame: dict[str, Any] = {"op": "published", "topic": topic}
    if seq is not None:
        frame["seq"] = seq
    return json.dumps(frame)


def render_ephemeral(topic: str, data: str) -> str:
    """An ephemeral event (``data`` is JSON text): not numbered, not kept, never replayed."""
    return f'{{"op":"ephemeral","topic":"{topic}","data":{data}}}'


def render_unsubscribed(topic: str) -> str:
    return json.dumps({"op": "unsubscribed", "topic": topic})


# Presence (ws/presence.py): members are {"id": "user:<pk>" | "guest:...", "name": ...}.
def render_presence(topic: str, members: list[Any]) -> str:
    """Everyone on a presence topic, sent to a socket once it subscribed."""
    return json.dumps({"op": "presence", "topic": topic, "members": members})


def render_join(topic: str, member: Any) -> str:
    return json.dumps({"op": "join", "topic": topic, "member": member})


def render_leave(topic: str, member: Any) -> str:
    return json.dumps({"op": "leave", "topic": topic, "member": member})


PONG = json.dumps({"op": "pong"})


def render_authenticated(user_id: object) -> str:
    return json.dumps({"op": "authenticated", "user": user_id})


def render_error(
    code: CloseCode, message: str, topic: str | None = None, request: str | None = None
) -> str:
    """An error frame; ``request`` names the op that failed (with ``4503``: send it again)."""
    frame: dict[str, Any] = {"op": "error", "code": int(code), "msg": message}
    if topic is not None:
        frame["topic"] = topic
    if request is not None:
        frame["request"] = request
    return json.dumps(frame)
