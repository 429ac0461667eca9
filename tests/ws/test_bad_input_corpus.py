"""Every case of the bad-input corpus gets its documented answer; nobody else notices.

The corpus is data (``data/bad_input_corpus.json``): what to send, and the
answer expected -- an error frame with a code (the socket stays open), a close
code, a reply, or a connection dropped by daphne itself.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.support.clients import frames_until_closed, open_socket, recv_json, recv_until
from ws import apush

CORPUS = json.loads((Path(__file__).parent / "data" / "bad_input_corpus.json").read_text())


async def send_case(socket: Any, send: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionClosed):  # some cases are closed mid-way
        if "text" in send and "repeat" not in send:
            await socket.send(send["text"])
        elif "repeat" in send:
            for _ in range(send["repeat"]):
                await socket.send(send["text"])
        elif "pad" in send:
            await socket.send(json.dumps({"op": "ping", "pad": "x" * send["pad"]}))
        elif "nest" in send:
            await socket.send(send["open"] * send["nest"] + send["close"] * send["nest"])
        elif "raw_text_hex" in send:
            await socket.send(bytes.fromhex(send["raw_text_hex"]), text=True)
        elif "binary_hex" in send:
            await socket.send(bytes.fromhex(send["binary_hex"]))
        elif "subscribe_many" in send:
            # Each subscribe waits for its answer, so the client never writes after the
            # server closed: frames written on regardless reach a socket the server has
            # closed, and its kernel answers with a reset that takes the close frame
            # (4429) away with it. The close itself ends the loop (ConnectionClosed).
            for n in range(send["subscribe_many"]):
                topic = f"room.many{n}"
                await socket.send(json.dumps({"op": "subscribe", "topic": topic}))
                # Its answer: subscribed, or refused (for it, or rate-limited: no topic).
                await recv_until(
                    socket, lambda f, t=topic: f.get("topic") == t or f.get("op") == "error"
                )
        else:
            raise AssertionError(f"unknown corpus instruction {send}")


async def check_answer(socket: Any, expect: dict[str, Any]) -> str:
    """Assert the expected answer; return what kind it was."""
    if "error" in expect:
        error = await recv_until(socket, lambda f: f.get("op") == "error")
        assert error["code"] == expect["error"], error
        await socket.send('{"op": "ping"}')  # and the socket is still served
        await recv_until(socket, lambda f: f.get("op") == "pong")
        return "error frame"
    if "reply" in expect:
        await recv_until(socket, lambda f: f.get("op") in (expect["reply"], "error"))
        return "reply"
    frames, code = await frames_until_closed(socket, timeout=30)
    if "close" in expect:
        assert code == expect["close"], (code, frames[-3:])
        return "close"
    assert expect == {"dropped": True}
    assert code is None, code
    return "dropped by daphne"


async def test_the_corpus_gets_its_documented_answers_and_others_are_served(daphne_server):
    assert len(CORPUS) >= 40
    offset = daphne_server.log_size()
    bystander = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await bystander.send('{"op": "subscribe", "topic": "room.bystander"}')
    assert (await recv_json(bystander))["op"] == "subscribed"

    pushed, answers, failures = [], {}, []
    for case in CORPUS:
        socket = await open_socket(
            daphne_server.ws_url("/ws/"), daphne_server.origin, max_size=None
        )
        await send_case(socket, case["send"])
        try:
            kind = await check_answer(socket, case["expect"])
            answers[kind] = answers.get(kind, 0) + 1
        except (AssertionError, TimeoutError, ConnectionClosed) as error:
            failures.append(f"{case['name']}: {error!r}")
        await socket.close()
        pushed.append(await apush("room.bystander", {"after": case["name"]}))

    assert failures == []
    received = [await recv_json(bystander) for _ in pushed]
    assert [frame["seq"] for frame in received] == pushed
    assert "Traceback" not in daphne_server.log_since(offset)
    print(f"corpus: {len(CORPUS)} cases, answers: {answers}")
    await bystander.close()
