"""Dashboards recomputed by a real worker after model changes, pushed through real daphne."""

from __future__ import annotations

import asyncio
import math
import time
from contextlib import suppress
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction

from dashboard.dashboards import orders
from dashboard.models import Order
from tasks.registry import coalescing_key, compute_and_push, get
from tasks.system import system
from tests.support.clients import open_socket, recv_through, recv_until, subscribe
from tests.support.users import in_thread
from tests.support.waiting import poll_until
from ws import apush, census, keys

pytestmark = pytest.mark.django_db(transaction=True)

TOPIC = "dashboard.orders"
COALESCE_S = 0.25  # DASHBOARD_COALESCE_MS's default


def make_order(customer: str = "test") -> Order:
    return Order.objects.create(amount=Decimal("10.00"), region="EU", customer=customer)


def orders_today(frame: dict[str, Any]) -> int | None:
    if frame.get("op") != "message" or frame.get("topic") != TOPIC:
        return None
    return frame["data"]["kpis"]["orders_today"]


def is_live(frame: dict[str, Any]) -> bool:
    return frame.get("op") == "message" and frame.get("topic") == TOPIC and not frame.get("reset")


async def nobody_watching(redis_client: Any) -> None:
    """Sockets of earlier tests are closed; wait until daphne has left the group too."""
    await asyncio.to_thread(
        poll_until,
        lambda: redis_client.pubsub_numsub(f"asgi__group__{TOPIC}")[0][1] == 0,
        30,
        "server left the dashboard's group",
    )


async def fresh_subscriber(daphne_server: Any, redis_client: Any) -> Any:
    """A socket on an up-to-date orders dashboard: no recompute is owed to it."""
    redis_client.delete(coalescing_key("orders", "dirty"))
    await in_thread(compute_and_push, get("orders"))
    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, TOPIC)
    return socket


async def test_saving_a_watched_model_pushes_the_recomputed_dashboard(
    daphne_server, celery_worker, redis_client
):
    socket = await fresh_subscriber(daphne_server, redis_client)
    await in_thread(make_order, "ada")
    frame = await recv_until(socket, is_live, timeout=30)
    assert frame["data"]["kpis"]["orders_today"] == 1
    assert frame["data"]["latest"][0]["customer"] == "ada"
    assert frame["data"]["computed_at"].endswith("Z")
    assert frame["data"]["next_due"] is None  # recomputed on change, not on a schedule


async def test_a_rolled_back_save_pushes_nothing(daphne_server, celery_worker, redis_client):
    socket = await fresh_subscriber(daphne_server, redis_client)

    class Rollback(Exception):
        pass

    def save_then_roll_back() -> None:
        with suppress(Rollback), transaction.atomic():
            make_order("ghost")
            raise Rollback

    await in_thread(save_then_roll_back)
    assert not redis_client.exists(coalescing_key("orders", "pending"))  # nothing was asked for
    await in_thread(make_order, "real")
    # The first push after it is the committed save's: a push for the rolled-back
    # one would have come first (the worker is idle), showing no order.
    frame = await recv_until(socket, is_live, timeout=30)
    assert frame["data"]["kpis"]["orders_today"] == 1
    assert [row["customer"] for row in frame["data"]["latest"]] == ["real"]


async def test_a_burst_of_saves_is_coalesced_and_ends_on_the_final_state(
    daphne_server, celery_worker, redis_client
):
    socket = await fresh_subscriber(daphne_server, redis_client)

    def burst() -> float:
        started = time.monotonic()
        for n in range(1000):
            make_order(f"burst-{n}")
        return time.monotonic() - started

    duration = await in_thread(burst)
    frames = await recv_through(socket, lambda f: orders_today(f) == 1000, timeout=60)
    pushes = [frame for frame in frames if is_live(frame)]
    assert len(pushes) <= math.ceil(duration / COALESCE_S) + 1, (len(pushes), duration)
    fresh = await in_thread(orders)
    final = pushes[-1]["data"]
    assert {key: final[key] for key in fresh} == fresh


async def test_no_subscriber_no_recompute_then_the_first_one_gets_a_fresh_value(
    daphne_server, celery_worker, redis_client
):
    await nobody_watching(redis_client)
    redis_client.delete(coalescing_key("orders", "dirty"))
    meta = keys.topic("dashboard.orders").meta
    seq_before = int(redis_client.hget(meta, "seq") or 0)

    await in_thread(make_order, "unseen")
    # The worker takes the request and skips the computation, noting it is owed.
    await asyncio.to_thread(
        poll_until,
        lambda: redis_client.exists(coalescing_key("orders", "dirty")),
        30,
        "skipped recompute",
    )
    assert int(redis_client.hget(meta, "seq") or 0) == seq_before

    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, TOPIC)
    frame = await recv_until(socket, lambda f: orders_today(f) == 1 and is_live(f), timeout=30)
    assert frame["data"]["latest"][0]["customer"] == "unseen"


async def test_the_system_dashboard_counts_sockets_and_pushes_across_processes(daphne_server):
    sockets = [
        await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin) for _ in range(3)
    ]
    for socket in sockets:
        await subscribe(socket, "room.system-census")
    # daphne writes its census every PUSH_LAYER_CHECK_S.
    await asyncio.to_thread(
        poll_until, lambda: census.subscribers("room.system-census") == 3, 30, "census"
    )
    for n in range(20):
        await apush("room.system-census", n)

    figures = await in_thread(system)
    assert figures["open_sockets"] >= 3
    assert figures["pushes_per_s"] > 0
    assert figures["queue_length"] >= 0
