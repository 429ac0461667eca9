"""``dispatch_in_turn``: a consumer's events, one at a time, in order per source."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.exceptions import StopConsumer

from ws.consumers.dispatch import dispatch_in_turn


async def test_events_are_handled_one_at_a_time_in_each_sources_order():
    client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    handled: list[tuple[str, int]] = []
    busy = False

    async def dispatch(event: dict[str, Any]) -> None:
        nonlocal busy
        assert not busy, "two events were handled at once"
        busy = True
        await asyncio.sleep(0)  # a handler that awaits lets the other source's task run
        await asyncio.sleep(0)
        handled.append((event["source"], event["n"]))
        busy = False
        if len(handled) == 40:
            raise StopConsumer

    for n in range(20):
        client.put_nowait({"source": "client", "n": n})
        layer.put_nowait({"source": "layer", "n": n})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(dispatch_in_turn([client.get, layer.get], dispatch), 5)

    assert [n for source, n in handled if source == "client"] == list(range(20))
    assert [n for source, n in handled if source == "layer"] == list(range(20))


async def test_stopping_cancels_the_waiting_source():
    client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer_cancelled = asyncio.Event()

    async def layer_receive() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()  # nothing ever comes from the layer
        finally:
            layer_cancelled.set()  # channels-redis drops the channel here
        raise AssertionError("unreachable")

    async def dispatch(event: dict[str, Any]) -> None:
        if event["type"] == "websocket.disconnect":
            raise StopConsumer

    client.put_nowait({"type": "websocket.disconnect"})
    with pytest.raises(StopConsumer):
        await asyncio.wait_for(dispatch_in_turn([client.get, layer_receive], dispatch), 5)
    assert layer_cancelled.is_set()


async def test_a_failing_handler_ends_the_loop_with_its_error():
    client: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    layer: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def dispatch(event: dict[str, Any]) -> None:
        raise RuntimeError(f"bug in {event['type']}")

    layer.put_nowait({"type": "push.message"})
    with pytest.raises(RuntimeError, match=r"bug in push\.message"):
        await asyncio.wait_for(dispatch_in_turn([client.get, layer.get], dispatch), 5)
