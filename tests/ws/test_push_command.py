"""``python manage.py push``, run as a user would, in its own process."""

from __future__ import annotations

from tests.support.clients import open_socket, recv_json, subscribe
from tests.support.processes import manage


async def test_push_command_delivers_to_a_topic_and_to_a_seed_room(daphne_server, child_env):
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(multiplexed, "broadcast")
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/ops/"), daphne_server.origin)
    await recv_json(seed)

    to_topic = manage(
        ["push", "broadcast", '{"notice": "deploy at 5"}', "--msg", "notice"], child_env
    )
    to_room = manage(["push", "--room", "ops", '["a", 1]', "--code", "201"], child_env)

    assert to_topic.returncode == 0, to_topic.stderr
    assert to_room.returncode == 0, to_room.stderr
    frame = await recv_json(multiplexed)
    assert (frame["topic"], frame["msg"], frame["data"]) == (
        "broadcast",
        "notice",
        {"notice": "deploy at 5"},
    )
    assert f"pushed to broadcast as seq {frame['seq']}" in to_topic.stdout
    seed_frame = await recv_json(seed)
    assert {k: seed_frame[k] for k in ("msg", "code", "data")} == {
        "msg": "success",
        "code": 201,
        "data": ["a", 1],
    }
    await multiplexed.close()
    await seed.close()


def test_push_command_explains_bad_input(child_env):
    bad_json = manage(["push", "broadcast", "{not json"], child_env)
    assert bad_json.returncode != 0
    assert "DATA is not valid JSON" in bad_json.stderr
    assert "Traceback" not in bad_json.stderr

    unknown = manage(["push", "nope.x", "{}"], child_env)
    assert unknown.returncode != 0
    assert "not a topic" in unknown.stderr

    both = manage(["push", "broadcast", "{}", "--room", "r"], child_env)
    assert both.returncode != 0
    assert "either TOPIC or --room" in both.stderr
