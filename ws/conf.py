"""The transport's settings: each one optional, with its default here, checked at startup.

Read them as ``push_settings.PUSH_HISTORY_SIZE``: the project's Django setting when it
sets one, else the default below. ``manage.py check`` (and every ``runserver``,
``migrate``...) reports a value of the wrong kind or out of range (``ws.E001``), and a
presence refresh that is not below its TTL (``ws.E002``).

The one setting ws cannot default is ``CHANNEL_LAYERS``: its ``default`` layer must be
channels-redis' ``RedisPubSubChannelLayer`` (or a subclass, as ``ws.layer.PushChannelLayer``),
because pushes are published in its wire format, and without ``symmetric_encryption_keys``
(``ws.E003``).

``PUSH_KEY_PREFIX`` begins every Redis key the transport writes (``push`` by
default: ``push:{dashboard.sales}``, ``push:conns:{7}``...), so two projects can share
one Redis database; give the channel layer its own ``prefix`` as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

__all__ = ["DEFAULTS", "layer_problem", "push_settings", "redis_key"]


@dataclass(frozen=True)
class Setting:
    """One setting: its default, the type it must have, and the least value it may take."""

    default: Any
    kind: type
    minimum: float | None = None
    strictly_above: bool = False


DEFAULTS: dict[str, Setting] = {
    "PUSH_KEY_PREFIX": Setting("push", str),
    "PUSH_MAX_FRAME_BYTES": Setting(64 * 1024, int, 1),
    "PUSH_MAX_BAD_FRAMES": Setting(10, int, 1),
    "PUSH_HISTORY_SIZE": Setting(100, int, 0),
    "PUSH_HISTORY_TTL_S": Setting(3600, int, 1),
    "PUSH_REPLAY_LIMIT": Setting(100, int, 0),
    "PUSH_LAYER_CHECK_S": Setting(2.0, float, 0, strictly_above=True),
    "PUSH_TASK_PATIENCE_S": Setting(30.0, float, 0),
    "PUSH_DRAIN_S": Setting(10.0, float, 0),
    "PUSH_MAX_SUBSCRIPTIONS": Setting(100, int, 1),
    "PUSH_RATE_PER_S": Setting(20.0, float, 0, strictly_above=True),
    "PUSH_RATE_BURST": Setting(40.0, float, 1),
    "PUSH_RATE_MAX_REFUSED": Setting(50, int, 1),
    "PUSH_MAX_CONNECTIONS_PER_USER": Setting(10, int, 1),
    "PUSH_PRESENCE_TTL_S": Setting(15.0, float, 0, strictly_above=True),
    "PUSH_PRESENCE_REFRESH_S": Setting(5.0, float, 0, strictly_above=True),
    "PUSH_ALLOWED_ORIGINS": Setting([], list),
    "PUSH_TOKEN_MAX_AGE_S": Setting(300, int, 1),
    "PUSH_AUTH_TIMEOUT_S": Setting(5.0, float, 0, strictly_above=True),
}
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


class _PushSettings:
    """Attribute access to the ``PUSH_*`` settings, defaults filled in."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"no push setting {name!r}")
        return getattr(settings, name, DEFAULTS[name].default)


push_settings = _PushSettings()


def redis_key(*parts: str) -> str:
    """A Redis key of the transport: ``PUSH_KEY_PREFIX`` and ``parts``, joined by ``:``."""
    return ":".join((push_settings.PUSH_KEY_PREFIX, *parts))


def _problem(name: str, value: Any, spec: Setting) -> str | None:
    number = spec.kind in (int, float)
    if number and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"must be a number, got {value!r}"
    if spec.kind is int and not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    if not number and not isinstance(value, spec.kind):
        return f"must be a {spec.kind.__name__}, got {type(value).__name__}"
    if spec.minimum is not None and (
        value <= spec.minimum if spec.strictly_above else value < spec.minimum
    ):
        bound = "above" if spec.strictly_above else "at least"
        return f"must be {bound} {spec.minimum:g}, got {value!r}"
    if name == "PUSH_KEY_PREFIX" and not _PREFIX_RE.match(value):
        return f"must be 1 to 32 of A-Z, a-z, 0-9, '_', '.' or '-', got {value!r}"
    if name == "PUSH_ALLOWED_ORIGINS" and not all(isinstance(item, str) for item in value):
        return "must list origins as strings (scheme://host[:port])"
    return None


@checks.register
def check_push_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``ws.E001``: a ``PUSH_*`` setting of the wrong kind or out of range; ``ws.E002``:
    presence refreshed no more often than its entries expire."""
    found: list[checks.CheckMessage] = []
    for name, spec in DEFAULTS.items():
        problem = _problem(name, getattr(push_settings, name), spec)
        if problem:
            found.append(checks.Error(f"{name} {problem}", id="ws.E001"))
    refresh, ttl = push_settings.PUSH_PRESENCE_REFRESH_S, push_settings.PUSH_PRESENCE_TTL_S
    if not found and refresh >= ttl:
        found.append(
            checks.Error(
                f"PUSH_PRESENCE_REFRESH_S ({refresh:g}) must be below PUSH_PRESENCE_TTL_S "
                f"({ttl:g}): entries would expire between refreshes",
                id="ws.E002",
            )
        )
    return found


PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"
LAYER_EXAMPLE = (
    "CHANNEL_LAYERS = {'default': {'BACKEND': 'ws.layer.PushChannelLayer', "
    "'CONFIG': {'hosts': ['redis://127.0.0.1:6379/0']}}}"
)


def layer_problem() -> str | None:
    """What makes ``CHANNEL_LAYERS['default']`` a layer ws cannot publish to, or None."""
    layers = getattr(settings, "CHANNEL_LAYERS", None)
    layer = layers.get("default") if isinstance(layers, dict) else None
    wanted = f"ws needs {PUBSUB_LAYER} (or a subclass): pushes are published in its wire format"
    if not isinstance(layer, dict):
        return f"CHANNEL_LAYERS has no 'default' layer; {wanted}"
    from channels_redis.pubsub import RedisPubSubChannelLayer

    backend = layer.get("BACKEND")
    try:
        layer_class = import_string(backend) if isinstance(backend, str) else None
    except ImportError as error:
        return f"CHANNEL_LAYERS['default'] BACKEND {backend!r} cannot be imported ({error})"
    if not (isinstance(layer_class, type) and issubclass(layer_class, RedisPubSubChannelLayer)):
        return f"CHANNEL_LAYERS['default'] BACKEND is {backend!r}; {wanted}"
    if (layer.get("CONFIG") or {}).get("symmetric_encryption_keys"):
        return (
            "CHANNEL_LAYERS symmetric_encryption_keys is not supported by the push "
            "publisher; protect the link with rediss:// (TLS) instead"
        )
    return None


@checks.register
def check_channel_layer(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``ws.E003``: no channel layer ws can publish to (channels-redis' pub/sub layer)."""
    problem = layer_problem()
    return [] if problem is None else [checks.Error(problem, hint=LAYER_EXAMPLE, id="ws.E003")]
