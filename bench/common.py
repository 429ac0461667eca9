"""Shared helpers of the benchmarks: stacks, client processes, a publisher, figures.

A benchmark starts everything it measures and stops it again, even on Ctrl-C:

    with Stack("ours") as stack, ClientFleet([stack.ws_url("bench")] * 200,
                                             origin=stack.origin) as fleet:
        connected = fleet.connect(timeout=60)
        sent = run_publisher(stack, ["bench"], pushes=100, rate=20)
        fleet.wait_delivered(expected=connected["connected"] * sent["sent"], timeout=30)
        result = fleet.stop()
    emit({"bench": "example", **result})

``Stack("ours")`` is this project (uvicorn serving ``project.asgi:application``,
our channel layer, a migrated throwaway SQLite database), ``Stack("ours-daphne")``
the same on daphne; ``Stack("seed")`` is the
seed's setup as written (``bench/reference/``: daphne, ``RedisChannelLayer``
with the seed's settings, the seed's consumer). Each has its own throwaway
``redis-server``. Both serve the seed route, ``ws_url(room)``, so a client is
the same for both.

Clients run in other OS processes (``multiprocessing`` spawn), each with one
asyncio loop and many ``websockets`` connections offering per-message-deflate as
a browser does; they report their own CPU time so a result can show that they
were not the bottleneck. This module imports no Django: client processes stay lean.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

BASE_DIR = Path(__file__).resolve().parent.parent
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from project.redis_server import RedisServer, free_port  # noqa: E402
from tests.support.processes import (  # noqa: E402
    CeleryWorker,
    ChildProcess,
    WebServer,
    manage,
)

__all__ = [
    "BASE_DIR",
    "PUSH_RATIOS",
    "REFERENCE_DIR",
    "SYSTEMS",
    "SYSTEM_CHOICES",
    "ClientFleet",
    "Stack",
    "System",
    "add_ratios",
    "emit",
    "environment_stamp",
    "exit_on_signals",
    "latency_figures",
    "note",
    "percentile",
    "process_cpu_s",
    "process_rss_kib",
    "push_round",
    "raise_nofile_limit",
    "ratios",
    "run_publisher",
    "systems_from",
]

# "ours": this project on its default server (uvicorn); "ours-daphne": this
# project on daphne, the seed's server; "seed": bench/reference as written.
System = Literal["ours", "ours-daphne", "seed"]
SYSTEMS: tuple[System, ...] = ("ours", "ours-daphne", "seed")
SYSTEM_CHOICES = ("ours", "ours-daphne", "seed", "both", "all")

# How long a server may take to answer after it starts.
SERVER_START_TIMEOUT_S = 60.0


# --- small figures helpers ---------------------------------------------------------------


def raise_nofile_limit() -> int:
    """Raise this process's open-files limit to the hard limit; the new soft limit.

    Children inherit it, so call it before starting servers and clients.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def exit_on_signals() -> None:
    """Turn SIGTERM (and SIGINT, even where a shell ignored it) into ``KeyboardInterrupt``.

    So that a benchmark stopped by ``kill`` or by its runner still runs its
    ``finally`` blocks and stops every process it started.
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank); 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def latency_figures(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """``p50_ms``, ``p99_ms``, ``max_ms`` of latencies given in seconds (None when empty)."""
    if not latencies_s:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies_s)
    return {
        "p50_ms": round(percentile(ordered, 0.50) * 1000, 1),
        "p99_ms": round(percentile(ordered, 0.99) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def ratios(
    ours: Mapping[str, Any], seed: Mapping[str, Any], higher_is_better: Mapping[str, bool]
) -> dict[str, float | None]:
    """Our/seed ratio per figure, oriented so that above 1 means ours is better.

    ``higher_is_better[key]`` True gives ours/seed (throughput), False gives
    seed/ours (latency, memory). None where a figure is missing or zero.
    """
    result: dict[str, float | None] = {}
    for key, higher in higher_is_better.items():
        a, b = ours.get(key), seed.get(key)
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            result[key] = None
            continue
        top, bottom = (a, b) if higher else (b, a)
        result[key] = round(top / bottom, 2) if bottom else None
    return result


def add_ratios(record: dict[str, Any], higher_is_better: Mapping[str, bool]) -> None:
    """Add ``ratio`` (ours/seed) and ``ratio_ours_daphne`` (ours on daphne/seed) to ``record``."""
    if "seed" not in record:
        return
    for system, key in (("ours", "ratio"), ("ours-daphne", "ratio_ours_daphne")):
        if system in record:
            record[key] = ratios(record[system], record["seed"], higher_is_better)


def emit(record: Mapping[str, Any]) -> None:
    """Print ``record`` as the benchmark's one JSON line (on stdout, flushed)."""
    print(json.dumps(record, separators=(", ", ": ")), flush=True)


