"""Benchmark scripts end to end at tiny sizes (``tests/bench/smoke.py``): calls.

Their setup and their recovery from faults.
"""

from __future__ import annotations

import pytest

from tests.bench.smoke import run_smoke

pytestmark = [pytest.mark.bench, pytest.mark.timeout(180)]


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
