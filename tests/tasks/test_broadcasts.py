"""Admin broadcasts, delivered by a real Celery worker to real sockets on a real daphne."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from tasks import broadcasts
from tasks.models import Broadcast
from tasks.tasks import deliver_broadcast, send_due_broadcasts
from tests.support.clients import open_socket, recv_json, subscribe
from tests.support.processes import manage
from tests.support.users import in_thread, make_user, session_cookie
from ws import apush, census, push

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 30.0


async def eventually(check: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``check`` (sync code, run in a thread) until it holds, for at most ``timeout``."""
    deadline = time.monotonic() + timeout
    while not await in_thread(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        await asyncio.sleep(0.05)


async def counted(topic: str, sockets: int) -> None:
    """Wait until the servers' census counts ``sockets`` subscribed to ``topic``."""
    await eventually(
        lambda: census.subscribers(topic) == sockets, f"census of {sockets} on {topic}"
    )


async def anonymous_socket(server: Any, topic: str = "broadcast") -> Any:
    socket = await open_socket(server.ws_url("/ws/"), server.origin)
    assert (await subscribe(socket, topic))["op"] == "subscribed"
    return socket


async def user_socket(server: Any, user: Any) -> Any:
    """A signed-in browser's socket, subscribed to its user's own topic."""
    cookie = await in_thread(session_cookie, user)
    socket = await open_socket(
        server.ws_url("/ws/"), server.origin, additional_headers={"Cookie": cookie}
    )
    assert (await subscribe(socket, f"user.{user.pk}"))["op"] == "subscribed"
    return socket


async def nothing_more(socket: Any, topic: str) -> None:
    """The socket's next frame on ``topic`` is a marker pushed now: nothing came before it."""
    marker = await apush(topic, "marker")
    frame = await recv_json(socket)
    assert (frame["seq"], frame["data"]) == (marker, "marker"), frame


def banner(frame: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    return frame["topic"], frame["msg"], frame["data"]


def payload(broadcast: Broadcast) -> dict[str, Any]:
    return {
        "id": broadcast.pk,
        "title": broadcast.title,
        "body": broadcast.body,
        "level": broadcast.level,
    }


def create(**fields: Any) -> Broadcast:
    broadcast = Broadcast(**fields)
    broadcast.full_clean()
    broadcast.save()
    return broadcast


async def created(**fields: Any) -> Broadcast:
    return await in_thread(lambda: create(**fields))


def reload(broadcast: Broadcast) -> Broadcast:
    return Broadcast.objects.get(pk=broadcast.pk)


async def delivered(broadcast_id: int) -> int:
    """Deliver through the worker; what the task returned."""
    result = deliver_broadcast.delay(broadcast_id)
    return await asyncio.to_thread(result.get, timeout=WAIT_S)


# -- the model ----------------------------------------------------------------------------


def test_a_target_needs_its_field_and_a_topic_must_be_one():
    with pytest.raises(ValidationError) as missing:
        Broadcast(title="t", body="b", target=Broadcast.Target.GROUP).full_clean()
    assert "group" in missing.value.message_dict

    with pytest.raises(ValidationError) as unknown:
        Broadcast(title="t", body="b", target=Broadcast.Target.TOPIC, topic="nope.x").full_clean()
    assert "Not a topic" in unknown.value.message_dict["topic"][0]

    everyone = Broadcast(title="t", body="b", topic="dashboard.sales")
    everyone.full_clean()
    assert everyone.topic == ""  # only the target's own field is kept
    assert str(everyone) == "t (info, to everyone)"


def test_a_group_is_reached_through_its_active_members(alice, bob):
    ops = Group.objects.create(name="ops")
    gone = make_user("gone", is_active=False)
    ops.user_set.add(alice, bob, gone)
    group_one = create(title="t", body="b", target=Broadcast.Target.GROUP, group=ops)
    assert broadcasts.topics_for(group_one) == [f"user.{alice.pk}", f"user.{bob.pk}"]
    assert broadcasts.topics_for(create(title="t", body="b")) == ["broadcast"]
    to_alice = create(title="t", body="b", target=Broadcast.Target.USER, user=alice)
    assert broadcasts.topics_for(to_alice) == [f"user.{alice.pk}"]
    ops.delete()
    assert broadcasts.topics_for(reload(group_one)) == []


# -- sent by the worker -------------------------------------------------------------------


async def test_the_admin_send_now_action_reaches_an_anonymous_page(daphne_server, celery_worker):
    socket = await anonymous_socket(daphne_server)
    await counted("broadcast", 1)

    def admin_sends() -> tuple[Broadcast, list[str]]:
        admin = make_user("root", is_staff=True, is_superuser=True)
        client = Client()
        client.force_login(admin)
        added = client.post(
            "/admin/tasks/broadcast/add/",
            {"title": "Maintenance", "body": "Back at five", "level": "warning",
             "target": "everyone", "topic": "", "send_at_0": "", "send_at_1": ""},
        )  # fmt: skip
        assert added.status_code == 302, added.content.decode()[:2000]
        broadcast = Broadcast.objects.get()
        assert broadcast.created_by == admin
        old = create(title="old", body="b", sent_at=timezone.now())
        answer = client.post(
            "/admin/tasks/broadcast/",
            {"action": "send_now", "_selected_action": [broadcast.pk, old.pk]},
            follow=True,
        )
        # What went out stays as it went out: a sent one's form has no inputs left.
        sent_form = client.get(f"/admin/tasks/broadcast/{old.pk}/change/").content.decode()
        assert 'name="title"' not in sent_form
        assert 'name="title"' in client.get("/admin/tasks/broadcast/add/").content.decode()
        return broadcast, [str(m) for m in answer.context["messages"]]

    broadcast, messages = await in_thread(admin_sends)
    assert messages[-2:] == [
        "1 broadcast is being sent.",
        "1 broadcast was sent before: not sent again.",
    ]

    frame = await recv_json(socket, timeout=WAIT_S)
    assert banner(frame) == ("broadcast", "broadcast", payload(broadcast))
    await eventually(lambda: reload(broadcast).sent_at is not None, "sent_at recorded")
    record = await in_thread(reload, broadcast)
    assert record.subscribers >= 1
    assert record.sent_at <= timezone.now()
    await nothing_more(socket, "broadcast")


async def test_a_user_broadcast_reaches_only_that_users_sockets(
    daphne_server, celery_worker, alice, bob
):
    alices, bobs = await user_socket(daphne_server, alice), await user_socket(daphne_server, bob)
    await counted(f"user.{alice.pk}", 1)
    broadcast = await created(
        title="Hi Alice", body="Your export is ready", target="user", user=alice
    )

    assert await delivered(broadcast.pk) == 1
    frame = await recv_json(alices)
    assert banner(frame) == (f"user.{alice.pk}", "broadcast", payload(broadcast))
    await nothing_more(bobs, f"user.{bob.pk}")
    record = await in_thread(reload, broadcast)
    assert (record.sent_at is not None, record.subscribers) == (True, 1)


async def test_a_group_broadcast_reaches_its_members(daphne_server, celery_worker, alice, bob):
    carol = await in_thread(make_user, "carol")
    ops = await in_thread(lambda: Group.objects.create(name="ops"))
    await in_thread(ops.user_set.add, alice, carol)
    alices, bobs = await user_socket(daphne_server, alice), await user_socket(daphne_server, bob)
    carols = await user_socket(daphne_server, carol)
    await counted(f"user.{carol.pk}", 1)
    broadcast = await created(
        title="Ops", body="Deploy frozen", level="critical", target="group", group=ops
    )

    assert await delivered(broadcast.pk) >= 1
    assert banner(await recv_json(alices)) == (f"user.{alice.pk}", "broadcast", payload(broadcast))
    assert banner(await recv_json(carols)) == (f"user.{carol.pk}", "broadcast", payload(broadcast))
    await nothing_more(bobs, f"user.{bob.pk}")


async def test_scheduled_broadcasts_are_sent_once_due(daphne_server, celery_worker):
    socket = await anonymous_socket(daphne_server)
    now = timezone.now()
    due = await created(title="due", body="b", send_at=now - dt.timedelta(minutes=1))
    later = await created(title="later", body="b", send_at=now + dt.timedelta(hours=1))
    manual = await created(title="manual", body="b")

    send_due_broadcasts.delay()
    assert banner(await recv_json(socket, timeout=WAIT_S))[2] == payload(due)
    await eventually(lambda: reload(due).sent_at is not None, "sent_at recorded")
    await nothing_more(socket, "broadcast")
    assert (await in_thread(reload, later)).sent_at is None
    assert (await in_thread(reload, manual)).sent_at is None


async def test_delivery_run_twice_sends_once(daphne_server, celery_worker):
    socket = await anonymous_socket(daphne_server)
    await counted("broadcast", 1)
    broadcast = await created(title="once", body="b")

    runs = [deliver_broadcast.delay(broadcast.pk) for _ in range(2)]
    answers = [await asyncio.to_thread(run.get, timeout=WAIT_S) for run in runs]
    assert sorted(answers) == [0, 1]  # one run sent it; the other found it sent
    assert await in_thread(broadcasts.deliver, broadcast.pk) == 0
    assert banner(await recv_json(socket))[2] == payload(broadcast)
    await nothing_more(socket, "broadcast")
    assert (await in_thread(reload, broadcast)).subscribers == 1


async def test_a_run_that_failed_half_way_is_finished_without_repeats(
    daphne_server, celery_worker, alice, bob
):
    """A run pushed to alice, then lost Redis: the retry sends bob his and alice nothing."""
    ops = await in_thread(lambda: Group.objects.create(name="ops"))
    await in_thread(ops.user_set.add, alice, bob)
    alices, bobs = await user_socket(daphne_server, alice), await user_socket(daphne_server, bob)
    broadcast = await created(title="t", body="b", target="group", group=ops)
    first_topic = f"user.{alice.pk}"
    await asyncio.to_thread(
        push,
        first_topic,
        payload(broadcast),
        msg="broadcast",
        key=f"broadcast:{broadcast.pk}:{first_topic}",
    )
    assert (await recv_json(alices))["data"] == payload(broadcast)
    assert (await in_thread(reload, broadcast)).sent_at is None  # still to be sent

    await delivered(broadcast.pk)
    assert banner(await recv_json(bobs)) == (f"user.{bob.pk}", "broadcast", payload(broadcast))
    await nothing_more(alices, first_topic)
    assert (await in_thread(reload, broadcast)).sent_at is not None


# -- the management command ---------------------------------------------------------------


async def test_the_broadcast_command_sends_in_process_queues_and_schedules(
    daphne_server, celery_worker, child_env
):
    socket = await anonymous_socket(daphne_server)
    await counted("broadcast", 1)

    synced = await asyncio.to_thread(
        manage, ["broadcast", "Deploy", "At five", "--level", "warning", "--sync"], child_env
    )
    assert synced.returncode == 0, synced.stderr
    frame = await recv_json(socket)
    assert frame["msg"] == "broadcast"
    assert {k: frame["data"][k] for k in ("title", "body", "level")} == {
        "title": "Deploy",
        "body": "At five",
        "level": "warning",
    }
    assert f"broadcast {frame['data']['id']} to everyone sent to 1 subscribed sockets" in (
        synced.stdout
    )
    record = await in_thread(lambda: Broadcast.objects.get(pk=frame["data"]["id"]))
    assert (record.sent_at is not None, record.subscribers) == (True, 1)

    queued = await asyncio.to_thread(manage, ["broadcast", "Queued", "by the worker"], child_env)
    assert queued.returncode == 0, queued.stderr
    assert "queued for the worker" in queued.stdout
    assert (await recv_json(socket, timeout=WAIT_S))["data"]["title"] == "Queued"

    at = (timezone.now() + dt.timedelta(days=1)).isoformat()
    scheduled = await asyncio.to_thread(
        manage, ["broadcast", "Later", "b", "--topic", "dashboard.sales", "--at", at], child_env
    )
    assert scheduled.returncode == 0, scheduled.stderr
    pk = int(re.search(r"broadcast (\d+) to topic dashboard.sales scheduled", scheduled.stdout)[1])
    later = await in_thread(lambda: Broadcast.objects.get(pk=pk))
    assert (later.sent_at, later.send_at.isoformat()) == (None, at)
    await nothing_more(socket, "broadcast")


def test_the_broadcast_command_explains_bad_input(child_env):
    for args, expected in [
        (["--user", "nobody-here"], "no user 'nobody-here'"),
        (["--topic", "nope.x"], "Not a topic"),
        (["--at", "tomorrow"], "expected an ISO date and time"),
        (["--group", "ops", "--user", "1"], "not allowed with argument"),
    ]:
        result = manage(["broadcast", "t", "b", *args], child_env)
        assert result.returncode != 0, args
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert not Broadcast.objects.exists()
