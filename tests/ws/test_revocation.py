"""Revoked access reaches open sockets within 5 seconds."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client

from tests.support.clients import open_socket, recv_json, recv_until, subscribe
from tests.support.users import in_thread, make_user
from ws import apush
from ws.tokens import issue_token

pytestmark = pytest.mark.django_db(transaction=True)

WITHIN_S = 5


@pytest.fixture
def dave() -> Any:
    return make_user("dave", "ws.view_dashboard")


@pytest.fixture
def dave_browser(dave) -> Client:
    client = Client()
    client.force_login(dave)
    return client


async def socket_as(server: Any, browser: Client, *topics: str) -> Any:
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    socket = await open_socket(
        server.ws_url("/ws/"), server.origin, additional_headers={"Cookie": cookie}
    )
    for topic in topics:
        assert (await subscribe(socket, topic))["op"] == "subscribed", topic
    return socket


async def revoked(socket: Any) -> dict[str, Any]:
    return await recv_until(socket, lambda f: f.get("op") == "error", timeout=WITHIN_S)


async def assert_only_receives(socket: Any, kept: str, dropped: str) -> None:
    """A push to the dropped topic does not arrive; one to the kept topic does."""
    await apush(dropped, "must not arrive")
    seq = await apush(kept, "arrives")
    frame = await recv_json(socket)
    assert (frame["topic"], frame["seq"]) == (kept, seq)


async def test_losing_a_permission_drops_that_subscription(inprocess_server, dave, dave_browser):
    socket = await socket_as(inprocess_server, dave_browser, "dashboard.rv-perm", "room.rv-perm")

    def revoke() -> None:
        dave.user_permissions.remove(Permission.objects.get(codename="view_dashboard"))

    await in_thread(revoke)

    error = await revoked(socket)
    assert (error["code"], error["topic"]) == (4003, "dashboard.rv-perm")
    assert "permissions changed" in error["msg"]
    await assert_only_receives(socket, kept="room.rv-perm", dropped="dashboard.rv-perm")
    await socket.close()


def analyst() -> tuple[Any, Client, Group]:
    """Erin, who may see dashboards through her group only, signed in."""
    group = Group.objects.create(name="analysts")
    group.permissions.add(Permission.objects.get(codename="view_dashboard"))
    erin = make_user("erin")
    erin.groups.add(group)
    browser = Client()
    browser.force_login(erin)
    return erin, browser, group


async def test_leaving_the_group_that_granted_it_drops_it(inprocess_server):
    erin, browser, group = await in_thread(analyst)
    socket = await socket_as(inprocess_server, browser, "dashboard.rv-member", "room.rv-member")
    await in_thread(group.user_set.remove, erin)  # the reverse side of user.groups

    error = await revoked(socket)
    assert (error["code"], error["topic"]) == (4003, "dashboard.rv-member")
    await assert_only_receives(socket, kept="room.rv-member", dropped="dashboard.rv-member")
    await socket.close()


async def test_losing_a_groups_permission_drops_it_for_the_members(inprocess_server):
    _, browser, group = await in_thread(analyst)
    socket = await socket_as(inprocess_server, browser, "dashboard.rv-group", "room.rv-group")
    await in_thread(group.permissions.clear)

    error = await revoked(socket)
    assert (error["code"], error["topic"]) == (4003, "dashboard.rv-group")
    await assert_only_receives(socket, kept="room.rv-group", dropped="dashboard.rv-group")
    await socket.close()


async def test_logging_out_drops_that_sessions_private_subscriptions(
    inprocess_server, dave, dave_browser
):
    own = f"user.{dave.pk}"
    by_session = await socket_as(inprocess_server, dave_browser, own, "room.rv-logout")
    by_token = await open_socket(inprocess_server.ws_url(f"/ws/?token={issue_token(dave)}"), None)
    await subscribe(by_token, own)

    await in_thread(dave_browser.logout)

    error = await revoked(by_session)
    assert (error["code"], error["topic"]) == (4003, own)
    assert "logged out" in error["msg"]
    await assert_only_receives(by_session, kept="room.rv-logout", dropped=own)
    # The token's socket did not depend on that session and keeps its subscription:
    # it gets both pushes, including the one the logged-out socket no longer sees.
    seq = await apush(own, "still yours")
    got = [await recv_json(by_token), await recv_json(by_token)]
    assert [f["data"] for f in got] == ["must not arrive", "still yours"]
    assert got[1]["seq"] == seq
    await by_session.close()
    await by_token.close()


async def test_deactivating_a_user_drops_their_subscriptions_everywhere(inprocess_server, dave):
    own = f"user.{dave.pk}"
    by_token = await open_socket(inprocess_server.ws_url(f"/ws/?token={issue_token(dave)}"), None)
    await subscribe(by_token, own)
    await subscribe(by_token, "room.rv-inactive")

    def deactivate() -> None:
        dave.is_active = False
        dave.save(update_fields=["is_active"])

    await in_thread(deactivate)
    error = await revoked(by_token)
    assert (error["code"], error["topic"]) == (4003, own)
    await assert_only_receives(by_token, kept="room.rv-inactive", dropped=own)
    await by_token.close()


async def test_signing_in_again_leaves_open_sockets_alone(inprocess_server, dave, dave_browser):
    """A login only stamps last_login: no access check, no reload for the user's sockets."""
    own = f"user.{dave.pk}"
    socket = await socket_as(inprocess_server, dave_browser, own)
    offset = inprocess_server.log_size()

    def sign_in_elsewhere() -> None:
        Client().force_login(dave)  # saves last_login only

    await in_thread(sign_in_elsewhere)
    seq = await apush(own, "after the login")
    assert (await recv_json(socket))["seq"] == seq
    assert "ws access changed" not in inprocess_server.log_since(offset)

    # A change that matters still reaches the socket.
    def deactivate() -> None:
        dave.is_active = False
        dave.save(update_fields=["is_active"])

    await in_thread(deactivate)
    assert (await revoked(socket))["topic"] == own
