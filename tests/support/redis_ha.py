"""Redis as deployments past one machine run it: a master, a replica and three sentinels.

Real processes of the one ``redis-server`` binary (``--sentinel`` makes it a
sentinel), on free ports of 127.0.0.1, with their files in a directory of the
test's own. Sentinels notice a dead master after ``DOWN_AFTER_MS`` and promote
the replica.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from project.redis_server import RedisServer, die_with_parent, find_redis_server, free_port, ping
from tests.support.waiting import poll_until

MASTER_NAME = "pushmaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000


@dataclass
class Sentinel:
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)


@dataclass
class SentinelSet:
    directory: Path
    master: RedisServer
    replica: RedisServer
    sentinels: list[Sentinel] = field(default_factory=list)

    @property
    def addresses(self) -> str:
        """``REDIS_SENTINELS`` for the stack: ``127.0.0.1:PORT,...``."""
        return ",".join(f"127.0.0.1:{each.port}" for each in self.sentinels)

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers says."""
        for each in self.sentinels:
            try:
                with each.client() as client:
                    found = client.sentinel_get_master_addr_by_name(MASTER_NAME)
            except redis.RedisError:
                continue
            if found:
                return int(found[1])
        return None

    def wait_ready(self, timeout: float = 30) -> None:
        """Until every sentinel knows the replica and the two other sentinels."""

        def ready() -> bool:
            for each in self.sentinels:
                try:
                    with each.client() as client:
                        state = client.sentinel_master(MASTER_NAME)
                except redis.RedisError:
                    return False
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
            with redis.Redis(port=self.replica.port) as replica:
                return replica.info("replication").get("master_link_status") == "up"

        poll_until(ready, timeout, "sentinels that know the replica and each other")

    def stop(self) -> None:
        for each in self.sentinels:
            if each.process.poll() is None:
                each.process.kill()
                each.process.wait()
        self.replica.stop()
        self.master.stop()


def _start_sentinel(directory: Path, master_port: int) -> Sentinel:
    port = free_port()
    config = directory / f"sentinel-{port}.conf"  # sentinels rewrite their own file
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"logfile {directory / f'sentinel-{port}.log'}\n"
        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {MASTER_NAME} 1\n"
    )
    process = subprocess.Popen(
        [find_redis_server(), str(config), "--sentinel"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent,
    )
    poll_until(lambda: ping("127.0.0.1", port), 10, f"sentinel on {port}")
    return Sentinel(port, process)


def start_master_and_replica(directory: Path) -> tuple[RedisServer, RedisServer]:
    """A Redis server, and a second one replicating it, with their files in ``directory``."""
    master = RedisServer.start(directory / "master", tied_to_parent=True)
    replica = RedisServer.start(
        directory / "replica",
        tied_to_parent=True,
        extra_args=("--replicaof", "127.0.0.1", str(master.port)),
    )
    return master, replica


@contextmanager
def sentinel_set() -> Iterator[SentinelSet]:
    """A master, a replica of it and three sentinels watching them, ready to fail over."""
    directory = Path(tempfile.mkdtemp(prefix="push-sentinel-"))
    servers = SentinelSet(directory, *start_master_and_replica(directory))
    try:
        for _ in range(3):
            servers.sentinels.append(_start_sentinel(directory, servers.master.port))
        servers.wait_ready()
        yield servers
    finally:
        servers.stop()
        shutil.rmtree(directory, ignore_errors=True)
