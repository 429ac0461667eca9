"""The ASGI server running this process, as the drain (``ws/drain.py``) needs to know it.

The one module that reaches into the servers. Neither uvicorn nor daphne lets an
application leave gracefully: on SIGTERM uvicorn closes every WebSocket at once
(``1012``) and daphne cancels every application and drops its socket, so all
clients reconnect in the same instant. The drain takes SIGTERM over and needs
four things from the server, found here:

- **which server**: both install their SIGTERM handler with ``signal.signal``
  (uvicorn its ``Server.handle_exit``, daphne Twisted's ``reactor.sigTerm``), so
  the handler in place names the server, and is its own way out. That the
  handler is uvicorn's bound method is not documented: the first internal;
- **stop accepting**: uvicorn keeps its listening ``asyncio.Server`` objects in
  ``Server.servers``, the second internal (its own shutdown closes them the same
  way, so closing them earlier is harmless to it). With ``--workers`` each worker
  closes only its copy of the shared socket: the others go on accepting. Twisted
  lists listening ports among ``reactor.getReaders()`` and stops one with
  ``stopListening()``, both public;
- **the close code** a client takes as "reconnect, elsewhere": ``1012`` (service
  restart); daphne's autobahn sends only 1000 and 3000-4999, so there ``4000``
  (resync), which push.js treats the same way;
- **its own exit**: calling that handler as the signal would have.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ws.protocol import CloseCode

SignalHandler = Callable[[int, FrameType | None], Any]


@dataclass(frozen=True)
class RunningServer:
    """The server of this process: its name, close code, SIGTERM handler, listeners."""

    name: str
    close_code: int
    handler: SignalHandler
    stop_accepting: Callable[[], None]

    def exit(self) -> None:
        """Hand over to the server's own SIGTERM handling: it shuts down and exits."""
        signal.signal(signal.SIGTERM, self.handler)
        self.handler(signal.SIGTERM, None)


def running_server() -> RunningServer | None:
    """The server whose SIGTERM handler is installed, or None (another, or none)."""
    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    if owner is None or not callable(handler):
        return None
    uvicorn_server = getattr(sys.modules.get("uvicorn.server"), "Server", None)
    if uvicorn_server is not None and isinstance(owner, uvicorn_server):
        return RunningServer("uvicorn", int(CloseCode.SERVICE_RESTART), handler, _closer(owner))
    twisted_base = getattr(sys.modules.get("twisted.internet.base"), "ReactorBase", None)
    if twisted_base is not None and isinstance(owner, twisted_base):
        return RunningServer("daphne", int(CloseCode.RESYNC), handler, _port_stopper(owner))
    return None


def _closer(server: Any) -> Callable[[], None]:
    def stop_accepting() -> None:
        for listener in getattr(server, "servers", ()):
            listener.close()

    return stop_accepting


def _port_stopper(reactor: Any) -> Callable[[], None]:
    from twisted.internet.interfaces import IListeningPort

    def stop_accepting() -> None:
        for reader in reactor.getReaders():
            if IListeningPort.providedBy(reader):
                reader.stopListening()

    return stop_accepting
