"""Running a benchmark script at tiny sizes (``--smoke``) for the smoke tests.

Each script starts its own Redis, servers, worker and clients in other processes,
prints one JSON line and stops what it started. The tests check that the line is
there, has the figures the summary reads, and that nothing was lost at smoke size;
the figures themselves are ``make bench``'s business. The tests are in four files
(``test_smoke_*.py``), so that the test workers share them out.
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
