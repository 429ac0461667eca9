"""Pushes per second from one Celery worker process: our push API against the seed's.

A stack of its own: a throwaway Redis and one real Celery worker (prefork pool,
concurrency 1: a single worker process) that loads ``bench/tasks_bench.py``.
One task pushes K messages back to back inside that process, timed there:

- ours: ``ws.push.push(topic, data)`` (numbered and stored for resume, as in
  production: one background loop and one Redis client per process);
- seed: the seed's ``async_to_sync(SendMessage(room).send)(...)``, one
  ``async_to_sync`` per push, on the seed's core layer with encryption keys;
- ours_many: the same K messages through ``ws.push_many``, ``--batch`` at a time
  (messages per second; target 20,000);
- ours_publish_task: K ``publish.delay()`` tasks drained by the same worker
  (tasks per second, broker round trips and acknowledgements included).

Also counts the Redis connections each path opened. Prints one JSON line.

    .venv/bin/python bench/worker_rate.py --pushes 20000
    .venv/bin/python bench/worker_rate.py --smoke
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Stack, emit, environment_stamp
from tests.support.processes import ChildProcess

TARGET_PUSHES_PER_S = 4000
TARGET_BATCHED_PER_S = 20000


class BenchWorker(ChildProcess):
    """One Celery worker process (prefork, concurrency 1) with the bench tasks loaded."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, hostname: str):
        self.hostname = hostname
        argv = [
            sys.executable, "-m", "celery", "-A", "project", "worker",
            "--pool", "prefork", "--concurrency", "1", "--hostname", hostname,
            "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--include", "bench.tasks_bench",
        ]  # fmt: skip
        super().__init__("worker", argv, env, log_dir)


def connections_received(client: Any) -> int:
    return int(client.info("stats")["total_connections_received"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=20000, help="pushes of our path")
    parser.add_argument(
        "--seed-pushes",
        type=int,
        default=2000,
        help="pushes of the seed's path (each opens a loop and a connection: keep it short)",
    )
    parser.add_argument("--tasks", type=int, default=2000, help="publish tasks (0: skip)")
    parser.add_argument("--batch", type=int, default=100, help="messages per push_many call")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        options.pushes, options.seed_pushes, options.tasks = 300, 50, 50

    with Stack("ours", server=False, name="bench-worker-rate") as stack:
        # This process queues the tasks and reads the results: the stack's settings.
        os.environ.update(stack.env)
        import redis

        from project.celery import app

        assert stack.redis is not None
        client = redis.Redis.from_url(stack.redis.url)
        hostname = f"bench-rate-{os.getpid()}@localhost"
        worker = BenchWorker(stack.env, stack.directory, hostname)
        stack.processes.append(worker)  # stopped with the stack
        deadline = time.monotonic() + 60
        while not app.control.ping(destination=[hostname], timeout=1):
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("worker did not start:\n" + worker.log_text()[-4000:])

        def run_loop(variant: str, count: int) -> dict[str, Any]:
            before = connections_received(client)
            started = time.perf_counter()
            pending = app.send_task("bench.push_loop", args=[variant, count, options.batch])
            result = pending.get(timeout=600)
            # Let go of it while Redis is up: its finaliser unsubscribes from the result.
            del pending
            gc.collect()
            wall = time.perf_counter() - started
            return {
                "pushes": result["pushes"],
                "pushes_per_s": round(result["pushes"] / result["elapsed_s"], 1),
                "per_push_ms": round(result["elapsed_s"] * 1000 / result["pushes"], 3),
                "wall_s": round(wall, 3),
                "redis_connections_opened": connections_received(client) - before,
            }

        ours = run_loop("ours", options.pushes)
        ours_many = run_loop("ours_many", options.pushes)
        seed = run_loop("seed", options.seed_pushes)
        figures: dict[str, Any] = {
            "bench": "worker_rate",
            "ours": ours,
            "seed": seed,
            "ratio": {"pushes_per_s": round(ours["pushes_per_s"] / seed["pushes_per_s"], 1)},
            "target_pushes_per_s": TARGET_PUSHES_PER_S,
            "met": ours["pushes_per_s"] >= TARGET_PUSHES_PER_S,
            "ours_many": {**ours_many, "batch": options.batch},
            "target_batched_per_s": TARGET_BATCHED_PER_S,
            "batched_met": ours_many["pushes_per_s"] >= TARGET_BATCHED_PER_S,
            "seed_path": "bench/reference: the seed's SendMessage and CHANNEL_LAYERS (core "
            "RedisChannelLayer + symmetric_encryption_keys), one async_to_sync per push",
        }
        if options.tasks:
            figures["ours_publish_task"] = publish_tasks(app, client, options.tasks)
        figures["environment"] = environment_stamp()
        client.close()
        emit(figures)


def publish_tasks(app: Any, client: Any, count: int) -> dict[str, Any]:
    """Queue ``count`` publish tasks, then time the worker draining them (tasks per second)."""
    topic = "dashboard.bench_tasks"
    from ws import keys

    meta = keys.topic(topic).meta
    # Queued while nothing consumes them is not possible here (the worker is up), so time
    # from the first send until the last push is numbered: queueing is far faster.
    started = time.perf_counter()
    for n in range(count):
        app.send_task("ws.publish", args=[topic, {"n": n}], ignore_result=True)
    queued = time.perf_counter() - started
    deadline = time.monotonic() + 600
    while int(client.hget(meta, "seq") or 0) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"publish tasks: {client.hget(meta, 'seq')} of {count} ran")
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    return {
        "tasks": count,
        "tasks_per_s": round(count / elapsed, 1),
        "queue_s": round(queued, 3),
        "wall_s": round(elapsed, 3),
    }


if __name__ == "__main__":
    main()