def note(text: str) -> None:
    """Progress for the human watching, on stderr (stdout carries only the JSON line)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def process_rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (0 if it is gone)."""
    import psutil

    try:
        return int(psutil.Process(pid).memory_info().rss // 1024)
    except psutil.Error:
        return 0


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used (0 if it is gone)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def environment_stamp() -> dict[str, Any]:
    """Versions and machine load, to read the figures against."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    packages = ("channels", "channels-redis", "redis", "daphne", "uvicorn", "uvloop", "django",
                "websockets")  # fmt: skip
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }


def systems_from(option: str | None, *, smoke: bool = False) -> tuple[System, ...]:
    """``--system`` as the systems to run, ours first: ``both`` is ours and the
    seed, ``all`` adds ours on daphne.

    Unset, it is ``all``, or ``both`` with ``--smoke``: a smoke run checks that
    the script works against ours and the seed, and ours on daphne (the same
    project on another server) would only add a stack's start-up to the test suite.
    """
    if option is None:
        option = "both" if smoke else "all"
    if option == "all":
        return SYSTEMS
    if option == "both":
        return ("ours", "seed")
    return (option,)  # type: ignore[return-value]


def is_project(system: System) -> bool:
    """Whether ``system`` runs this project (on either server) rather than the seed."""
    return system != "seed"


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- the systems under test --------------------------------------------------------------


class Stack:
    """A throwaway Redis plus one system's web server, all stopped by ``stop()``/``with``.

    ``system`` is ``"ours"`` (this project on its default server, uvicorn; its
    SQLite database migrated once), ``"ours-daphne"`` (this project on daphne)
    or ``"seed"`` (``bench/reference`` on daphne). ``server=False`` starts only
    Redis (and, for ours, the database), e.g. for a Celery-only benchmark.
    ``web_processes`` > 1 runs that many uvicorn workers on one port (ours only).
    ``extra_env`` is added to the servers' environment (``PUSH_CHANNEL_CAPACITY=...``).
    ``redis_shards`` > 1 starts that many Redis servers and shards ours over them
    (``REDIS_SHARD_URLS``; Celery on the first).
    """

    def __init__(
        self,
        system: System,
        *,
        server: bool = True,
        web_processes: int = 1,
        extra_env: Mapping[str, str] | None = None,
        name: str = "bench",
        redis_shards: int = 1,
    ) -> None:
        if system not in SYSTEMS:
            raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
        if web_processes != 1 and system != "ours":
            raise ValueError("only ours (uvicorn) runs several web processes on one port")
        self.system = system
        self.project = is_project(system)
        self.want_server = server
        self.web_processes = web_processes
        self.extra_env = dict(extra_env or {})
        self.directory = Path(tempfile.mkdtemp(prefix=f"{name}-{system}-"))
        if redis_shards != 1 and not is_project(system):
            raise ValueError("only ours shards over several Redis servers")
        self.redis_shards = redis_shards
        self.redis: RedisServer | None = None
        self.shards: list[RedisServer] = []  # every Redis server, self.redis first
        self.server: ChildProcess | None = None
        self.processes: list[ChildProcess] = []
        self.port = 0
        self.env: dict[str, str] = {}

    # life cycle

    def start(self) -> Stack:
        raise_nofile_limit()
        try:
            self.shards = [
                RedisServer.start(self.directory / f"redis-{n}", tied_to_parent=True)
                for n in range(self.redis_shards)
            ]
            self.redis = self.shards[0]
            self.env = self._environment()
            if self.project:
                migrated = manage(["migrate", "--verbosity", "0"], self.env, timeout=300)
                if migrated.returncode != 0:
                    raise RuntimeError(f"migrate failed:\n{migrated.stderr}")
            if self.want_server:
                self.port = free_port()
                self.server = self._start_server()
                self.processes.append(self.server)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every process this stack started, newest first; remove its files."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                process.stop(timeout=10)
        self.processes.clear()
        for shard in self.shards:
            shard.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _environment(self) -> dict[str, str]:
        assert self.redis is not None
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "DATABASE_URL", "REDIS_URL"}
        }
        env.update(REDIS_URL=self.redis.url, PYTHONUNBUFFERED="1")
        if self.project:
            env.update(
                DJANGO_SETTINGS_MODULE="project.settings",
                DATABASE_URL=f"sqlite:///{self.directory / 'db.sqlite3'}",
                CELERY_BROKER_URL=self.redis.url,
            )
            if len(self.shards) > 1:
                env["REDIS_SHARD_URLS"] = ",".join(shard.url for shard in self.shards)
        else:
            env.update(DJANGO_SETTINGS_MODULE="seedproject.settings", PYTHONPATH=str(REFERENCE_DIR))
        env.update(self.extra_env)
        return env

    def _start_server(self) -> ChildProcess:
        if self.system == "ours":
            return WebServer(
                self.env, self.directory, self.port, "uvicorn", workers=self.web_processes,
                name="uvicorn-ours",
            )  # fmt: skip
        if self.system == "ours-daphne":
            return WebServer(self.env, self.directory, self.port, "daphne", name="daphne-ours")
        # The seed's deployment line, on a local port: daphne -b ... -p ... --proxy-headers.
        argv = [
            sys.executable, "-m", "daphne",
            "-b", "127.0.0.1", "-p", str(self.port), "--proxy-headers",
            "seedproject.asgi:application",
        ]  # fmt: skip
        server = ChildProcess("daphne-seed", argv, self.env, self.directory)
        server.wait_until(lambda: _port_open(self.port), SERVER_START_TIMEOUT_S, "open port")
        return server

    def add_server(self, name: str, extra_env: Mapping[str, str] | None = None) -> WebServer:
        """Another uvicorn of ours on this stack's Redis and database, on a port of its own,
        with ``extra_env`` added to its environment; stopped with the stack.

        So one benchmark can compare server settings (call_setup: TURN only) with
        one Redis, one database and this process's Django pointed at both.
        """
        if not self.project:
            raise ValueError("only ours runs extra servers")
        env = {**self.env, **(extra_env or {})}
        server = WebServer(env, self.directory, free_port(), "uvicorn", name=name)
        self.processes.append(server)
        return server

    def use_in_this_process(self) -> None:
        """Point this process's Django (ORM, push API) at the stack's database and Redis."""
        os.environ.update(self.env)
        import django

        django.setup()

    def start_worker(self, concurrency: int = 2, name: str = "worker") -> CeleryWorker:
        """A Celery worker of this project on this stack's Redis (ours only)."""
        if not self.project:
            raise ValueError("the seed has no Celery worker of its own")
        worker = CeleryWorker(
            self.env, self.directory, f"{name}-{os.getpid()}@localhost", name, concurrency
        )
        self.processes.append(worker)
        return worker

    # addresses

    @property
    def origin(self) -> str:
        """The Origin header a page served by this server sends."""
        return f"http://127.0.0.1:{self.port}"

    def room_path(self, room: str) -> str:
        """The seed route of ``room`` on this system (ours also answers the seed's own path)."""
        return f"/ws/heartbeat/{room}/" if self.project else f"/heartbeat/{room}/"

    def ws_url(self, room: str) -> str:
        return f"ws://127.0.0.1:{self.port}{self.room_path(room)}"

    # measurements

    def server_rss_kib(self) -> int:
        """Resident memory of the server's processes (all uvicorn workers), in KiB."""
        return sum(map(process_rss_kib, self.server_pids()))

    def server_cpu_s(self) -> float:
        """CPU seconds used by the server's processes (all uvicorn workers)."""
        return sum(map(process_cpu_s, self.server_pids()))

    def warm_up(self, sockets: int = 20) -> int:
        """Open and close ``sockets`` sockets on the seed route; the RSS after it, in KiB.

        A server's first connections load code and fill caches (Django's URL
        resolver, the Redis client's modules): megabytes that belong to no
        connection. Measuring "idle" memory after a warm-up keeps them out of
        the per-connection figure, for both systems alike.
        """
        from websockets.sync.client import connect

        # max_queue=None: the seed greets the whole group on each connect, so the
        # first sockets get up to ``sockets`` frames nobody reads; with the default
        # bound (16) the client stops reading, never sees the closing frame, and each
        # close() waits out its 10 s timeout (20 s per seed stack at 20 sockets).
        opened = [
            connect(self.ws_url("warmup"), origin=self.origin, open_timeout=30, max_queue=None)
            for _ in range(sockets)
        ]
        for socket_ in opened:
            socket_.recv(timeout=30)  # the greeting: the consumer is running
        for socket_ in opened:
            socket_.close()  # waits for the server's closing frame
        return self.server_rss_kib()

    def redis_cpu_s(self) -> list[float]:
        """CPU seconds used so far by each Redis server (shard order)."""
        return [
            process_cpu_s(shard.process.pid) if shard.process is not None else 0.0
            for shard in self.shards
        ]

    def server_pids(self) -> list[int]:
        """The server process and its children (uvicorn's workers)."""
        import psutil

        if self.server is None:
            return []
        try:
            children = psutil.Process(self.server.pid).children(recursive=True)
        except psutil.Error:
            return [self.server.pid]
        return [self.server.pid, *(child.pid for child in children)]

    def log_offset(self) -> int:
        return self.server.log_size() if self.server else 0

    def server_failures(self, since: int = 0) -> list[str]:
        """Server log lines since ``since`` that a healthy server never writes."""
        return self.server.failures_since(since) if self.server else []

    def redis_info(self, section: str = "clients") -> dict[str, str]:
        """``INFO section`` of this stack's Redis as a dict of strings."""
        import redis

        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url)
        try:
            info = client.info(section)
        finally:
            client.close()
        return {key: str(value) for key, value in info.items()}


