"""Benchmark scripts end to end at tiny sizes (``tests/bench/smoke.py``): the backend.

A worker's push rate, Redis' capacity.
"""

from __future__ import annotations

import pytest

from tests.bench.smoke import run_smoke

pytestmark = [pytest.mark.bench, pytest.mark.timeout(180)]


def test_worker_rate() -> None:
    record = run_smoke("worker_rate")
    ours, seed = record["ours"], record["seed"]
    assert ours["pushes"] == 300
    assert seed["pushes"] == 50
    assert ours["pushes_per_s"] > 0
    assert seed["pushes_per_s"] > 0
    assert record["ratio"]["pushes_per_s"] > 0
    # What the seed's path costs and ours does not: a Redis connection per push.
    assert seed["redis_connections_opened"] >= seed["pushes"]
    assert ours["redis_connections_opened"] < 10
    assert record["ours_publish_task"]["tasks"] == 50
    assert record["ours_many"]["pushes"] == 300
    assert record["ours_many"]["pushes_per_s"] > 0
    assert record["ours_publish_task"]["tasks_per_s"] > 0


def test_redis_capacity() -> None:
    record = run_smoke("redis_capacity")
    assert [run["subscribers"] for run in record["fan_out"]["runs"]] == [0, 4, 16]
    per_redis = record["per_redis"]
    for system in ("ours", "seed"):
        assert per_redis[system]["pushes_sent"] == 200
        assert per_redis[system]["redis_cpu_us_per_push"] is not None
    assert per_redis["ratio"]["pushes_per_s"] > 0
    shards = record["shards"]
    assert shards["ours-2-shards"]["delivered"] == shards["ours-2-shards"]["expected"] > 0
    # Both shards carried pushes.
    assert len(shards["ours-2-shards"]["redis_cpu_us_per_push_by_shard"]) == 2
