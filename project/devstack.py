"""``make run``: the whole stack in one foreground tree, with prefixed logs.

Starts the embedded Redis (when ``REDIS_URL`` is unset), then the Procfile's
processes -- the web server (uvicorn; ``WEB_SERVER=daphne`` for the seed's),
a Celery worker and beat -- under honcho, prints the URL,
and stops everything on Ctrl-C.

    python -m project.devstack [--host 127.0.0.1] [--port 8010]
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from honcho.manager import Manager
from honcho.printer import Printer

from project.redis_server import ensure_embedded_redis
from project.servers import web_argv, web_server_from_env

BASE_DIR = Path(__file__).resolve().parent.parent


def commands(host: str, port: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The stack's processes, as the Procfile runs them (bound to ``host`` here).

    The web server is uvicorn unless ``WEB_SERVER=daphne``; ``WEB_CONCURRENCY``
    uvicorn processes (default 1) share the port.
    """
    environ = dict(os.environ if environ is None else environ)
    python = sys.executable
    server = web_server_from_env(environ)
    workers = int(environ.get("WEB_CONCURRENCY") or 1) if server == "uvicorn" else 1
    return {
        "web": shlex.join(web_argv(server, host=host, port=port, workers=workers)),
        "worker": f"{python} -m celery -A project worker --loglevel INFO --concurrency 2",
        "beat": f"{python} -m celery -A project beat --loglevel INFO",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8010")))
    args = parser.parse_args(argv)

    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    env["PYTHONUNBUFFERED"] = "1"
    if not (env.get("REDIS_URL") or env.get("REDIS_SHARD_URLS") or env.get("REDIS_SENTINELS")):
        env["REDIS_URL"] = ensure_embedded_redis()
        print(f"embedded Redis at {env['REDIS_URL']} (files in .run/redis/)", flush=True)

    manager = Manager(Printer(sys.stdout))
    for name, command in commands(args.host, args.port, env).items():
        manager.add_process(name, command, env=env, cwd=str(BASE_DIR))
    shown = "127.0.0.1" if args.host == "0.0.0.0" else args.host  # noqa: S104
    print(
        f"\n  open   http://{shown}:{args.port}/\n"
        f"  socket ws://{shown}:{args.port}/ws/heartbeat/clock/   (seed route, clock every 5 s)\n"
        f"  chat   http://{shown}:{args.port}/chat/   (a room and two users to try it:"
        " .venv/bin/python manage.py chat_demo alice bob)\n"
        "  Ctrl-C stops everything\n",
        flush=True,
    )
    manager.loop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