# --- the publisher: a separate OS process ------------------------------------------------


def _publisher_process(
    conn: Connection,
    system: System,
    env: dict[str, str],
    rooms: list[str],
    pushes: int,
    rate: float,
) -> None:
    """Push ``pushes`` messages round-robin over ``rooms`` at ``rate`` per second.

    Ours: ``ws.push.push(topic, data)``. The seed: ``async_to_sync(SendMessage(room).send)``
    once per push, as the seed's text does. The payload carries ``n`` and the
    wall-clock ``t`` of the moment just before the call.
    """
    os.environ.clear()
    os.environ.update(env)
    if system == "seed":
        sys.path.insert(0, str(REFERENCE_DIR))
    import django

    django.setup()
    if is_project(system):
        from ws import topics
        from ws.push import push

        names = [topics.seed_room_topic(room) for room in rooms]

        def send(index: int, data: dict[str, Any]) -> None:
            push(names[index], data)

    else:
        from asgiref.sync import async_to_sync
        from seedws.send import SendMessage  # type: ignore[import-not-found]

        def send(index: int, data: dict[str, Any]) -> None:
            async_to_sync(SendMessage(rooms[index]).send)({**data, "chat_type": "chat_data"})

    conn.send({"event": "ready"})
    if conn.recv() != "go":
        return
    calls: list[float] = []
    errors: Counter[str] = Counter()
    started = time.monotonic()
    cpu_before = time.process_time()
    for n in range(pushes):
        due = started + n / rate if rate > 0 else 0.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing at --rate
        before = time.monotonic()
        try:
            send(n % len(rooms), {"n": n, "t": time.time()})
        except Exception as error:  # any failure counts; the run goes on
            errors[type(error).__name__] += 1
        calls.append(time.monotonic() - before)
    elapsed = time.monotonic() - started
    conn.send(
        {
            "event": "result",
            "sent": pushes - sum(errors.values()),
            "errors": dict(errors),
            "elapsed_s": round(elapsed, 3),
            "cpu_s": round(time.process_time() - cpu_before, 3),
            "call_ms": latency_figures(calls),
        }
    )


