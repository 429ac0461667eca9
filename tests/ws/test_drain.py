"""``ws.drain``: closes spread over ``PUSH_DRAIN_S``, refusals meanwhile, the hand-over.

A ``Drain`` of its own per test, with a stand-in for the server (what
``ws.drain.running_server`` finds in a real one) and sockets that go away when closed, as
consumers do. The real servers are in ``tests/e2e/test_rolling_restart.py``.
"""

from __future__ import annotations

import asyncio
import signal
import time
from types import SimpleNamespace

import pytest

from ws import drain as drain_module
from ws.drain import Drain, RunningServer

SOCKETS = 40
LATE_S = 0.25


class FakeServer:
    def __init__(self) -> None:
        self.stopped_accepting = 0
        self.exited_at: float | None = None
        self.exited = asyncio.Event()

    def running(self) -> RunningServer:
        server = self

        class Running(RunningServer):
            def exit(self) -> None:
                server.exited_at = time.monotonic()
                server.exited.set()

        return Running("fake", 1012, signal.getsignal(signal.SIGTERM), self.stop_accepting)

    def stop_accepting(self) -> None:
        self.stopped_accepting += 1


class FakeSocket:
    """Goes away once closed, as a consumer does; or stays (``stays=True``)."""

    def __init__(self, drain: Drain, stays: bool = False) -> None:
        self.drain = drain
        self.stays = stays
        self.closed: list[tuple[int | bool | None, float]] = []

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        self.closed.append((code, time.monotonic()))
        if not self.stays:
            self.drain.unregister(self)


def no_signals(monkeypatch) -> list[object]:
    """The drain's view of ``signal``, recording instead of taking this process's SIGTERM."""
    installed: list[object] = []
    fake = SimpleNamespace(SIGTERM=signal.SIGTERM, signal=lambda *args: installed.append(args))
    monkeypatch.setattr(drain_module, "signal", fake)
    return installed


@pytest.fixture
def server(monkeypatch) -> FakeServer:
    fake = FakeServer()
    monkeypatch.setattr(drain_module, "running_server", fake.running)
    no_signals(monkeypatch)
    return fake


def open_sockets(drain: Drain, count: int, stays: bool = False) -> list[FakeSocket]:
    sockets = [FakeSocket(drain, stays) for _ in range(count)]
    for socket in sockets:
        drain.register(socket)
        assert drain.admit(socket)
    return sockets


async def test_closes_are_spread_one_per_slot_and_the_process_exits_once_all_are_gone(
    server, settings
):
    settings.PUSH_DRAIN_S = 1.0
    drain = Drain()
    sockets = open_sockets(drain, SOCKETS)
    began = time.monotonic()
    drain.begin()
    drain.begin()  # another SIGTERM changes nothing
    late = FakeSocket(drain)
    drain.register(late)  # was connecting: accepted during the drain, and refused
    assert not drain.admit(late)
    drain.unregister(late)

    await asyncio.wait_for(server.exited.wait(), 5)
    assert server.stopped_accepting == 1
    assert [code for socket in sockets for code, _ in socket.closed] == [1012] * SOCKETS
    # One close in each PUSH_DRAIN_S / N slot, in whatever order (never early; a busy
    # machine may run a timer late).
    times = sorted(at - began for socket in sockets for _, at in socket.closed)
    slot = settings.PUSH_DRAIN_S / SOCKETS
    for index, at in enumerate(times):
        assert index * slot - 0.001 <= at < (index + 1) * slot + LATE_S, (index, at)
    assert server.exited_at is not None
    assert server.exited_at - began < settings.PUSH_DRAIN_S + LATE_S


async def test_a_window_of_zero_closes_every_socket_at_once(server, settings):
    settings.PUSH_DRAIN_S = 0
    drain = Drain()
    sockets = open_sockets(drain, SOCKETS)
    drain.begin()
    await asyncio.wait_for(server.exited.wait(), 1)
    assert all(len(socket.closed) == 1 for socket in sockets)


async def test_sockets_that_do_not_go_are_left_to_the_server_after_the_grace(
    server, settings, monkeypatch
):
    settings.PUSH_DRAIN_S = 0.2
    monkeypatch.setattr(drain_module, "DRAIN_GRACE_S", 0.2)
    drain = Drain()
    stuck = open_sockets(drain, 3, stays=True)
    began = time.monotonic()
    drain.begin()
    await asyncio.wait_for(server.exited.wait(), 2)
    assert server.exited_at is not None
    assert server.exited_at - began >= 0.4
    assert all(len(socket.closed) == 1 for socket in stuck)


async def test_the_first_socket_takes_sigterm_over_from_a_known_server_only(server, monkeypatch):
    installed = no_signals(monkeypatch)
    open_sockets(Drain(), 2)
    assert len(installed) == 1

    monkeypatch.setattr(drain_module, "running_server", lambda: None)
    installed.clear()
    open_sockets(Drain(), 2)
    assert installed == []
