"""``make run``'s launcher: the whole stack from one command, stopped by Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any

import psutil
import pytest

from project.redis_server import free_port, ping
from tests.support.clients import open_socket, recv_json
from tests.support.processes import BASE_DIR, http_ok

STARTUP_BUDGET_S = 15


async def greeting_and_clock(port: int, timeout: float) -> tuple[Any, Any]:
    origin = f"http://127.0.0.1:{port}"
    socket = await open_socket(f"ws://127.0.0.1:{port}/ws/heartbeat/clock/", origin)
    greeting = await recv_json(socket)
    clock = await recv_json(socket, timeout=timeout)
    await socket.close()
    return greeting, clock


@pytest.mark.slow
def test_the_stack_serves_greeting_and_clock_within_15_s_and_stops_on_ctrl_c(child_env, tmp_path):
    env = dict(child_env, EMBEDDED_REDIS_DIR=str(tmp_path / "redis"))
    env.pop("REDIS_URL")  # the launcher starts its own Redis
    port = free_port()
    log_path = tmp_path / "stack.log"
    started = time.monotonic()
    with (
        open(log_path, "wb") as log,
        subprocess.Popen(
            [sys.executable, "-m", "project.devstack", "--port", str(port)],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ) as stack,
    ):
        try:
            while not http_ok(f"http://127.0.0.1:{port}/healthz"):
                assert stack.poll() is None, log_path.read_text()
                assert time.monotonic() - started < STARTUP_BUDGET_S, log_path.read_text()
                time.sleep(0.1)
            budget = STARTUP_BUDGET_S - (time.monotonic() - started)
            greeting, clock = asyncio.run(greeting_and_clock(port, budget))
            print(f"greeting and clock push {time.monotonic() - started:.1f} s after start")
            assert greeting == {"msg": "heartbeat", "code": 200, "data": []}
            assert clock["msg"] == "clock"
            assert "server_time" in clock["data"]

            record = json.loads((tmp_path / "redis" / "server.json").read_text())
            processes = psutil.Process(stack.pid).children(recursive=True)
            assert len(processes) >= 3  # daphne, the worker and its pool, beat
        finally:
            stack.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
            returncode = stack.wait(timeout=60)

    assert returncode in (0, 130, -signal.SIGINT)
    _, alive = psutil.wait_procs(processes, timeout=30)
    assert alive == []
    assert not ping("127.0.0.1", record["port"])
