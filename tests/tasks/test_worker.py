"""Pushes made by tasks that a real Celery worker runs."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import psutil

from tests.support.celery_tasks import push_then_work
from tests.support.clients import open_socket, recv_json, subscribe
from ws import apush
from ws.tasks import publish


async def test_a_task_push_reaches_both_endpoints_with_rising_seq(daphne_server, celery_worker):
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    start = (await subscribe(multiplexed, "room.worker"))["seq"]
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/worker/"), daphne_server.origin)
    await recv_json(seed)

    for n in range(3):
        result = publish.delay("room.worker", {"n": n}, msg="from-worker")
        assert await asyncio.to_thread(result.get, timeout=30) == start + n + 1

    frames = [await recv_json(multiplexed) for _ in range(3)]
    assert [(f["seq"], f["msg"], f["data"]) for f in frames] == [
        (start + n + 1, "from-worker", {"n": n}) for n in range(3)
    ]
    seed_frames = [await recv_json(seed) for _ in range(3)]
    assert [f["seq"] for f in seed_frames] == [start + 1, start + 2, start + 3]
    assert seed_frames[2]["msg"] == "from-worker"
    await multiplexed.close()
    await seed.close()


def test_a_worker_process_pushes_over_one_connection(celery_worker, redis_client):
    # Warm both prefork children, then count connections while they push 100 times.
    for result in [publish.delay("dashboard.warm", i) for i in range(4)]:
        result.get(timeout=30)
    before = redis_client.info("stats")["total_connections_received"]
    for result in [publish.delay("dashboard.many", i) for i in range(100)]:
        result.get(timeout=30)
    after = redis_client.info("stats")["total_connections_received"]

    children = [p.pid for p in psutil.Process(celery_worker.pid).children()]
    names = [c.get("name") for c in redis_client.client_list()]
    per_child = {pid: names.count(f"push-{pid}") for pid in children}
    # Each worker process that pushed holds exactly one connection for it (its sync
    # pushes' client; the background loop's, for other work, is push-loop-<pid>).
    assert sorted(per_child.values()) in ([0, 1], [1, 1])
    assert sum(per_child.values()) >= 1
    # Results and the broker reuse their connections too; 100 pushes opened none.
    assert after - before <= 4


async def test_a_task_run_twice_pushes_once(daphne_server, celery_worker):
    """A redelivered task keeps its id: running it again must not push again."""
    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, "room.redelivered")

    task_id = f"paid-order-{uuid.uuid4()}"
    for _ in range(2):
        publish.apply_async(args=["room.redelivered", {"order": 17}], task_id=task_id)
    # Both runs share one result; wait until the worker has really run it twice.
    done = f"[{task_id}] succeeded"
    await asyncio.to_thread(
        celery_worker.wait_until, lambda: celery_worker.log_text().count(done) == 2, 30, "2 runs"
    )
    marker = await apush("room.redelivered", "marker")

    first = await recv_json(socket)
    assert first["data"] == {"order": 17}
    assert (await recv_json(socket))["seq"] == marker == first["seq"] + 1


async def test_a_worker_killed_mid_task_delivers_the_push_exactly_once(
    daphne_server, celery_worker, redis_client
):
    """SIGKILL on the process running a task that has pushed: the task runs again
    (late ack, rejected on worker loss) and the push still arrives once."""
    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, "room.killed-worker")

    result = push_then_work.delay("room.killed-worker", {"order": 42})
    pushed = await recv_json(socket)
    assert pushed["data"] == {"order": 42}
    _, pid = await asyncio.to_thread(redis_client.blpop, [f"test:{result.id}:pid"], 30)
    os.kill(int(pid), signal.SIGKILL)

    # Redelivered to a new pool process, the task runs again and returns the first push's seq.
    assert await asyncio.to_thread(result.get, timeout=60) == pushed["seq"]
    assert int(redis_client.get(f"test:{result.id}:runs")) == 2
    marker = await apush("room.killed-worker", "marker")
    assert (await recv_json(socket))["seq"] == marker == pushed["seq"] + 1
