"""Redis capacity: what one Redis takes per push, and what two shards carry under a stack.

Three measurements; the seed's setup as written is measured beside ours where it has
the same path:

0. ``fan_out``: Redis's CPU per ``push()`` with 0, 4 and 16 processes subscribed to the
   topic's channel: what each more web process watching a topic costs Redis per push.

1. ``per_redis``: 20 sockets in one room (ours on two uvicorn processes, so the room's
   pub/sub channel has two subscribers; the seed's 20 channels are members of its
   group), and ``--publishers`` processes pushing to the room as fast as they can.
   The figure is the Redis process's own CPU per push (from /proc), which says how many
   pushes one Redis core carries whatever the publishers manage on this machine; also
   pushes per second, and the publishers' CPU share (100 = a core each).
2. ``shards``: ``--clients`` sockets over ``--rooms`` rooms on ``--web-processes``
   uvicorn processes, pushes to random rooms at ``--rate``: ours on one Redis, ours on
   two shards (``REDIS_SHARD_URLS``), the seed on its one Redis. Delivered, latency,
   server CPU per frame, and each Redis server's CPU per push. (``--smoke``: the
   sharded stack only.)

    .venv/bin/python bench/redis_capacity.py
    .venv/bin/python bench/redis_capacity.py --clients 3000 --rooms 30 --rate 150
    .venv/bin/python bench/redis_capacity.py --smoke
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PUSH_RATIOS,
    ClientFleet,
    Stack,
    emit,
    environment_stamp,
    exit_on_signals,
    note,
    push_round,
    raise_nofile_limit,
    ratios,
    run_publisher,
)

ROOM = "capacity"
MEMBERS = 20

# Lower is better for these: ratios are seed/ours.
PER_REDIS_RATIOS = {"redis_cpu_us_per_push": False, "pushes_per_s": True}


def per_redis(system: str, publishers: int, pushes: int) -> dict[str, Any]:
    """Redis CPU per push with ``MEMBERS`` sockets in the room; ``publishers`` unpaced."""
    web_processes = 2 if system == "ours" else 1
    with (
        Stack(system, web_processes=web_processes) as stack,
        ClientFleet([stack.ws_url(ROOM)] * MEMBERS, origin=stack.origin, processes=1) as fleet,
    ):
        connected = fleet.connect(timeout=60)["connected"]
        before = stack.redis_cpu_s()[0]
        reports: list[dict[str, Any]] = []

        def one() -> None:
            reports.append(run_publisher(stack, [ROOM], pushes, rate=0.0))

        threads = [threading.Thread(target=one) for _ in range(publishers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        redis_cpu_s = stack.redis_cpu_s()[0] - before
        fleet.stop()
    sent = sum(report.get("sent", 0) for report in reports)
    elapsed = max((report.get("elapsed_s", 0.0) for report in reports), default=0.0)
    return {
        "members": connected,
        "web_processes": web_processes,
        "publishers": publishers,
        "pushes_sent": sent,
        "publisher_errors": [report.get("errors", {}) for report in reports],
        "pushes_per_s": round(sent / elapsed, 1) if elapsed else 0.0,
        "redis_cpu_us_per_push": round(redis_cpu_s * 1e6 / sent, 1) if sent else None,
        "redis_cpu_pct": round(100 * redis_cpu_s / elapsed, 1) if elapsed else None,
        "publisher_cpu_pct": [
            round(100 * report["cpu_s"] / report["elapsed_s"], 1)
            for report in reports
            if report.get("elapsed_s")
        ],
    }


def _drain(subscriber: Any, stop: threading.Event) -> None:
    """Read what a subscriber gets until ``stop``, as a web process's reader does."""
    while not stop.is_set():
        subscriber.get_message(timeout=0.05)


