"""Who may connect: origins, sessions and tokens, against a real daphne."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.core.signing import TimestampSigner, b62_encode
from websockets.exceptions import InvalidStatus

from tests.support.clients import closed_with, open_socket, recv_json, subscribe
from tests.support.processes import manage
from tests.support.users import session_cookie
from ws.tokens import TOKEN_SALT, issue_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice_cookie(alice) -> str:
    return session_cookie(alice)


@pytest.fixture
def token_before_password_change(alice) -> str:
    token = issue_token(alice)
    alice.set_password("a-new-password")
    alice.save()
    return token


def other_port_origin(server) -> str:
    return f"http://127.0.0.1:{server.port + 1}"


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other_port}",
        "https://127.0.0.1:{port}",
        "http://evil.example",
        "null",
        "http://localhost.evil.example:{port}",
    ],
    ids=["another port", "another scheme", "another host", "null", "lookalike host"],
)
async def test_origins_other_than_the_sockets_own_are_refused(daphne_server, origin):
    value = origin.format(port=daphne_server.port, other_port=daphne_server.port + 1)
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(daphne_server.ws_url("/ws/"), value)
    assert refused.value.response.status_code == 403


async def test_the_sockets_own_origin_by_any_allowed_host_name_is_accepted(daphne_server):
    url = f"ws://localhost:{daphne_server.port}/ws/"
    socket = await open_socket(url, f"http://localhost:{daphne_server.port}")
    await socket.send('{"op": "ping"}')
    assert await recv_json(socket) == {"op": "pong"}
    await socket.close()


async def test_without_origin_a_socket_must_show_a_token(daphne_server, alice):
    # Anything but auth first: closed 4001.
    socket = await open_socket(daphne_server.ws_url("/ws/"), None)
    await socket.send('{"op": "subscribe", "topic": "broadcast"}')
    assert (await recv_json(socket))["code"] == 4001
    assert await closed_with(socket) == 4001

    # Nothing at all: closed 4001 once PUSH_AUTH_TIMEOUT_S has passed.
    silent = await open_socket(daphne_server.ws_url("/ws/"), None)
    assert await closed_with(silent, timeout=15) == 4001

    # The seed route has no auth frame: it needs ?token=.
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/lobby/"), None)
    assert (await recv_json(seed))["code"] == 4001
    assert await closed_with(seed) == 4001

    # With a token, in an auth frame or the query string, it is served as its user.
    token = issue_token(alice)
    by_frame = await open_socket(daphne_server.ws_url("/ws/"), None)
    await by_frame.send(f'{{"op": "auth", "token": "{token}"}}')
    assert await recv_json(by_frame) == {"op": "authenticated", "user": alice.pk}
    assert (await subscribe(by_frame, f"user.{alice.pk}"))["op"] == "subscribed"
    by_query = await open_socket(daphne_server.ws_url(f"/ws/heartbeat/lobby/?token={token}"), None)
    assert (await recv_json(by_query))["msg"] == "heartbeat"
    await by_frame.close()
    await by_query.close()


def expired_token(user: Any) -> str:
    class AnHourAgo(TimestampSigner):
        def timestamp(self) -> str:
            return b62_encode(int(time.time()) - 3600)

    return AnHourAgo(salt=TOKEN_SALT).sign_object({"u": user.pk, "h": user.get_session_auth_hash()})


def forged_token(user: Any) -> str:
    return TimestampSigner(key="not-the-server-key", salt=TOKEN_SALT).sign_object(
        {"u": user.pk, "h": user.get_session_auth_hash()}
    )


@pytest.mark.parametrize(
    "make_token",
    [forged_token, expired_token, lambda user: "garbage"],
    ids=["forged", "expired", "garbage"],
)
async def test_bad_tokens_are_refused_4001_and_never_logged(daphne_server, alice, make_token):
    token = make_token(alice)
    for path in (f"/ws/?token={token}", f"/ws/heartbeat/lobby/?token={token}"):
        socket = await open_socket(daphne_server.ws_url(path), daphne_server.origin)
        refused = await recv_json(socket)
        assert refused["code"] == 4001
        assert "token refused" in refused["msg"]
        assert await closed_with(socket) == 4001
    assert token not in daphne_server.log_text()


async def test_a_token_of_another_user_than_the_session_is_refused(
    daphne_server, alice_cookie, bob
):
    socket = await open_socket(
        daphne_server.ws_url(f"/ws/?token={issue_token(bob)}"),
        daphne_server.origin,
        additional_headers={"Cookie": alice_cookie},
    )
    assert "another user" in (await recv_json(socket))["msg"]
    assert await closed_with(socket) == 4001


async def test_a_password_change_revokes_earlier_tokens(
    daphne_server, token_before_password_change
):
    socket = await open_socket(
        daphne_server.ws_url(f"/ws/?token={token_before_password_change}"), daphne_server.origin
    )
    assert "revoked" in (await recv_json(socket))["msg"]
    assert await closed_with(socket) == 4001


async def test_the_session_cookie_signs_a_browser_in(daphne_server, alice, alice_cookie):
    socket = await open_socket(
        daphne_server.ws_url("/ws/"),
        daphne_server.origin,
        additional_headers={"Cookie": alice_cookie},
    )
    assert (await subscribe(socket, f"user.{alice.pk}"))["op"] == "subscribed"
    await socket.close()


def test_the_token_endpoint_serves_signed_in_users_only(client, alice):
    assert client.post("/ws/token").status_code == 401
    client.force_login(alice)
    answer = client.post("/ws/token")
    assert answer.status_code == 200
    from ws.tokens import user_for_token

    assert user_for_token(answer.json()["token"]) == alice
    assert client.get("/ws/token").status_code == 405


async def test_issue_token_prints_a_token_that_connects(daphne_server, child_env, alice):
    result = manage(["issue_token", "alice"], child_env)
    assert result.returncode == 0, result.stderr
    socket = await open_socket(daphne_server.ws_url(f"/ws/?token={result.stdout.strip()}"), None)
    assert (await subscribe(socket, f"user.{alice.pk}"))["op"] == "subscribed"
    await socket.close()
    missing = manage(["issue_token", "nobody"], child_env)
    assert missing.returncode != 0
    assert "no active user" in missing.stderr
