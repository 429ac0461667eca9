"""Topics: their names, the channel-layer group behind each, and who may use them.

A topic is ``<kind>`` or ``<kind>.<param>`` (``dashboard.sales``, ``user.7``,
``broadcast``). Every pattern declares who may subscribe and who may publish as
plain callables of the user and the parameter, Django permissions being the
usual answer; one topic can override its pattern with ``declare()`` (a public
dashboard, say). Rules may query the database: call them from sync code (the
consumers do, through ``database_sync_to_async``). This is the only module
that builds group names: nobody else formats ``"chat_%s"``.

The transport's own families:

| pattern | subscribe | publish from a socket |
|---|---|---|
| ``broadcast`` | anyone | ``ws.publish_broadcast`` |
| ``user.<id>`` | that user | nobody |
| ``room.<room>`` (seed rooms) | anyone | nobody |

Apps add theirs with ``register()`` in their ``AppConfig.ready``: ``chat``
registers ``chat.<room>`` and ``call.<room>`` (its rooms' readers, with
presence), the dashboard registry ``dashboard.<name>`` (``ws.view_dashboard``,
state-like). An app changes a family it does not own with ``configure()``
(``chat`` lets ``room.<room>`` take client messages where its Room allows them).

Presence (who is subscribed: ``ws/presence.py``) is per family
(``register(..., presence=True)``); ``declare(name, presence=True)`` turns it on
for one more topic.

Publish handlers: by default a socket's ``publish`` that its rule allows is
pushed as it came. A family (``configure(kind, on_publish=...)``) or one topic
(``declare(name, on_publish=...)``) can name a handler instead: it is called
with the user, the topic and the frame's ``data``, in a thread (it may use the
ORM), does the publishing itself (``push``, or ``ephemeral`` for what is not
kept) and returns the ``seq`` it pushed, or None. It refuses with
``PublishRefused(code, message)``: an error frame, and the socket stays.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ws.conf import push_settings

__all__ = [
    "PublishHandler",
    "PublishRefused",
    "Retention",
    "Topic",
    "UnknownTopic",
    "access_group",
    "configure",
    "declare",
    "group_name",
    "has_perm",
    "register",
    "resolve",
    "seed_room_topic",
]

MAX_TOPIC_LENGTH = 90
_PARAM_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEED_ROOM_KIND = "room"

# The user is Django's user or AnonymousUser; both answer ``is_authenticated``.
Rule = Callable[[Any, str | None], bool]
# Called (in a thread) with the user, the topic and the frame's data instead of
# the plain push; returns the seq it pushed, or None for nothing numbered.
PublishHandler = Callable[[Any, "Topic", Any], int | None]


class UnknownTopic(ValueError):
    """The name is not a topic of any registered pattern."""


class PublishRefused(Exception):
    """A publish handler's refusal: the socket gets an error frame ``code`` and stays open.

    ``code`` is one of ``ws.protocol.CloseCode`` (``4003`` forbidden, ``4400``
    invalid, ``4429`` rate limited).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def anyone(user: Any, param: str | None) -> bool:
    return True


def nobody(user: Any, param: str | None) -> bool:
    return False


def signed_in(user: Any, param: str | None) -> bool:
    return bool(user.is_authenticated and user.is_active)


def same_user(user: Any, param: str | None) -> bool:
    return signed_in(user, param) and str(user.pk) == param


def has_perm(permission: str) -> Rule:
    """A rule: active users holding ``permission`` (superusers hold them all)."""

    def rule(user: Any, param: str | None) -> bool:
        return signed_in(user, param) and bool(user.has_perm(permission))

    rule.__name__ = f"has_perm({permission!r})"
    return rule


@dataclass(frozen=True)
class TopicPattern:
    """One family of topics (``dashboard.<name>``) and its access rules."""

    kind: str
    has_param: bool
    may_subscribe: Rule
    may_publish: Rule
    describe: str
    # State-like topics (dashboards): a new or reset subscriber gets the latest
    # message as a snapshot; for the others (chat) old messages are not state.
    state_like: bool = False
    # Subscribers see who else is subscribed (presence, join and leave frames).
    presence: bool = False
    # History kept for resume: messages and seconds (None: PUSH_HISTORY_SIZE / _TTL_S).
    history_size: int | None = None
    history_ttl_s: int | None = None
    # What a socket's publish does instead of the plain push (see the module's docstring).
    on_publish: PublishHandler | None = None


