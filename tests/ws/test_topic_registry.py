"""Topic families: ``ws`` keeps its own three, apps register theirs, pushes reach them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer

from ws import apush, topics
from ws.topics import UnknownTopic


@pytest.fixture
def report_family() -> Iterator[str]:
    """A family an app of a user's project would register in its ``ready()``."""
    topics.register(
        "report",
        subscribe=topics.has_perm("ws.view_dashboard"),
        state_like=True,
        history_size=5,
        describe="a report",
    )
    yield "report"
    topics.REGISTRY.pop("report")


def test_the_apps_register_their_own_families_and_ws_keeps_three():
    from chat import transport

    assert {"broadcast", "user", "room"} <= set(topics.REGISTRY)
    assert topics.REGISTRY["chat"].on_publish is transport.publish  # chat's, from its ready()
    assert topics.REGISTRY["call"].presence
    assert topics.REGISTRY["dashboard"].state_like  # the dashboard registry's


def test_a_registered_family_resolves_with_its_rules_and_history(report_family: str, alice: Any):
    topic = topics.resolve(f"{report_family}.weekly")
    assert (topic.param, topic.pattern.state_like, topic.retention.size) == ("weekly", True, 5)
    assert not topic.may_subscribe(alice)  # no ws.view_dashboard
    assert not topic.may_publish(alice)  # nobody, unless the family says otherwise
    with pytest.raises(UnknownTopic):
        topics.resolve(report_family)  # it takes a parameter


async def test_a_push_to_a_registered_family_reaches_its_group(report_family: str):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(topics.group_name(f"{report_family}.weekly"), channel)
    seq = await apush(f"{report_family}.weekly", {"rows": 3}, msg="report")
    event = await asyncio.wait_for(layer.receive(channel), 5)
    assert (event["seq"], event["topic"]) == (seq, f"{report_family}.weekly")
    assert json.loads("{" + event["body"] + "}") == {
        "msg": "report",
        "code": 200,
        "data": {"rows": 3},
    }


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("chat", {}),  # taken
        ("Reports", {}),
        ("", {}),
        ("a.b", {}),
        ("x" * 33, {}),
        ("fine", {"history_size": -1}),
        ("fine", {"history_ttl_s": True}),
    ],
)
def test_a_bad_or_taken_family_is_refused_and_nothing_changes(kind: str, options: dict[str, Any]):
    before = dict(topics.REGISTRY)
    with pytest.raises(ValueError, match=r"topic family|must be"):
        topics.register(kind, subscribe=topics.anyone, **options)
    assert before == topics.REGISTRY
