"""Benchmark scripts end to end at tiny sizes (``tests/bench/smoke.py``): sockets.

Fan-out, many topics, a connect storm.
"""

from __future__ import annotations

import pytest

from tests.bench.smoke import assert_both_systems, run_smoke

pytestmark = [pytest.mark.bench, pytest.mark.timeout(180)]


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
