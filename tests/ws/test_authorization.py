"""Who may subscribe and publish where: the whole matrix, over session and token."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.clients import open_socket, recv_until
from tests.support.users import make_user, session_cookie
from ws.tokens import issue_token

pytestmark = pytest.mark.django_db(transaction=True)

PEOPLE = ["anonymous", "ordinary", "permitted", "staff", "superuser", "other"]
# "user.me" is the ordinary user's own topic; everyone else is a stranger to it.
TOPICS = [
    "dashboard.finance",
    "dashboard.clock",
    "broadcast",
    "user.me",
    "room.lobby",
    "chat.lobby",
    "call.1",
]
Y, N = True, False
#                       anon ordinary permitted staff super other
EXPECTED_SUBSCRIBE = {
    "dashboard.finance": (N, N, Y, N, Y, N),
    "dashboard.clock": (Y, Y, Y, Y, Y, Y),
    "broadcast": (Y, Y, Y, Y, Y, Y),
    "user.me": (N, Y, N, N, N, N),
    "room.lobby": (Y, Y, Y, Y, Y, Y),
    # No Room "lobby" exists: a chat topic is its room's members' only (tests/chat).
    "chat.lobby": (N, N, N, N, N, N),
    "call.1": (N, N, N, N, N, N),  # a call's line is its chat room's: no room "1"
}
EXPECTED_PUBLISH = {topic: (N, N, N, N, N, N) for topic in TOPICS}
EXPECTED_PUBLISH["broadcast"] = (N, N, Y, N, Y, N)


@pytest.fixture
def people() -> dict[str, Any]:
    return {
        "anonymous": None,
        "ordinary": make_user("ordinary"),
        "permitted": make_user("permitted", "ws.view_dashboard", "ws.publish_broadcast"),
        "staff": make_user("staff", is_staff=True),
        "superuser": make_user("superuser", is_staff=True, is_superuser=True),
        "other": make_user("other"),
    }


@pytest.fixture
def credentials(people) -> dict[str, dict[str, Any]]:
    """How each person connects: by session cookie, and by token (not for anonymous)."""
    return {
        name: {
            "session": session_cookie(user) if user else None,
            "token": issue_token(user) if user else None,
        }
        for name, user in people.items()
    }


async def answer(socket: Any, frame: dict[str, Any]) -> bool:
    """Send a subscribe or publish frame; True if it was served, False if refused 4003."""
    await socket.send(json.dumps(frame))
    reply = await recv_until(
        socket,
        lambda f: (
            f.get("topic") == frame["topic"] and f.get("op") in ("subscribed", "published", "error")
        ),
    )
    if reply["op"] == "error":
        assert reply["code"] == 4003, reply
        return False
    return True


@pytest.mark.parametrize("method", ["session", "token"])
async def test_the_authorization_matrix(inprocess_server, people, credentials, method):
    own_topic = f"user.{people['ordinary'].pk}"
    seen_subscribe: dict[str, list[bool]] = {topic: [] for topic in TOPICS}
    seen_publish: dict[str, list[bool]] = {topic: [] for topic in TOPICS}
    for name in PEOPLE:
        headers, path = {}, "/ws/"
        if credentials[name]["session"] and method == "session":
            headers["Cookie"] = credentials[name]["session"]
        if credentials[name]["token"] and method == "token":
            path = f"/ws/?token={credentials[name]['token']}"
        socket = await open_socket(
            inprocess_server.ws_url(path), inprocess_server.origin, additional_headers=headers
        )
        for topic in TOPICS:
            real = own_topic if topic == "user.me" else topic
            seen_subscribe[topic].append(await answer(socket, {"op": "subscribe", "topic": real}))
            seen_publish[topic].append(
                await answer(socket, {"op": "publish", "topic": real, "data": {"by": name}})
            )
        await socket.close()

    assert seen_subscribe == {t: list(v) for t, v in EXPECTED_SUBSCRIBE.items()}
    assert seen_publish == {t: list(v) for t, v in EXPECTED_PUBLISH.items()}
