"""The ASGI servers that serve ``project.asgi:application``, as command lines.

Two are supported: **uvicorn** (the default: with uvloop and httptools it
spends a fraction of daphne's CPU per WebSocket frame, see the README's
benchmark figures) and **daphne**, the seed's server, with the seed's flags.
The Procfile, ``make run``, the tests and the benchmarks all take their
command line from here, so they serve the application the same way.

    web_argv("uvicorn", host="0.0.0.0", port=8010, workers=2)

The Procfile spells out the uvicorn line (``tests/test_servers.py`` checks it is
this one).
"""

from __future__ import annotations

import os
import sys
from typing import Literal

WebServer = Literal["uvicorn", "daphne"]
WEB_SERVERS: tuple[WebServer, ...] = ("uvicorn", "daphne")
DEFAULT_WEB_SERVER: WebServer = "uvicorn"
APPLICATION = "project.asgi:application"


def web_server_from_env(environ: dict[str, str] | None = None) -> WebServer:
    """``WEB_SERVER`` from the environment (``uvicorn`` or ``daphne``), else the default."""
    value = (environ if environ is not None else os.environ).get("WEB_SERVER", "")
    value = value.strip().lower() or DEFAULT_WEB_SERVER
    if value not in WEB_SERVERS:
        raise ValueError(f"WEB_SERVER must be one of {', '.join(WEB_SERVERS)}, got {value!r}")
    return value  # type: ignore[return-value]


def web_argv(
    server: WebServer,
    *,
    host: str,
    port: int | str,
    workers: int | str = 1,
    python: str = sys.executable,
) -> list[str]:
    """The command line that serves the application on ``host:port``.

    ``workers`` > 1 runs that many server processes on one listening socket
    (uvicorn only: daphne has no workers; run several daphnes behind a load
    balancer instead). They share the Redis channel layer like processes on
    different hosts do.
    """
    if server == "daphne":
        if str(workers) != "1":
            raise ValueError("daphne serves from one process; run several behind a balancer")
        return [
            python, "-m", "daphne", "-b", host, "-p", str(port), "--proxy-headers", APPLICATION,
        ]  # fmt: skip
    if server != "uvicorn":
        raise ValueError(f"unknown web server {server!r}")
    return [
        python, "-m", "uvicorn", APPLICATION,
        "--host", host, "--port", str(port),
        "--proxy-headers",
        "--loop", "uvloop", "--http", "httptools",
        # Browsers offer per-message-deflate; for small JSON frames it costs more
        # CPU (one zlib stream per socket) and memory (about 64 KiB per socket)
        # than it saves in bytes. Frames go out uncompressed.
        "--ws", "websockets-sansio", "--ws-per-message-deflate", "false",
        # Channels' ProtocolTypeRouter has no lifespan protocol.
        "--lifespan", "off",
        "--workers", str(workers),
        "--no-access-log",
    ]  # fmt: skip
