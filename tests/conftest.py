"""Fixtures that start real things: Redis, daphne, a Celery worker.

The throwaway ``redis-server`` starts in ``pytest_configure``, before
pytest-django loads the settings (which read ``REDIS_URL`` once), so neither
the shared Redis on 6379 nor this checkout's embedded one is ever touched.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio

from project.redis_server import RedisServer, free_port
from project.servers import WebServer as WebServerName
from tests.support.clients import close_opened_sockets
from tests.support.inprocess import InProcessServer, new_key_prefix
from tests.support.processes import CeleryWorker, WebServer

REDIS_SERVER = pytest.StashKey[RedisServer]()
DEVELOPMENT_DB_NAME = pytest.StashKey[str]()


def _xdist_controller(config: pytest.Config) -> bool:
    """Whether this process only hands tests to pytest-xdist's workers (``-n N``)."""
    dist = getattr(config.option, "dist", "no")
    return dist != "no" and "PYTEST_XDIST_WORKER" not in os.environ


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "serial: disturbs the whole machine (drops its UDP): runs alone; see Makefile"
    )
    if _xdist_controller(config):
        # Each worker starts its own Redis and then Django, as a plain run does: importing
        # project (its Celery app) set DJANGO_SETTINGS_MODULE here, which the workers would
        # inherit and load the settings with before any Redis is up.
        os.environ.pop("DJANGO_SETTINGS_MODULE", None)
        return
    if "django.conf" in sys.modules:
        from django.conf import settings

        if settings.configured:
            raise pytest.UsageError(
                "Django settings were loaded before the test Redis started: "
                "unset DJANGO_SETTINGS_MODULE and run 'make test'"
            )
    server = RedisServer.start(
        Path(tempfile.mkdtemp(prefix="push-test-redis-")), tied_to_parent=True
    )
    config.stash[REDIS_SERVER] = server
    os.environ["REDIS_URL"] = server.url
    os.environ.pop("CELERY_BROKER_URL", None)
    os.environ.pop("CELERY_RESULT_BACKEND", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    (Path(__file__).resolve().parent.parent / ".run").mkdir(exist_ok=True)
    # Load the settings now, with this REDIS_URL; pytest-django's own (trylast)
    # pytest_configure then sets Django up and guards database access.
    from django.conf import settings

    assert server.url == settings.REDIS_URL
    # What the database is called before pytest-django swaps in the test database's name.
    config.stash[DEVELOPMENT_DB_NAME] = settings.DATABASES["default"]["NAME"]


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(REDIS_SERVER, None)
    if server is not None:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server(pytestconfig: pytest.Config) -> RedisServer:
    """The session's throwaway redis-server (a real one, on a free port)."""
    return pytestconfig.stash[REDIS_SERVER]


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[object]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def database_url(settings_dict: dict[str, object]) -> str:
    """A DATABASE_URL for child processes, naming the test database."""
    engine = str(settings_dict["ENGINE"])
    if engine.endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    scheme = {"django.db.backends.postgresql": "postgres", "django.db.backends.mysql": "mysql"}[
        engine
    ]
    user = quote(str(settings_dict.get("USER") or ""))
    password = quote(str(settings_dict.get("PASSWORD") or ""))
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "localhost"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"{scheme}://{credentials}{host}{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="session")
def test_database(
    django_db_setup: None, django_db_blocker: Any, pytestconfig: pytest.Config
) -> Iterator[str]:
    """The test database's URL, for the stack's processes.

    pytest-django creates it only when a collected test asks for the database;
    a run of only process-level tests (``pytest tests/e2e/test_devstack.py``)
    asks for none, so it is created here then, never leaving the processes on
    the development database.
    """
    from django.db import connection

    created = None
    if connection.settings_dict["NAME"] == pytestconfig.stash[DEVELOPMENT_DB_NAME]:
        with django_db_blocker.unblock():
            created = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    yield database_url(connection.settings_dict)
    if created is not None:
        with django_db_blocker.unblock():
            connection.creation.destroy_test_db(created, verbosity=0)


@pytest.fixture(scope="session")
def child_env(test_database: str, redis_server: RedisServer) -> dict[str, str]:
    """The environment of the stack's processes: this session's Redis and test database."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_server.url,
        DATABASE_URL=test_database,
        DJANGO_SETTINGS_MODULE="project.settings",
        PYTHONUNBUFFERED="1",
    )
    # A call's participant whose sockets went is back within this, or out: long enough
    # for a page to reload and rejoin, short enough for a test to see the grace end.
    env.setdefault("CALL_REJOIN_GRACE_S", "6")
    # A server the tests stop with SIGTERM closes its sockets at once, as a crash would
    # drop them; tests of the drain itself set their own (tests/e2e/test_rolling_restart.py).
    env.setdefault("PUSH_DRAIN_S", "0")
    return env


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


class ServerFactory:
    """The session's web servers: one process per (server, settings, arguments) asked for.

    ``start("uvicorn", PUSH_X="1")`` gives a server whose environment is the session's
    plus those settings; asking again with the same arguments gives the same process, so
    modules that need the same configuration share it. All stop when the session ends.
    A test that stops or kills its server starts one of its own instead
    (``tests.support.processes.server_with_settings``).
    """

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env, self.log_dir = env, log_dir
        self.started: dict[tuple[Any, ...], WebServer] = {}

    def start(
        self,
        server: WebServerName = "daphne",
        *,
        workers: int = 1,
        extra_args: tuple[str, ...] = (),
        copy: int = 0,
        **settings: str,
    ) -> WebServer:
        """The server of this configuration (``copy`` tells apart processes a test needs
        several of), started on first use."""
        key = (server, workers, extra_args, copy, tuple(sorted(settings.items())))
        if key not in self.started:
            name = f"{server}-{len(self.started)}" if self.started or settings else server
            self.started[key] = WebServer(
                dict(self.env, **settings),
                self.log_dir,
                free_port(),
                server,
                workers=workers,
                name=name,
                extra_args=extra_args,
            )
        return self.started[key]

    def stop_all(self) -> None:
        for server in self.started.values():
            server.stop()


@pytest.fixture(scope="session")
def server_factory(child_env: dict[str, str], log_dir: Path) -> Iterator[ServerFactory]:
    """Start web servers for the session's tests (``ServerFactory``)."""
    factory = ServerFactory(child_env, log_dir)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="session")
