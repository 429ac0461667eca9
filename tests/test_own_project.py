"""``ws`` in a project of one's own, set up as README "Use it in your own project" says.

In a temporary directory: a new virtualenv, this package installed into it, a
``startproject`` given ``ws`` with the README's edits and nothing else, served by
uvicorn; a push from that project's shell reaches a real WebSocket. The virtualenv
sees this checkout's installed dependencies through a ``.pth`` file (no network),
after its own site-packages, so the project imports the installed ``ws``, never
this checkout's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from project.redis_server import RedisServer
from tests.support.clients import open_socket, recv_json, recv_until, subscribe
from tests.support.processes import BASE_DIR, ChildProcess, free_port

pytestmark = pytest.mark.slow

# The README's lines, as the test writes them (the Redis URL is the test's own).
SETTINGS_ADDED = """
INSTALLED_APPS += ["ws"]
CHANNEL_LAYERS = {{
    "default": {{
        "BACKEND": "ws.layer.PushChannelLayer",
        "CONFIG": {{"hosts": ["{redis_url}"]}},
    }}
}}
"""
ASGI_OLD = "application = get_asgi_application()\n"
ASGI_NEW = """from ws.asgi import push_application  # noqa: E402 - after DJANGO_SETTINGS_MODULE

application = push_application(get_asgi_application())
"""
URLS_IMPORT_OLD = "from django.urls import path\n"
URLS_IMPORT_NEW = "from django.urls import include, path\n"
URLS_ADDED = 'urlpatterns += [path("ws/", include("ws.urls"))]\n'
PUSH_FROM_THE_SHELL = "from ws import push; push('broadcast', {'hi': 1})"
SEED_LEFT_OUT = (
    "import sys; from ws.asgi import push_application; push_application(seed_routes=False); "
    "print(sorted(name for name in sys.modules if name.startswith('ws.seed')))"
)

# Not worth copying to build the package (setuptools builds in its source tree).
NOT_THE_PACKAGE = shutil.ignore_patterns(
    ".*", "__pycache__", "*.egg-info", "build", "db.sqlite3*", "staticfiles",
    "tests", "bench", "docs",
)  # fmt: skip


@dataclass(frozen=True)
class OwnProject:
    """The new project: its virtualenv's python, its directory, its running server."""

    python: Path
    directory: Path
    env: dict[str, str]
    server: ChildProcess
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def manage(self, *args: str) -> str:
        return manage(self.python, self.directory, self.env, *args)


def run(argv: Sequence[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> str:
    """Run a command to its end; its output, or a failure showing it."""
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def manage(python: Path, directory: Path, env: dict[str, str], *args: str) -> str:
    """``python manage.py ARGS`` in the new project."""
    return run([str(python), "manage.py", *args], directory, env)


def outside_env() -> dict[str, str]:
    """A shell's environment without this checkout's: no settings module, Redis or paths."""
    kept = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ
    }
    return {**kept, "PYTHONUNBUFFERED": "1"}


def make_virtualenv(directory: Path) -> Path:
    """A new virtualenv that also sees this checkout's installed packages; its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True)
    paths = {"base": str(directory), "platbase": str(directory)}
    site_packages = Path(sysconfig.get_path("purelib", vars=paths))
    ours = sorted({sysconfig.get_path("purelib"), sysconfig.get_path("platlib")})
    (site_packages / "checkout-packages.pth").write_text("\n".join(ours) + "\n")
    return directory / "bin" / "python"


def http_status(url: str) -> int | None:
    """The status a GET of ``url`` is answered with, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own server
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{path.name} has not one {old!r}:\n{text}"
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def own_project(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, log_dir: Path
) -> Iterator[OwnProject]:
    root = tmp_path_factory.mktemp("own-project")
    env = outside_env()
    python = make_virtualenv(root / "venv")

    # 1. Install the package: offline (the dependencies are this checkout's, through the
    # .pth file), from a copy of this checkout (the build writes into its source tree).
    source = root / "django-push"
    shutil.copytree(BASE_DIR, source, ignore=NOT_THE_PACKAGE)
    run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        root, env, timeout=120,
    )  # fmt: skip

    # 2. Start a project.
    run([str(python), "-m", "django", "startproject", "mysite"], root, env)
    directory = root / "mysite"

    # 3. settings.py: the app and a channel layer. A Redis database of its own keeps the
    # project's keys apart from the suite's (pub/sub channels are not per database).
    redis_url = f"redis://{redis_server.host}:{redis_server.port}/5"
    with open(directory / "mysite" / "settings.py", "a") as settings:
        settings.write(SETTINGS_ADDED.format(redis_url=redis_url))

    # 4. asgi.py: the one call. 5. urls.py: the token view.
    replace_once(directory / "mysite" / "asgi.py", ASGI_OLD, ASGI_NEW)
    urls = directory / "mysite" / "urls.py"
    replace_once(urls, URLS_IMPORT_OLD, URLS_IMPORT_NEW)
    with open(urls, "a") as file:
        file.write(URLS_ADDED)

    # The project imports the installed ws, not this checkout's.
    found = run(
        [str(python), "-c", "import importlib.util; print(importlib.util.find_spec('ws').origin)"],
        directory,
        env,
    )
    assert Path(found.strip()).is_relative_to(root / "venv"), found

    # 6. Create the tables (the system checks run first), serve.
    manage(python, directory, env, "migrate")
    port = free_port()
    server = ChildProcess(
        "own-project-uvicorn",
        [str(python), "-m", "uvicorn", "mysite.asgi:application", "--port", str(port)],
        env,
        log_dir,
        cwd=directory,
    )
    try:
        project = OwnProject(python, directory, env, server, port)
        server.wait_until(lambda: http_status(f"{project.origin}/ws/token") is not None, 30, "HTTP")
        yield project
    finally:
        server.stop()


async def test_a_push_from_the_projects_shell_reaches_a_socket(own_project):
    socket = await open_socket(own_project.ws_url("/ws/"), own_project.origin)
    subscribed = await subscribe(socket, "broadcast")
    assert subscribed["op"] == "subscribed", subscribed

    # 7. Push from the project's shell.
    await asyncio.to_thread(own_project.manage, "shell", "-c", PUSH_FROM_THE_SHELL)

    message = await recv_until(socket, lambda frame: frame.get("data") == {"hi": 1})
    assert message == {
        "op": "message",
        "topic": "broadcast",
        "seq": subscribed["seq"] + 1,
        "msg": "success",
        "code": 200,
        "data": {"hi": 1},
    }
    assert own_project.server.failures_since(0) == []


def test_the_token_view_is_mounted(own_project):
    # POST only (a signed-in user's token); a GET is refused by the view, not a 404.
    assert http_status(f"{own_project.origin}/ws/token") == 405


async def test_the_seed_route_is_served_unless_left_out(own_project):
    socket = await open_socket(own_project.ws_url("/heartbeat/lobby/"), own_project.origin)
    assert await recv_json(socket) == {"msg": "heartbeat", "code": 200, "data": []}


def test_a_project_that_leaves_the_seed_out_never_loads_it(own_project):
    loaded = own_project.manage("shell", "-c", SEED_LEFT_OUT)
    assert loaded.splitlines()[-1] == "[]"  # after the shell's own line on its imports
