"""Leaving without a reconnect storm: on SIGTERM a web process closes its sockets a few at a time.

Left to themselves, uvicorn and daphne close every socket at once on SIGTERM, and
every client reconnects to the processes that stay in the same instant. Here the
process's first socket installs ``drain`` as the SIGTERM handler (the server's
own is kept, see ``ws/_servers.py``). On SIGTERM the drain

1. stops the server accepting: new sockets go to the other processes on the
   port, or behind the balancer;
2. closes its sockets in random order, one in each ``PUSH_DRAIN_S / N`` slot of
   the window at a random point in it, with ``1012`` (service restart; ``4000``
   on daphne). push.js reconnects at once, lands on another process and resumes
   with ``since`` and ``epoch``: nothing is lost or repeated;
3. closes a socket accepted meanwhile (it was already connecting) the same
   way, at once;
4. hands over to the server's own SIGTERM handling once every socket is gone,
   or ``DRAIN_GRACE_S`` after the window at the latest (the server then closes
   what is left at once): the server shuts down and the process exits.

``PUSH_DRAIN_S = 0`` closes every socket at once. Another SIGTERM during the drain
changes nothing (systemd signals every process of the unit, and uvicorn's
supervisor passes its own SIGTERM on to each worker); SIGINT, left to the server,
stops it at once. Under a server the drain does not know, or outside the main
thread, SIGTERM is left to the server.

Consumers only ``register`` a socket as it arrives, ``admit`` it once accepted
and ``unregister`` it when it is gone (``ws/consumers/base.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
import weakref
from types import FrameType
from typing import Protocol

from ws._servers import RunningServer, running_server
from ws.conf import push_settings
from ws.protocol import CloseCode

logger = logging.getLogger("ws")

# ``RunningServer``: what the drain needs of the server (tests stand one in).
__all__ = ["DRAIN_GRACE_S", "REASON", "Drain", "RunningServer", "drain"]

# How long after the window the last sockets have to finish closing.
DRAIN_GRACE_S = 5.0
# The close reason sent with the drain's close code.
REASON = "server restarting: reconnect"


class Closable(Protocol):
    """A socket the drain can close: our consumers."""

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None: ...


class Drain:
    """This process's open sockets, and how they are closed when it is told to go."""

    def __init__(self) -> None:
        # Every socket being served (accepted or not yet), and those accepted: a socket
        # still connecting when the drain begins is closed once accepted.
        self.sockets: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.accepted: weakref.WeakSet[Closable] = weakref.WeakSet()
        self.refused = 0
        self.draining = False
        self.close_code = int(CloseCode.SERVICE_RESTART)
        self._installed = False
        self._server: RunningServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []
        self._closing: set[asyncio.Task[None]] = set()
        self._began_at = 0.0
        self._handed_over = False

    def register(self, socket: Closable) -> None:
        """A socket arrives: it counts until ``unregister``. The first installs the drain."""
        if not self._installed:
            self._install()
        self.sockets.add(socket)

    def admit(self, socket: Closable) -> bool:
        """The socket is accepted; False during a drain: close it with ``close_code``."""
        if self.draining:
            self.refused += 1
            return False
        self.accepted.add(socket)
        return True

    def unregister(self, socket: Closable) -> None:
        """A socket is gone; the last one to go during a drain lets the process exit."""
        self.sockets.discard(socket)
        self.accepted.discard(socket)
        if self.draining and not self.sockets:
            self._hand_over("every socket is gone")

    def _install(self) -> None:
        self._installed = True
        if threading.current_thread() is not threading.main_thread():
            return
        server = running_server()
        if server is None:
            logger.info("ws drain off: SIGTERM is left to this server")
            return
        self._server = server
        self.close_code = server.close_code
        self._loop = asyncio.get_running_loop()
        # signal.signal, as both servers do, rather than loop.add_signal_handler: that
        # takes over the loop's wakeup fd and, removed, leaves SIG_DFL, not the server's.
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        assert self._loop is not None
        assert self._server is not None
        if self._loop.is_closed():  # the server is past serving: its own handling
            self._server.exit()
            return
        self._loop.call_soon_threadsafe(self.begin)

    def begin(self) -> None:
        """Start the drain (SIGTERM); once started, another call changes nothing."""
        if self.draining:
            return
        assert self._server is not None
        assert self._loop is not None
        self.draining = True
        self._began_at = time.monotonic()
        self._server.stop_accepting()
        sockets = list(self.accepted)
        random.shuffle(sockets)
        window = push_settings.PUSH_DRAIN_S
        logger.info(
            "ws draining: closing %d sockets over %g s with %d (SIGTERM)",
            len(sockets),
            window,
            self.close_code,
        )
        for index, socket in enumerate(sockets):
            at = window * (index + random.random()) / len(sockets)  # noqa: S311 - jitter
            self._timers.append(self._loop.call_later(at, self._close, socket))
        self._timers.append(
            self._loop.call_later(window + DRAIN_GRACE_S, self._hand_over, "the window is over")
        )
        if not self.sockets:
            self._hand_over("no sockets")

    def _close(self, socket: Closable) -> None:
        if socket not in self.accepted:
            return
        task = asyncio.ensure_future(socket.close(code=self.close_code, reason=REASON))
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("ws drain could not close a socket: %r", task.exception())

    def _hand_over(self, why: str) -> None:
        if self._handed_over or self._server is None:
            return
        self._handed_over = True
        for timer in self._timers:
            timer.cancel()
        logger.info(
            "ws drained in %.2f s (%s), %d sockets left, %d refused meanwhile: %s shuts down",
            time.monotonic() - self._began_at,
            why,
            len(self.sockets),
            self.refused,
            self._server.name,
        )
        self._server.exit()


drain = Drain()
