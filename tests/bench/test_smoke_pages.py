"""Benchmark scripts end to end at tiny sizes (``tests/bench/smoke.py``): pages.

From a save to the screen and the DOM, chat to the screen.
"""

from __future__ import annotations

import pytest

from tests.bench.smoke import run_smoke

pytestmark = [pytest.mark.bench, pytest.mark.timeout(180)]


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