@dataclass(frozen=True)
class Retention:
    """How much of a topic's history is kept for resume: ``size`` messages, ``ttl_s`` seconds."""

    size: int
    ttl_s: int


@dataclass(frozen=True)
class Topic:
    """A resolved topic name."""

    name: str
    pattern: TopicPattern
    param: str | None

    def may_subscribe(self, user: Any) -> bool:
        rule = _DECLARED.get(self.name, {}).get("subscribe", self.pattern.may_subscribe)
        return rule(user, self.param)

    def may_publish(self, user: Any) -> bool:
        rule = _DECLARED.get(self.name, {}).get("publish", self.pattern.may_publish)
        return rule(user, self.param)

    @property
    def publish_handler(self) -> PublishHandler | None:
        """What a socket's publish on this topic calls instead of the plain push, if anything."""
        return _HANDLERS.get(self.name, self.pattern.on_publish)

    @property
    def presence(self) -> bool:
        """Whether subscribers of this topic see who else is subscribed."""
        return _PRESENCE.get(self.name, self.pattern.presence)

    @property
    def retention(self) -> Retention:
        """The history kept for this topic: declared, else its pattern's, else the settings'."""
        declared = _RETENTION.get(self.name, {})
        size = declared.get("size", self.pattern.history_size)
        ttl_s = declared.get("ttl_s", self.pattern.history_ttl_s)
        return Retention(
            size=push_settings.PUSH_HISTORY_SIZE if size is None else size,
            ttl_s=push_settings.PUSH_HISTORY_TTL_S if ttl_s is None else ttl_s,
        )


