"""Child processes for tests: started with their output in a log file, stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from project.redis_server import die_with_parent, free_port
from project.servers import WebServer as WebServerName
from project.servers import web_argv

BASE_DIR = Path(__file__).resolve().parents[2]

# What a healthy server never logs: tracebacks and the redis-py 8 pool/timeout failures.
LOG_FAILURES = re.compile(r"Traceback|Too many connections|Timeout reading|MaxConnectionsError")


class ChildProcess:
    """One OS process of the stack under test (daphne, a Celery worker, beat...)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_dir: Path,
        cwd: Path = BASE_DIR,
    ):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed test run leaves no server behind
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def failures_since(self, offset: int) -> list[str]:
        """Log lines since ``offset`` that a healthy server never writes."""
        return [line for line in self.log_since(offset).splitlines() if LOG_FAILURES.search(line)]

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail with the log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode} before {what}:\n"
                    + self.log_text()[-4000:]
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: no {what} in {timeout} s:\n{self.log_text()[-4000:]}"
                )
            time.sleep(0.05)

    def finish(self, timeout: float) -> int:
        """Wait for a process that ends by itself (a command); its exit status."""
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stop()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own server
            return response.status == 200
    except OSError:
        return False


class CeleryWorker(ChildProcess):
    """A real Celery worker (prefork pool) that also loads the tests' own tasks.

    Ready once its log says so; ``hostname`` names it for ``control.ping``.
    """

    def __init__(
        self, env: Mapping[str, str], log_dir: Path, hostname: str, name: str, concurrency: int = 2
    ):
        self.hostname = hostname
        argv = [
            sys.executable, "-m", "celery", "-A", "project", "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "--hostname", hostname,
            "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--include", "tests.support.celery_tasks",
        ]  # fmt: skip
        super().__init__(name, argv, env, log_dir)
        self.wait_until(lambda: f"{hostname} ready." in self.log_text(), 60, "ready")


class WebServer(ChildProcess):
    """``project.asgi:application`` served by uvicorn or daphne on a free port of 127.0.0.1.

    The command line is the one ``make run`` and the Procfile use
    (``project.servers.web_argv``); ``workers`` > 1 runs several uvicorn
    processes on the one port.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        port: int,
        server: WebServerName = "uvicorn",
        *,
        workers: int = 1,
        name: str | None = None,
        extra_args: Sequence[str] = (),
    ):
        self.port = port
        self.server_name = server
        argv = [*web_argv(server, host="127.0.0.1", port=port, workers=workers), *extra_args]
        super().__init__(name or server, argv, env, log_dir)
        self.wait_until(lambda: http_ok(self.http_url("/healthz")), 30, "answer on /healthz")

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def http_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


class DaphneServer(WebServer):
    """daphne, started with the seed's flags on a free port of 127.0.0.1."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        port: int,
        name: str = "daphne",
        extra_args: Sequence[str] = (),
    ):
        super().__init__(env, log_dir, port, "daphne", name=name, extra_args=extra_args)


@contextmanager
def server_with_settings(
    env: Mapping[str, str],
    log_dir: Path,
    name: str,
    server: WebServerName = "daphne",
    **settings: str,
) -> Iterator[WebServer]:
    """A web server of its own on a free port, ``settings`` added to its environment."""
    started = WebServer(dict(env, **settings), log_dir, free_port(), server, name=name)
    try:
        yield started
    finally:
        started.stop()


def manage(
    args: Sequence[str], env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python manage.py ARGS`` in another OS process."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def terminate_group(process: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Send ``sig`` to a process group we started."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
