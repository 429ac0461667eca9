"""A promoted replica that lacks the old master's last pushes: subscribers are told, never misled.

Two real Redis servers, the second a replica of the first. ``REPLICAOF NO ONE``
promotes the replica as Sentinel does; pushes made on the old master after that
are the ones a real failover loses (made, and sent to subscribers, but never
replicated). The publisher then talks to the promoted server, as the stack does
once Sentinel names it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.test import override_settings

from project.redis_server import RedisServer
from tests.support.redis_ha import start_master_and_replica
from tests.support.waiting import poll_until
from ws import topics
from ws.failover import GENERATION_KEY
from ws.protocol import encode_body
from ws.publisher import Publisher
from ws.store import Position

pytestmark = pytest.mark.faults

TOPIC = "room.failover"


def layers(server: RedisServer) -> dict[str, object]:
    return {"default": {"BACKEND": "ws.layer.PushChannelLayer", "CONFIG": {"hosts": [server.url]}}}


class Pusher:
    """A publisher of its own on one server (as a process that only knows that one)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.publisher = Publisher()

    def push(self, n: int) -> Position:
        group, body = topics.group_name(TOPIC), encode_body(n, "success", 200)
        with override_settings(CHANNEL_LAYERS=layers(self.server)):
            return self.publisher.run(lambda: self.publisher.publish(TOPIC, group, body))

    def resume(self, held: Position):
        group = topics.group_name(TOPIC)
        with override_settings(CHANNEL_LAYERS=layers(self.server)):
            return self.publisher.run(
                lambda: self.publisher.resume(TOPIC, group, held.seq, held.epoch, False)
            )


@pytest.fixture
def master_and_replica() -> Iterator[tuple[RedisServer, RedisServer]]:
    directory = Path(tempfile.mkdtemp(prefix="push-failover-"))
    master, replica = start_master_and_replica(directory)
    yield master, replica
    replica.stop()
    master.stop()
    shutil.rmtree(directory, ignore_errors=True)


def synced(master: RedisServer, replica: RedisServer) -> bool:
    with redis.Redis(port=master.port) as m, redis.Redis(port=replica.port) as r:
        return m.info("replication")["master_repl_offset"] == r.info("replication").get(
            "slave_repl_offset"
        )


def test_after_a_lossy_failover_lost_positions_reset_and_surviving_ones_go_on(
    master_and_replica,
):
    master, replica = master_and_replica
    old = Pusher(master)
    for n in range(1, 6):
        survived = old.push(n)  # 1..5, replicated
    poll_until(lambda: synced(master, replica), 10, "the replica in sync")
    with redis.Redis(port=replica.port) as promoted:
        promoted.replicaof("NO", "ONE")  # what Sentinel does to the replica
    lost = [old.push(n) for n in (6, 7)]  # reached subscribers, never the replica
    assert lost[-1].seq == 7

    new = Pusher(replica)
    renumbered = new.push(60)  # the new master numbers it 6 again...
    assert renumbered.seq == 6
    assert renumbered.epoch != survived.epoch  # ...in a new epoch: nobody takes it for old 6
    with redis.Redis(port=replica.port) as promoted:
        assert promoted.get(GENERATION_KEY) is not None
    new.push(70)
    new.push(80)

    # A subscriber that saw the lost 6 and 7 is reset: it cannot be replayed what it lacks.
    behind = new.resume(lost[-1])
    assert not behind.recovered
    assert behind.position == Position(8, renumbered.epoch)
    # One that saw only what survived goes on: the new 6, 7, 8 replayed, in the new epoch.
    caught_up = new.resume(survived)
    assert caught_up.recovered
    assert caught_up.continues == survived.epoch
    assert [seq for seq, _ in caught_up.messages] == [6, 7, 8]
    assert caught_up.position == Position(8, renumbered.epoch)


def test_a_plain_restart_keeps_every_topic_s_epoch(tmp_path):
    """Restarted on its own files, a lone Redis has a new replication id and no previous
    one: that is no failover, and nothing is renumbered."""
    server = RedisServer.start(tmp_path / "redis", tied_to_parent=True)
    try:
        pusher = Pusher(server)
        before = pusher.push(1)
        server.stop()
        server.launch()
        after = Pusher(server).push(2)
        assert (after.seq, after.epoch) == (2, before.epoch)
    finally:
        server.stop()