# The transport's own families; apps add theirs with ``register`` (chat: ``chat`` and
# ``call``; the dashboard registry: ``dashboard``).
REGISTRY: dict[str, TopicPattern] = {
    pattern.kind: pattern
    for pattern in (
        TopicPattern(
            "broadcast", False, anyone, has_perm("ws.publish_broadcast"), "messages to everyone"
        ),
        TopicPattern("user", True, same_user, nobody, "one user's private messages"),
        TopicPattern(SEED_ROOM_KIND, True, anyone, nobody, "a seed heartbeat room"),
    )
}
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _check_history(history_size: object, history_ttl_s: object) -> None:
    for name, value in (("history_size", history_size), ("history_ttl_s", history_ttl_s)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise ValueError(f"{name} must be a non-negative int")


def register(
    kind: str,
    *,
    subscribe: Rule,
    publish: Rule = nobody,
    describe: str = "",
    has_param: bool = True,
    state_like: bool = False,
    presence: bool = False,
    history_size: int | None = None,
    history_ttl_s: int | None = None,
    on_publish: PublishHandler | None = None,
) -> None:
    """Add the topic family ``kind`` (``kind.<param>``, or ``kind`` alone without a parameter).

    Call it from the owning app's ``AppConfig.ready`` (it runs in every
    process). ``state_like``: a new or reset subscriber gets the latest message
    as a snapshot (dashboards); ``presence``: subscribers see who else is there;
    ``history_size``/``history_ttl_s``: what is kept for resume (default the
    ``PUSH_HISTORY_*`` settings); ``on_publish``: what a socket's publish does
    (see the module's docstring). A kind taken already, or not 1 to 32 of
    ``a-z0-9_-`` starting with a letter, is a ``ValueError``.
    """
    if not _KIND_RE.match(kind):
        raise ValueError(f"topic family {kind!r}: 1 to 32 of a-z, 0-9, _ or -, from a letter")
    if kind in REGISTRY:
        raise ValueError(f"topic family {kind!r} is registered already")
    _check_history(history_size, history_ttl_s)
    REGISTRY[kind] = TopicPattern(
        kind,
        has_param,
        subscribe,
        publish,
        describe or f"a {kind} topic",
        state_like=state_like,
        presence=presence,
        history_size=history_size,
        history_ttl_s=history_ttl_s,
        on_publish=on_publish,
    )


_DECLARED: dict[str, dict[str, Rule]] = {}
_PRESENCE: dict[str, bool] = {}
_RETENTION: dict[str, dict[str, int]] = {}
_HANDLERS: dict[str, PublishHandler] = {}


def configure(
    kind: str,
    *,
    subscribe: Rule | None = None,
    publish: Rule | None = None,
    on_publish: PublishHandler | None = None,
) -> None:
    """Give a whole topic family new rules or a publish handler (call from ``AppConfig.ready``).

    For the app that owns the family's meaning (``chat`` for ``chat.<room>``):
    ``configure("chat", subscribe=is_member, publish=is_member, on_publish=send)``.
    Topics ``declare``d on their own keep what they declared. Per process, like
    ``declare``: ``ready()`` runs in each.
    """
    pattern = REGISTRY.get(kind)
    if pattern is None:
        raise UnknownTopic(f"no topic family {kind!r}")
    changes: dict[str, Any] = {}
    if subscribe is not None:
        changes["may_subscribe"] = subscribe
    if publish is not None:
        changes["may_publish"] = publish
    if on_publish is not None:
        changes["on_publish"] = on_publish
    REGISTRY[kind] = replace(pattern, **changes)


def declare(
    topic: str,
    *,
    subscribe: Rule | None = None,
    publish: Rule | None = None,
    presence: bool | None = None,
    history_size: int | None = None,
    history_ttl_s: int | None = None,
    on_publish: PublishHandler | None = None,
) -> None:
    """Give one topic its own rules instead of its pattern's (call from ``AppConfig.ready``).

    ``presence`` turns presence on or off for this topic alone; ``history_size``
    and ``history_ttl_s`` set how much of its history is kept for resume;
    ``on_publish`` is its publish handler. Declare in every process (``ready()``
    runs in each): a topic's settings are per process.
    """
    _check_history(history_size, history_ttl_s)
    name = resolve(topic).name
    rules = _DECLARED.setdefault(name, {})
    if subscribe is not None:
        rules["subscribe"] = subscribe
    if publish is not None:
        rules["publish"] = publish
    if on_publish is not None:
        _HANDLERS[name] = on_publish
    if presence is not None:
        _PRESENCE[name] = presence
    for field_name, value in (("size", history_size), ("ttl_s", history_ttl_s)):
        if value is not None:
            _RETENTION.setdefault(name, {})[field_name] = value


def resolve(name: object) -> Topic:
    """The topic called ``name``, or ``UnknownTopic`` saying what is wrong."""
    if not isinstance(name, str) or not name:
        raise UnknownTopic("topic must be a non-empty string")
    if len(name) > MAX_TOPIC_LENGTH:
        raise UnknownTopic(f"topic is longer than {MAX_TOPIC_LENGTH} characters")
    kind, dot, param = name.partition(".")
    pattern = REGISTRY.get(kind)
    if pattern is None:
        raise UnknownTopic(f"no topic family {kind!r}")
    if not pattern.has_param:
        if dot:
            raise UnknownTopic(f"topic {kind!r} takes no parameter")
        return Topic(name, pattern, None)
    if not _PARAM_RE.match(param):
        raise UnknownTopic(f"{kind} topics are {kind}.<letters, digits, _ or ->")
    return Topic(name, pattern, param)


def seed_room_topic(room: str) -> str:
    """The topic behind the seed route ``heartbeat/<room>/``."""
    return resolve(f"{SEED_ROOM_KIND}.{room}").name


def access_group(user_id: object) -> str:
    """The group through which a user's sockets hear that their access changed."""
    return f"ws.access.{user_id}"


def group_name(topic: str) -> str:
    """The channel-layer group of a topic.

    Seed rooms keep the seed's group ``chat_<room>``, so code that sends to
    that group directly still reaches seed clients. It is named here, not in
    ``ws.seed``: every process that pushes to a room (a worker, the shell)
    must name the group as the web processes do, whether or not any of them
    loads the seed module, and the multiplexed endpoint serves rooms too.
    """
    resolved = resolve(topic)
    if resolved.pattern.kind == SEED_ROOM_KIND:
        return f"chat_{resolved.param}"
    return resolved.name
