"""Which server serves the application, and with which flags, wherever it is started."""

from __future__ import annotations

import shlex
import sys

import pytest

from project.devstack import commands
from project.servers import web_argv, web_server_from_env
from tests.support.processes import BASE_DIR

EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 - what the Procfile binds, as deployed


def procfile() -> dict[str, str]:
    entries = {}
    for line in (BASE_DIR / "Procfile").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries[name] = command.strip()
    return entries


def test_the_procfile_runs_uvicorn_with_the_flags_the_tests_and_benchmarks_use():
    expected = web_argv(
        "uvicorn", host=EVERY_INTERFACE, port="${PORT:-8010}", workers="${WEB_CONCURRENCY:-1}"
    )
    assert expected[:3] == [sys.executable, "-m", "uvicorn"]
    assert procfile()["web"].split() == ["uvicorn", *expected[3:]]


def test_make_run_serves_with_uvicorn_unless_told_daphne():
    default = shlex.split(commands("127.0.0.1", 8010, {})["web"])
    assert default == web_argv("uvicorn", host="127.0.0.1", port=8010)

    two = shlex.split(commands("127.0.0.1", 8010, {"WEB_CONCURRENCY": "2"})["web"])
    assert two[two.index("--workers") + 1] == "2"

    daphne = shlex.split(commands(EVERY_INTERFACE, 9000, {"WEB_SERVER": "daphne"})["web"])
    assert daphne[1:] == ["-m", "daphne", "-b", EVERY_INTERFACE, "-p", "9000", "--proxy-headers",
                          "project.asgi:application"]  # fmt: skip


def test_an_unknown_web_server_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="uvicorn, daphne"):
        web_server_from_env({"WEB_SERVER": "gunicorn"})
    with pytest.raises(ValueError, match="one process"):
        web_argv("daphne", host="127.0.0.1", port=8010, workers=2)