def run_publisher(
    stack: Stack,
    rooms: Sequence[str],
    pushes: int,
    rate: float,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run a publisher process for ``stack`` and wait for it (bounded); its report.

    The report: ``sent``, ``errors`` (by exception name), ``elapsed_s``,
    ``cpu_s``, ``call_ms`` (p50/p99/max of one push call), ``started_at``.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(
        target=_publisher_process,
        args=(child, stack.system, stack.env, list(rooms), pushes, rate),
        daemon=True,
    )
    process.start()
    child.close()
    budget = timeout if timeout is not None else 60 + (pushes / rate if rate > 0 else pushes)
    try:
        if not parent.poll(60):
            raise TimeoutError("the publisher did not start in 60 s")
        parent.recv()
        started_at = time.time()
        parent.send("go")
        if not parent.poll(budget):
            return {"sent": 0, "errors": {"timeout": 1}, "started_at": started_at}
        report = parent.recv()
        report.pop("event", None)
        return {**report, "started_at": started_at}
    except EOFError:
        return {"sent": 0, "errors": {"publisher died": 1}}
    finally:
        parent.close()
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join(5)


# --- the clients: other OS processes, asyncio each ---------------------------------------

GREETING_MSG = "heartbeat"


class _ClientState:
    def __init__(self) -> None:
        self.connected = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.greeted_at: list[float] = []
        self.delivered = 0
        self.extra_heartbeats = 0
        self.other_frames = 0
        self.closed_after_greeting = 0
        self.close_codes: Counter[str] = Counter()
        self.latencies = array.array("d")
        self.last_receipt_at = 0.0
        self.connected_by_url: Counter[str] = Counter()
        self.settled = 0  # connections that greeted or failed


async def _one_connection(
    url: str,
    origin: str | None,
    state: _ClientState,
    gate: asyncio.Semaphore | None,
    open_timeout: float,
    settled: asyncio.Event,
    total: int,
) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    def settle() -> None:
        state.settled += 1
        if state.settled >= total:
            settled.set()

    socket_ = None
    greeted = False
    try:
        async with gate if gate is not None else contextlib.nullcontext():
            # Browser-like: the client offers permessage-deflate (websockets' default).
            socket_ = await connect(
                url,
                origin=origin,  # type: ignore[arg-type]
                open_timeout=open_timeout,
                ping_interval=None,
                max_size=None,
                compression="deflate",
            )
            greeting = json.loads(await asyncio.wait_for(socket_.recv(), open_timeout))
            if not (isinstance(greeting, dict) and greeting.get("msg") == GREETING_MSG):
                raise RuntimeError("first frame was not the greeting")
    except InvalidStatus as error:
        state.failed += 1
        state.errors[f"http {error.response.status_code}"] += 1
    except ConnectionClosed as error:
        state.failed += 1
        code = error.rcvd.code if error.rcvd else 1006
        state.errors[f"closed {code} before greeting"] += 1
    except TimeoutError:
        state.failed += 1
        state.errors["timeout"] += 1
    except Exception as error:  # counted by kind; one failed socket must not stop the rest
        state.failed += 1
        state.errors[type(error).__name__] += 1
    else:
        greeted = True
        state.connected += 1
        state.connected_by_url[url] += 1
        state.greeted_at.append(time.time())
    finally:
        settle()
    if not greeted:
        if socket_ is not None:
            socket_.transport.abort()
        return
    try:
        async for frame in socket_:
            now = time.time()
            message = json.loads(frame)
            data = message.get("data") if isinstance(message, dict) else None
            if isinstance(data, dict) and "t" in data:
                state.delivered += 1
                state.latencies.append(now - data["t"])
                state.last_receipt_at = now
            elif isinstance(message, dict) and message.get("msg") == GREETING_MSG:
                state.extra_heartbeats += 1
            else:
                state.other_frames += 1
        state.closed_after_greeting += 1
        code = socket_.close_code
        state.close_codes[str(code)] += 1
    except ConnectionClosed as error:
        state.closed_after_greeting += 1
        state.close_codes[str(error.rcvd.code if error.rcvd else 1006)] += 1
    except asyncio.CancelledError:
        socket_.transport.abort()
        raise


async def _client_main(conn: Connection, spec: dict[str, Any]) -> None:
    import psutil

    me = psutil.Process()

    def cpu() -> float:
        times = me.cpu_times()
        return float(times.user + times.system)

    state = _ClientState()
    urls: list[str] = spec["urls"]
    concurrency = spec.get("concurrency")
    gate = asyncio.Semaphore(concurrency) if concurrency else None
    settled = asyncio.Event()
    if not urls:
        settled.set()
    go_at, cpu_go = time.time(), cpu()
    tasks = [
        asyncio.create_task(
            _one_connection(
                url, spec.get("origin"), state, gate, spec["open_timeout"], settled, len(urls)
            )
        )
        for url in urls
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(settled.wait(), spec["connect_timeout"])
    connected_at, cpu_connected = time.time(), cpu()
    conn.send(
        {
            "event": "connected",
            "connected": state.connected,
            "failed": state.failed,
            "pending": len(urls) - state.settled,
            "errors": dict(state.errors),
            "by_url": dict(state.connected_by_url),
            "go_at": go_at,
            "greeted_at": list(state.greeted_at),
            "cpu_s": cpu_connected - cpu_go,
            "wall_s": connected_at - go_at,
        }
    )
    # Push phase: answer progress questions until told to stop.
    reset_at, cpu_reset = time.time(), cpu()
    while True:
        if not conn.poll():
            await asyncio.sleep(0.05)
            continue
        command = conn.recv()
        if command == "reset":  # the measured phase starts now
            reset_at, cpu_reset = time.time(), cpu()
        elif command == "progress":
            conn.send(
                {
                    "event": "progress",
                    "delivered": state.delivered,
                    "closed": state.closed_after_greeting,
                }
            )
        else:
            break
    stopped_at, cpu_stopped = time.time(), cpu()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
    conn.send(
        {
            "event": "result",
            "delivered": state.delivered,
            "extra_heartbeats": state.extra_heartbeats,
            "other_frames": state.other_frames,
            "closed_after_greeting": state.closed_after_greeting,
            "close_codes": dict(state.close_codes),
            "latencies": state.latencies.tobytes(),
            "last_receipt_at": state.last_receipt_at,
            "cpu_s": cpu_stopped - cpu_reset,
            "wall_s": stopped_at - reset_at,
        }
    )


def _client_process(conn: Connection, spec: dict[str, Any]) -> None:
    """One client process: wait for "go", connect, count frames, report."""
    raise_nofile_limit()
    conn.send({"event": "started"})
    command = conn.recv()
    if not isinstance(command, dict) or "go" not in command:
        return
    asyncio.run(_client_main(conn, {**spec, "connect_timeout": command["go"]}))


class ClientFleet:
    """``len(urls)`` WebSocket clients spread over ``processes`` OS processes.

    ``concurrency`` bounds connection attempts in flight per process (None: all
    at once, a connect storm). Each client waits for the seed greeting, then
    counts every frame whose ``data`` carries a ``t`` (a bench push) with its
    latency ``receipt time - t``.

    Use: ``start()`` (or ``with``), ``connect(timeout)``, optionally
    ``reset_clock()`` just before pushing, ``wait_delivered(expected, timeout)``,
    ``stop()`` for the merged report; ``close()`` kills what is left.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        origin: str | None,
        processes: int = 2,
        concurrency: int | None = 100,
        open_timeout: float = 30.0,
    ) -> None:
        self.urls = list(urls)
        self.origin = origin
        self.count = max(1, min(processes, len(self.urls) or 1))
        self.concurrency = concurrency
        self.open_timeout = open_timeout
        self.pipes: list[Connection] = []
        self.workers: list[multiprocessing.process.BaseProcess] = []
        self.delivered = [0] * self.count

    def start(self) -> ClientFleet:
        """Start the processes (they wait for ``connect``)."""
        raise_nofile_limit()
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(self.count):
                parent, child = context.Pipe()
                spec = {
                    "urls": self.urls[index :: self.count],
                    "origin": self.origin,
                    "concurrency": self.concurrency,
                    "open_timeout": self.open_timeout,
                }
                process = context.Process(target=_client_process, args=(child, spec), daemon=True)
                process.start()
                child.close()
                self.pipes.append(parent)
                self.workers.append(process)
            for pipe in self.pipes:
                self._expect(pipe, "started", 60)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> ClientFleet:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _expect(self, pipe: Connection, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not pipe.poll(left):
                raise TimeoutError(f"no {event!r} from a client process in {timeout} s")
            message = pipe.recv()
            if message.get("event") == event:
                return message

    def connect(self, timeout: float = 60.0) -> dict[str, Any]:
        """Open every connection at once (bounded by ``concurrency``); wait for greetings.

        Reports ``connected``, ``failed``, ``pending`` (no answer in time),
        ``errors`` by kind, ``all_greeted_s`` (from "go" to the last greeting),
        ``client_cpu_s`` and ``client_cpu_pct_max`` (busiest process).
        """
        for pipe in self.pipes:
            pipe.send({"go": timeout})
        reports = [self._expect(pipe, "connected", timeout + 30) for pipe in self.pipes]
        go_at = min(report["go_at"] for report in reports)
        greeted = [t for report in reports for t in report["greeted_at"]]
        errors: Counter[str] = Counter()
        by_url: Counter[str] = Counter()
        for report in reports:
            errors.update(report["errors"])
            by_url.update(report["by_url"])
        return {
            "clients": len(self.urls),
            "connected": sum(r["connected"] for r in reports),
            "failed": sum(r["failed"] for r in reports),
            "pending": sum(r["pending"] for r in reports),
            "errors": dict(errors),
            "connected_by_url": dict(by_url),
            "all_greeted_s": round(max(greeted) - go_at, 3) if greeted else None,
            "greeted_p50_s": round(percentile(greeted, 0.5) - go_at, 3) if greeted else None,
            "client_cpu_s": round(sum(r["cpu_s"] for r in reports), 3),
            "client_cpu_pct_max": _busiest(reports),
        }

    def reset_clock(self) -> None:
        """Start the measured phase now (client CPU and wall time count from here)."""
        for pipe in self.pipes:
            pipe.send("reset")

    def _poll_progress(self) -> None:
        for pipe in self.pipes:
            pipe.send("progress")
        for index, pipe in enumerate(self.pipes):
            self.delivered[index] = self._expect(pipe, "progress", 30)["delivered"]

    def wait_delivered(self, expected: int, timeout: float, quiet: float = 5.0) -> int:
        """Wait until ``expected`` bench frames arrived, none came for ``quiet`` s, or timeout."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            self._poll_progress()
            total = sum(self.delivered)
            if total >= expected:
                return total
            if total != last:
                last, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > quiet:
                break
            time.sleep(0.2)
        return sum(self.delivered)

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Close every connection; the merged report of the measured phase.

        ``delivered``, ``latencies_s`` (all of them, for your own figures),
        ``extra_heartbeats`` (greetings of later clients: the seed's group-wide
        heartbeat), ``closed_after_greeting``, ``close_codes``,
        ``client_cpu_s``, ``client_cpu_pct_max``, ``client_wall_s``.
        """
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        reports = []
        for pipe in self.pipes:
            with contextlib.suppress(TimeoutError, EOFError, OSError):
                reports.append(self._expect(pipe, "result", timeout))
        latencies = array.array("d")
        close_codes: Counter[str] = Counter()
        for report in reports:
            latencies.frombytes(report["latencies"])
            close_codes.update(report["close_codes"])
        return {
            "client_processes_reporting": len(reports),
            "delivered": sum(r["delivered"] for r in reports),
            "latencies_s": latencies.tolist(),
            "last_receipt_at": max((r["last_receipt_at"] for r in reports), default=0.0),
            "extra_heartbeats": sum(r["extra_heartbeats"] for r in reports),
            "other_frames": sum(r["other_frames"] for r in reports),
            "closed_after_greeting": sum(r["closed_after_greeting"] for r in reports),
            "close_codes": dict(close_codes),
            "client_cpu_s": round(sum(r["cpu_s"] for r in reports), 3),
            "client_cpu_pct_max": _busiest(reports),
            "client_wall_s": round(max((r["wall_s"] for r in reports), default=0.0), 3),
        }

    def close(self) -> None:
        """Stop the client processes (politely, then by force)."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        deadline = time.monotonic() + 10
        for process in self.workers:
            process.join(max(0.1, deadline - time.monotonic()))
        for process in self.workers:
            if process.is_alive():
                process.kill()
                process.join(5)
        for pipe in self.pipes:
            pipe.close()
        self.pipes.clear()
        self.workers.clear()


def _busiest(reports: Iterable[Mapping[str, Any]]) -> float | None:
    """CPU % of the busiest client process (100 = one core fully used)."""
    shares = [100 * r["cpu_s"] / r["wall_s"] for r in reports if r["wall_s"] > 0]
    return round(max(shares), 1) if shares else None


# --- the server's hot path: py-spy --------------------------------------------------------


class ServerProfile:
    """py-spy sampling a stack's server processes for ``seconds``; a summary at ``path``.

    Does nothing when ``path`` is None. The summary lists the functions with
    the most samples on their own (self) and under them (inclusive); the raw
    samples (``path`` + ``.raw``) load into speedscope or flamegraph.pl.
    """

    def __init__(self, stack: Stack, path: Path | None, seconds: float) -> None:
        self.path = path
        self.process: subprocess.Popen[bytes] | None = None
        if path is None or stack.server is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(py_spy).exists():
            raise RuntimeError("py-spy is not installed: make bench installs it (.[bench])")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.raw = path.with_suffix(path.suffix + ".raw")
        argv = [
            py_spy, "record", "--pid", str(stack.server.pid), "--subprocesses",
            "--duration", str(max(1, round(seconds))), "--rate", "200",
            "--format", "raw", "--output", str(self.raw), "--nonblocking",
        ]  # fmt: skip
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def finish(self) -> None:
        """Wait for py-spy (bounded by its duration) and write the summary."""
        if self.process is None or self.path is None:
            return
        self.process.wait(timeout=300)
        if self.raw.exists():
            self.path.write_text(summarize_profile(self.raw.read_text()))
            note(f"profile of the server's hot path: {self.path}")


def summarize_profile(raw: str, top: int = 30) -> str:
    """py-spy's raw (collapsed) stacks as two tables: self and inclusive sample shares."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        own[frames[-1]] += samples
        for frame in set(frames):
            under[frame] += samples
    lines = [f"{total} samples"]
    for title, counter in (("self", own), ("inclusive", under)):
        lines.append(f"\n-- {title} --")
        lines.extend(f"{100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top))
    return "\n".join(lines) + "\n"


# --- one push benchmark round: shared by fanout and many_topics --------------------------


def push_round(
    system: System,
    client_rooms: Sequence[str],
    push_rooms: Sequence[str],
    *,
    pushes: int,
    rate: float,
    processes: int = 2,
    concurrency: int | None = 100,
    connect_timeout: float = 120.0,
    deliver_timeout: float | None = None,
    web_processes: int = 1,
    profile_to: Path | None = None,
    redis_shards: int = 1,
) -> dict[str, Any]:
    """Start ``system``, connect one client per entry of ``client_rooms``, push, measure.

    ``pushes`` messages go round-robin over ``push_rooms`` from a separate
    publisher process at ``rate`` per second. Returns the system's figures
    (see the benchmarks' docstrings); everything started is stopped.
    ``profile_to``: sample the server with py-spy while it pushes and write
    the hot path there (``ServerProfile``).
    """
    with Stack(
        system,
        web_processes=web_processes if system == "ours" else 1,
        redis_shards=redis_shards,
    ) as stack:
        rss_idle = stack.warm_up()
        log_start = stack.log_offset()
        urls = [stack.ws_url(room) for room in client_rooms]
        with ClientFleet(
            urls, origin=stack.origin, processes=processes, concurrency=concurrency
        ) as fleet:
            note(f"{system}: connecting {len(urls)} clients")
            connect = fleet.connect(timeout=connect_timeout)
            time.sleep(1.0)  # let the server settle (the seed's heartbeats) before measuring
            rss_connected = stack.server_rss_kib()
            per_room = Counter()  # connected clients per room
            for url, count in connect["connected_by_url"].items():
                per_room[url] += count
            expected_per_push = [per_room[stack.ws_url(room)] for room in push_rooms]
            note(f"{system}: {connect['connected']} connected; pushing {pushes} at {rate}/s")
            fleet.reset_clock()
            cpu_before, redis_before = stack.server_cpu_s(), stack.redis_cpu_s()
            pacing = pushes / rate if rate > 0 else 0.0
            profile = ServerProfile(stack, profile_to, seconds=max(pacing, 5.0))
            published = run_publisher(stack, push_rooms, pushes, rate)
            sent = published.get("sent", 0)
            expected = sum(expected_per_push[n % len(push_rooms)] for n in range(sent))
            budget = deliver_timeout if deliver_timeout is not None else 30 + pacing
            fleet.wait_delivered(expected, timeout=budget)
            cpu_after, redis_after = stack.server_cpu_s(), stack.redis_cpu_s()
            profile.finish()
            result = fleet.stop()
        failures = stack.server_failures(log_start)
    delivered = result["delivered"]
    window = result["last_receipt_at"] - published.get("started_at", 0.0)
    connected = connect["connected"]
    return {
        "clients": len(client_rooms),
        "connected": connected,
        "refused": connect["failed"],
        "no_answer": connect["pending"],
        "connect_errors": connect["errors"],
        "all_connected_s": connect["all_greeted_s"],
        "pushes_sent": sent,
        "publisher_errors": published.get("errors", {}),
        "expected": expected,
        "delivered": delivered,
        "delivered_ratio": round(delivered / expected, 4) if expected else None,
        "delivered_per_s": round(delivered / window, 1) if delivered and window > 0 else 0.0,
        **latency_figures(result["latencies_s"]),
        "push_call_ms_p50": (published.get("call_ms") or {}).get("p50_ms"),
        "server_rss_kib_per_conn": round((rss_connected - rss_idle) / connected, 1)
        if connected
        else None,
        "server_cpu_us_per_frame": round((cpu_after - cpu_before) * 1e6 / delivered, 1)
        if delivered
        else None,
        # Each Redis server's CPU per push made (all shards' sum: the Redis cost of a push).
        "redis_cpu_us_per_push_by_shard": [
            round((after - before) * 1e6 / sent, 1) if sent else None
            for before, after in zip(redis_before, redis_after, strict=True)
        ],
        "extra_heartbeats": result["extra_heartbeats"],
        "dropped_after_connect": result["closed_after_greeting"],
        "server_error_lines": len(failures),
        "server_tracebacks": sum(line.startswith("Traceback") for line in failures),
        "server_error_sample": failures[:3],
        "client_cpu_pct_max": result["client_cpu_pct_max"],
        "client_cpu_pct_max_connect": connect["client_cpu_pct_max"],
        "client_processes": processes,
        "web_processes": stack.web_processes,
    }


# Figures compared between ours and the seed, and which way is better.
PUSH_RATIOS = {
    "connected": True,
    "delivered_ratio": True,
    "delivered_per_s": True,
    "p50_ms": False,
    "p99_ms": False,
    "max_ms": False,
    "server_rss_kib_per_conn": False,
    "server_cpu_us_per_frame": False,
}
