"""Every benchmark script, run end to end at tiny sizes (``--smoke``), so none can rot.

Each starts its own Redis, servers, worker and clients in other processes,
prints one JSON line and stops what it started. These check that the line is
there, has the figures the summary reads, and that nothing was lost at smoke
size; the figures themselves are ``make bench``'s business.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"

pytestmark = [pytest.mark.bench, pytest.mark.timeout(180)]


def run_smoke(name: str) -> dict[str, Any]:
    """``python bench/<name>.py --smoke``: its JSON line."""
    script = BENCH_DIR / f"{name}.py"
    assert script.exists(), f"bench/{name}.py is gone"
    # A bench builds its own stack: none of this test session's Redis, database or settings.
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
        and not key.startswith("CELERY_")
    }
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=BENCH_DIR.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-4000:]}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"not one JSON line:\n{done.stdout[-2000:]}"
    record = json.loads(lines[0])
    assert record["bench"] == name
    if "skipped" in record:  # what it needs is missing here (chromium, coturn, root)
        pytest.skip(f"bench/{name}.py: {record['skipped']}")
    return record


def assert_both_systems(record: dict[str, Any]) -> None:
    assert isinstance(record["ours"], dict)
    assert isinstance(record["seed"], dict)
    assert isinstance(record["ratio"], dict)


def test_fanout() -> None:
    record = run_smoke("fanout")
    assert_both_systems(record)
    ours = record["ours"]
    assert ours["connected"] == record["clients"]
    assert ours["delivered"] == ours["expected"] > 0


def test_many_topics() -> None:
    record = run_smoke("many_topics")
    assert_both_systems(record)
    ours = record["ours"]
    assert ours["connected"] == record["clients"]
    assert ours["delivered"] == ours["expected"] > 0


def test_connect_storm() -> None:
    record = run_smoke("connect_storm")
    assert_both_systems(record)
    ours = record["ours"]
    assert ours["connected"] == record["clients"]
    assert ours["push_reached"] == ours["connected"]


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
    assert record["ours_publish_task"]["tasks_per_s"] > 0


def test_save_to_screen() -> None:
    record = run_smoke("save_to_screen")
    ours = record["ours"]
    assert ours["saves"] == 25
    assert ours["coalesce_ms"] == 250
    assert ours["pushes"] >= 1
    assert 0 < ours["p50_ms"] <= ours["p99_ms"] <= ours["max_ms"]
    assert record["seed"] is None
    assert record["seed_reason"]


def test_save_to_dom() -> None:
    record = run_smoke("save_to_dom")
    assert record["saves"] == 3
    assert 0 < record["p50_ms"] <= record["p99_ms"] <= record["max_ms"]


def test_chat_to_screen() -> None:
    record = run_smoke("chat_to_screen")
    assert record["messages"] == 3
    assert 0 < record["p50_ms"] <= record["p99_ms"] <= record["max_ms"]


def test_call_setup() -> None:
    record = run_smoke("call_setup")
    assert record["ice"] == "both"
    for mode in (record, record["relay"]):  # host figures at the top level, relay's nested
        assert mode["calls"] == 2
        assert 0 < mode["p50_ms"] <= mode["p99_ms"] <= mode["max_ms"]
        for side in ("callee_hears", "caller_hears"):
            assert 0 < mode[side]["p50_ms"] <= mode[side]["max_ms"] <= mode["max_ms"]
    assert record["relay"]["not_relayed"] == 0


def test_call_recovery() -> None:
    record = run_smoke("call_recovery")
    assert (record["faults"], record["blips"]) == (2, 2)
    # Every fault round recovered: by an ICE restart, without one, or on a new connection.
    assert record["recovered_rounds"] == 2
    ways = ("restarted_rounds", "recovered_without_restart", "new_connection_rounds")
    assert sum(record[way] for way in ways) == 2
    for figure in ("fault_to_audio", "blip_to_in_call", "audio_gap_ms", "audio_gap_calm_ms"):
        values = record[figure]  # 0 for audio back before the fault's end was read
        assert 0 <= values["p50_ms"] <= values["p99_ms"] <= values["max_ms"] < 60_000, figure
    assert record["alice_socket_drops"] == 0  # only Bob's socket was cut


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