def daphne_server(server_factory: ServerFactory) -> WebServer:
    """daphne serving ``project.asgi:application`` with the seed's flags."""
    return server_factory.start("daphne")


@pytest.fixture(scope="session")
def uvicorn_server(server_factory: ServerFactory) -> WebServer:
    """uvicorn (the default server) serving ``project.asgi:application``."""
    return server_factory.start("uvicorn")


@pytest.fixture(params=["daphne", "uvicorn"])
def web_server(request: pytest.FixtureRequest, server_factory: ServerFactory) -> WebServer:
    """Each supported server in turn, as it is deployed: a test taking it runs once per
    server (daphne alone; uvicorn with two worker processes on one port)."""
    return server_factory.start(request.param, workers=2 if request.param == "uvicorn" else 1)


@pytest_asyncio.fixture
async def inprocess_server(settings: Any) -> AsyncIterator[InProcessServer]:
    """The project's ASGI application served in this test's own process and loop
    (tests/support/inprocess.py), on a Redis key prefix of the test's own."""
    from ws.layer_watch import stop_layer_watch

    server = InProcessServer(new_key_prefix())
    settings.PUSH_KEY_PREFIX = server.key_prefix
    root = logging.getLogger()
    root.addHandler(server.log)
    try:
        yield server
        await close_opened_sockets()
        await stop_layer_watch()
    finally:
        root.removeHandler(server.log)


@pytest.fixture(scope="session")
def celery_worker(child_env: dict[str, str], log_dir: Path) -> Iterator[CeleryWorker]:
    """A real Celery worker (prefork pool, two child processes) on the session's Redis."""
    from project.celery import app

    worker = CeleryWorker(child_env, log_dir, f"test-{os.getpid()}@localhost", "celery-worker")
    assert app.control.ping(destination=[worker.hostname], timeout=5)
    yield worker
    worker.stop()


@pytest.fixture
def alice(transactional_db: None) -> Any:
    """A signed-up user, committed: the server processes see her."""
    from tests.support.users import make_user

    return make_user("alice")


@pytest.fixture
def bob(transactional_db: None) -> Any:
    from tests.support.users import make_user

    return make_user("bob")


@pytest_asyncio.fixture(autouse=True)
async def close_test_sockets() -> object:
    """Close every WebSocket the test opened, even when it fails.

    Sockets of other loops (sync tests run their own) are only forgotten.
    """
    yield
    await close_opened_sockets()
