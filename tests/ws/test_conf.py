"""The transport's settings: optional, checked at startup, and the Redis key prefix."""

from __future__ import annotations

from typing import Any

import pytest

from ws import keys, push
from ws.conf import DEFAULTS, check_channel_layer, check_push_settings, push_settings


def errors_for(settings: Any, **values: Any) -> list[str]:
    for name, value in values.items():
        setattr(settings, name, value)
    return [f"{error.id} {error.msg}" for error in check_push_settings()]


def test_every_setting_has_a_default_and_the_projects_values_pass(settings):
    assert errors_for(settings) == []
    for name in DEFAULTS:
        delattr(settings, name)
    # A project that sets none of them gets the defaults.
    assert DEFAULTS["PUSH_HISTORY_SIZE"].default == push_settings.PUSH_HISTORY_SIZE
    assert errors_for(settings) == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"PUSH_HISTORY_SIZE": "100"}, "ws.E001 PUSH_HISTORY_SIZE must be a number"),
        ({"PUSH_HISTORY_SIZE": 2.5}, "ws.E001 PUSH_HISTORY_SIZE must be a whole number"),
        ({"PUSH_MAX_SUBSCRIPTIONS": 0}, "ws.E001 PUSH_MAX_SUBSCRIPTIONS must be at least 1"),
        ({"PUSH_RATE_PER_S": True}, "ws.E001 PUSH_RATE_PER_S must be a number"),
        ({"PUSH_DRAIN_S": -1}, "ws.E001 PUSH_DRAIN_S must be at least 0"),
        (
            {"PUSH_ALLOWED_ORIGINS": "https://a.example"},
            "ws.E001 PUSH_ALLOWED_ORIGINS must be a list",
        ),
        ({"PUSH_KEY_PREFIX": "two words"}, "ws.E001 PUSH_KEY_PREFIX must be 1 to 32"),
        (
            {"PUSH_PRESENCE_REFRESH_S": 20.0, "PUSH_PRESENCE_TTL_S": 15.0},
            "ws.E002 PUSH_PRESENCE_REFRESH_S (20) must be below PUSH_PRESENCE_TTL_S (15)",
        ),
    ],
)
def test_a_bad_value_is_reported_by_the_system_check(settings, values, expected):
    (found,) = errors_for(settings, **values)
    assert found.startswith(expected), found


def test_the_key_prefix_keeps_two_projects_apart_on_one_redis(settings, redis_client):
    ours = keys.topic("room.prefixed").meta
    settings.PUSH_KEY_PREFIX = "other-project"
    push("room.prefixed", {"n": 1})
    theirs = keys.topic("room.prefixed").meta
    assert theirs.startswith("other-project:")
    assert redis_client.exists(theirs)
    assert not redis_client.exists(ours)


def layer_errors(settings: Any, layers: Any) -> list[str]:
    if layers is None:
        del settings.CHANNEL_LAYERS
    else:
        settings.CHANNEL_LAYERS = layers
    return [f"{error.id} {error.msg}" for error in check_channel_layer()]


def test_the_projects_channel_layer_passes(settings):
    assert [error.id for error in check_channel_layer()] == []
    assert (
        layer_errors(
            settings, {"default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer"}}
        )
        == []
    )


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        (None, "ws.E003 CHANNEL_LAYERS has no 'default' layer"),
        ({}, "ws.E003 CHANNEL_LAYERS has no 'default' layer"),
        (
            {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}},
            "ws.E003 CHANNEL_LAYERS['default'] BACKEND is 'channels_redis.core.RedisChannelLayer'",
        ),
        (
            {"default": {"BACKEND": "nowhere.Layer"}},
            "ws.E003 CHANNEL_LAYERS['default'] BACKEND 'nowhere.Layer' cannot be imported",
        ),
        (
            {
                "default": {
                    "BACKEND": "ws.layer.PushChannelLayer",
                    "CONFIG": {"symmetric_encryption_keys": ["secret"]},
                }
            },
            "ws.E003 CHANNEL_LAYERS symmetric_encryption_keys is not supported",
        ),
    ],
)
def test_a_channel_layer_ws_cannot_publish_to_is_reported(settings, layers, expected):
    (found,) = layer_errors(settings, layers)
    assert found.startswith(expected), found
