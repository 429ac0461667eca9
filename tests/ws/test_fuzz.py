"""Property-based fuzzing: no input makes the validator or a live socket misbehave."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.clients import open_socket, recv_json
from ws import apush
from ws.protocol import CLIENT_OPS, CloseCode, ProtocolError, parse_client_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
topic_names = st.sampled_from(
    ["broadcast", "room.fuzz", "dashboard.clock", "dashboard.finance", "user.1", "chat.x", "call.1"]
) | st.text(max_size=40)
frame_objects = st.fixed_dictionaries(
    {"op": st.sampled_from([*CLIENT_OPS, "bogus"]) | json_values},
    optional={"topic": topic_names | json_values, "since": json_values, "data": json_values},
)
frames = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    frame_objects.map(json.dumps),
)


@settings(max_examples=2000, deadline=None)
@given(frames)
def test_the_validator_accepts_or_refuses_with_a_protocol_error(text):
    def outcome() -> Any:
        try:
            return parse_client_frame(text)
        except ProtocolError as error:  # anything else escaping fails the test
            return error

    result = outcome()
    if isinstance(result, ProtocolError):
        assert result.code == CloseCode.MALFORMED
        assert result.message
    else:
        assert result["op"] in CLIENT_OPS


# What may answer a frame: a reply, an error, or messages (replay or snapshot).
REPLIES = {"subscribed", "unsubscribed", "published", "authenticated", "error", "message"}


@pytest.fixture
def fuzz_server(server_factory):
    """A daphne with limits out of the fuzzer's way (limits have their own tests)."""
    return server_factory.start(
        "daphne",
        PUSH_RATE_PER_S="1000000",
        PUSH_RATE_BURST="1000000",
        PUSH_MAX_BAD_FRAMES="1000000",
    )


def test_no_frame_breaks_a_live_socket_or_its_neighbours(fuzz_server):
    loop = asyncio.new_event_loop()
    url, origin = fuzz_server.ws_url("/ws/"), fuzz_server.origin
    offset = fuzz_server.log_size()
    state: dict[str, Any] = {"examples": 0, "closed_4001": 0}

    async def start() -> tuple[Any, Any]:
        bystander = await open_socket(fuzz_server.ws_url("/ws/heartbeat/fuzz-bystander/"), origin)
        await recv_json(bystander)
        return bystander, await open_socket(url, origin)

    bystander, state["socket"] = loop.run_until_complete(start())

    async def one(text: str) -> None:
        socket = state["socket"]
        marker = {"op": "unsubscribed", "topic": f"room.marker-{state['examples']}"}
        await socket.send(text)
        await socket.send(json.dumps({"op": "unsubscribe", "topic": marker["topic"]}))
        # Everything before the marker's answer answers the fuzzed frame.
        while (reply := await recv_json(socket)) != marker:
            assert reply.get("op") in REPLIES | {"pong"}, reply
            if reply["op"] != "error":
                continue
            assert reply["code"] != CloseCode.INTERNAL_ERROR, reply
            if reply["code"] == CloseCode.NOT_AUTHENTICATED:  # a random token: closed 4001
                state["closed_4001"] += 1
                await socket.close()
                state["socket"] = await open_socket(url, origin)
                break
        state["examples"] += 1

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frames)
    def fuzz(text: str) -> None:
        loop.run_until_complete(one(text))

    async def neighbours_served() -> None:
        seq = await apush("room.fuzz-bystander", "still here")
        assert (await recv_json(bystander))["seq"] == seq

    async def close_all() -> None:
        await bystander.close()
        await state["socket"].close()

    try:
        fuzz()
        loop.run_until_complete(neighbours_served())
    finally:
        loop.run_until_complete(close_all())
        loop.close()
    assert "Traceback" not in fuzz_server.log_since(offset)
    print(f"live fuzzing: {state['examples']} frames, {state['closed_4001']} bad-token closes")