def fan_out(subscriber_counts: list[int], pushes: int) -> dict[str, Any]:
    """Redis CPU per push against how many processes subscribe to the topic's channel.

    Each subscriber is a redis-py pub/sub connection of this process on the room's
    group channel, as a web process holding a socket of the room has one; pushes
    are ``push()`` from this process. The growth per subscriber is what one more web
    process watching a topic costs Redis for each of its pushes.
    """
    import redis

    with Stack("ours", server=False) as stack:
        stack.use_in_this_process()
        from ws import topics
        from ws.push import push
        from ws.store import group_channel

        topic = topics.seed_room_topic(ROOM)
        channel = group_channel("asgi", topics.group_name(topic))
        assert stack.redis is not None
        admin = redis.Redis.from_url(stack.redis.url)
        runs = []
        for count in subscriber_counts:
            subscribers = [redis.Redis.from_url(stack.redis.url).pubsub() for _ in range(count)]
            for subscriber in subscribers:
                subscriber.subscribe(channel)
            stop = threading.Event()

            readers = [
                threading.Thread(target=_drain, args=(subscriber, stop))
                for subscriber in subscribers
            ]
            for reader in readers:
                reader.start()
            before = admin.info("cpu")
            for n in range(pushes):
                push(topic, {"n": n, "pad": "x" * 100})
            after = admin.info("cpu")
            stop.set()
            for reader in readers:
                reader.join()
            for subscriber in subscribers:
                subscriber.close()
            used = sum(after[k] - before[k] for k in ("used_cpu_sys", "used_cpu_user"))
            runs.append(
                {"subscribers": count, "redis_cpu_us_per_push": round(used * 1e6 / pushes, 1)}
            )
        admin.close()
    first, last = runs[0], runs[-1]
    growth = (last["redis_cpu_us_per_push"] - first["redis_cpu_us_per_push"]) / max(
        1, last["subscribers"] - first["subscribers"]
    )
    return {"pushes": pushes, "runs": runs, "redis_cpu_us_per_subscriber": round(growth, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--pushes", type=int, default=3000, help="per publisher, per_redis")
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--rate", type=float, default=100.0, help="pushes/s in the shards run")
    parser.add_argument("--shard-pushes", type=int, default=1000)
    parser.add_argument("--web-processes", type=int, default=3)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    options = parser.parse_args()
    if options.smoke:
        options.pushes, options.clients, options.rooms = 100, 40, 4
        options.rate, options.shard_pushes, options.web_processes = 20.0, 20, 2
    exit_on_signals()
    raise_nofile_limit()

    record: dict[str, Any] = {"bench": "redis_capacity"}
    note("fan_out: Redis CPU per push against subscribed processes")
    record["fan_out"] = fan_out([0, 4, 16], 200 if options.smoke else 3000)
    by_system = {}
    for system in ("ours", "seed"):
        note(f"per_redis: {system}")
        by_system[system] = per_redis(system, options.publishers, options.pushes)
    record["per_redis"] = {
        **by_system,
        "ratio": ratios(by_system["ours"], by_system["seed"], PER_REDIS_RATIOS),
    }

    rooms = [f"{ROOM}{n}" for n in range(options.rooms)]  # the seed's room names are \w+
    client_rooms = [rooms[n % len(rooms)] for n in range(options.clients)]
    push_rooms = random.Random(7).choices(rooms, k=options.shard_pushes)  # noqa: S311
    shards: dict[str, Any] = {
        "clients": options.clients,
        "rooms": options.rooms,
        "rate": options.rate,
        "web_processes": options.web_processes,
    }
    runs = [("ours", "ours", 1), ("ours-2-shards", "ours", 2), ("seed", "seed", 1)]
    if options.smoke:  # the sharded stack alone: the seed was run above
        runs = runs[1:2]
    for name, system, count in runs:
        note(f"shards: {name}")
        shards[name] = push_round(
            system,
            client_rooms,
            push_rooms,
            pushes=options.shard_pushes,
            rate=options.rate,
            processes=options.client_processes,
            web_processes=options.web_processes,
            redis_shards=count,
            deliver_timeout=20 if options.smoke else None,
        )
    if "seed" in shards:
        shards["ratio_2_shards_seed"] = ratios(shards["ours-2-shards"], shards["seed"], PUSH_RATIOS)
        shards["ratio_2_shards_1_shard"] = ratios(
            shards["ours-2-shards"], shards["ours"], PUSH_RATIOS
        )
    record["shards"] = shards
    record["environment"] = environment_stamp()
    emit(record)


if __name__ == "__main__":
    main()
