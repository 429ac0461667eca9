"""A real TURN server for voice-call tests: Debian's coturn on loopback, TURN REST auth.

The pages under test run on this machine, so the server listens and relays on
127.0.0.1 only. Credentials follow the TURN REST scheme that ``chat.ice`` hands
to pages (username ``<expiry>:<user id>``, password
``base64(HMAC-SHA1(secret, username))``); coturn refuses one whose expiry has
passed with 401. ``allocate`` speaks just enough STUN/TURN (RFC 5389, 5766) to
check a credential without a browser.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import random
import re
import secrets
import shutil
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from project.redis_server import free_port
from tests.support.processes import ChildProcess

REALM = "push.test"
HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0
RELAY_PORTS = 200

MAGIC_COOKIE = 0x2112A442
BINDING, ALLOCATE, REFRESH = 0x0001, 0x0003, 0x0004
SUCCESS, ERROR = 0x0100, 0x0110  # class bits of a response's message type
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
REALM_ATTR, NONCE, XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT = 0x0014, 0x0015, 0x0016, 0x0019
UDP_PROTOCOL = 17

# What coturn logs when a session ends: the bytes it relayed to and from peers.
PEER_USAGE = re.compile(
    r"peer usage: realm=<[^>]*>, username=<(?P<username>[^>]*)>, "
    r"rp=(?P<rp>\d+), rb=(?P<rb>\d+), sp=(?P<sp>\d+), sb=(?P<sb>\d+)"
)
ALLOCATED = re.compile(r"user <(?P<username>[^>]*)>: incoming packet ALLOCATE processed, success")


def turnserver_path() -> str | None:
    return shutil.which("turnserver")


def rest_credential(secret: str, user_id: object, expires: int) -> tuple[str, str]:
    """A TURN REST username and password, as ``chat.ice.turn_credential`` makes them."""
    username = f"{int(expires)}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class PeerUsage:
    """One ended session's relayed traffic: packets and bytes received from / sent to peers."""

    username: str
    packets_received: int
    bytes_received: int
    packets_sent: int
    bytes_sent: int


@dataclass(frozen=True)
class AllocateResult:
    """An Allocate's outcome: the relayed address, or the error code (401: refused)."""

    relayed: tuple[str, int] | None
    error: int | None


class TurnServer:
    """``turnserver`` on a free port of 127.0.0.1, relaying from a random range of ports.

    Its log (``--log-file stdout``, verbose) is ``<log_dir>/turnserver.log``;
    its pid file and SQLite database (unused, coturn opens one anyway) live in
    a temporary directory, so it needs no root-only path.
    """

    def __init__(self, log_dir: Path, *, name: str = "turnserver") -> None:
        path = turnserver_path()
        if path is None:
            raise RuntimeError("no turnserver on PATH: 'apt-get install coturn'")
        self.secret = secrets.token_hex(16)
        self.port = free_udp_and_tcp_port()
        self.relay_ports = free_udp_range(RELAY_PORTS)
        self.directory = Path(tempfile.mkdtemp(prefix="push-test-turn-"))
        argv = [
            path,
            "-n",  # no turnserver.conf: Debian's /etc one logs to syslog
            "--listening-ip", HOST, "--relay-ip", HOST,
            "--listening-port", str(self.port),
            "--min-port", str(self.relay_ports.start),
            "--max-port", str(self.relay_ports.stop - 1),
            "--use-auth-secret", "--static-auth-secret", self.secret,
            "--realm", REALM,
            "--fingerprint",
            # The relay addresses are 127.0.0.1: without this coturn answers a
            # permission or channel to one with 403 Forbidden IP, and two relayed
            # pages never meet. 192.0.2.2 (the pages' host candidates) needs no flag.
            "--allow-loopback-peers",
            "--no-tls", "--no-dtls", "--no-cli",
            "--log-file", "stdout", "--verbose",
            "--pidfile", str(self.directory / "turnserver.pid"),
            "--db", str(self.directory / "turndb"),
        ]  # fmt: skip
        self.argv = argv
        started = time.monotonic()
        self.process = ChildProcess(name, argv, os.environ, log_dir)
        try:
            self.process.wait_until(self.answers, READY_TIMEOUT_S, "STUN binding answer")
        except BaseException:
            self.stop()
            raise
        self.ready_after_s = time.monotonic() - started

    @classmethod
    def start(cls, log_dir: Path) -> TurnServer:
        return cls(log_dir)

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def url(self) -> str:
        return f"turn:{HOST}:{self.port}?transport=udp"

    @property
    def urls(self) -> list[str]:
        return [self.url, f"turn:{HOST}:{self.port}?transport=tcp"]

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def log_text(self) -> str:
        return self.process.log_text()

    def answers(self) -> bool:
        """True once both listeners answer a STUN Binding request."""
        return stun_binding_ok(HOST, self.port, "udp") and stun_binding_ok(HOST, self.port, "tcp")

    def credential(self, user_id: object, ttl_s: float = 3600) -> tuple[str, str]:
        """A username and password valid for ``ttl_s`` seconds (negative: already expired).

        coturn checks the expiry only when an allocation is made: one granted
        before it keeps refreshing, and relaying, after it.
        """
        return rest_credential(self.secret, user_id, int(time.time() + ttl_s))

    def ice_server(self, user_id: object, ttl_s: float = 3600) -> dict[str, object]:
        """An ``RTCIceServer`` entry for this server."""
        username, password = self.credential(user_id, ttl_s)
        return {"urls": self.urls, "username": username, "credential": password}

    def allocate(self, username: str, password: str) -> AllocateResult:
        return allocate(HOST, self.port, username, password)

    def allocations(self) -> list[str]:
        """Usernames of the allocations granted so far, in order."""
        return [match["username"] for match in ALLOCATED.finditer(self.log_text())]

    def peer_usage(self) -> list[PeerUsage]:
        """Relayed traffic of the allocations that have ended.

        coturn logs it only when a session closes (a page's RTCPeerConnection
        closed, or its allocation timed out), not while a call runs. Sessions
        with no user (the readiness probes) are left out.
        """
        return [
            PeerUsage(m["username"], int(m["rp"]), int(m["rb"]), int(m["sp"]), int(m["sb"]))
            for m in PEER_USAGE.finditer(self.log_text())
            if m["username"]
        ]


def free_udp_and_tcp_port() -> int:
    """A port of 127.0.0.1 free for both TCP and UDP (coturn listens on both)."""
    for _ in range(50):
        port = free_port(HOST)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both TCP and UDP on 127.0.0.1")


def free_udp_range(size: int) -> range:
    """``size`` consecutive UDP ports, all free now, above Linux's default ephemeral range.

    Above 61000 so that the pages' own sockets (host candidates) and other
    servers' ephemeral ports rarely take relay ports; random so that two test
    runs rarely share one (coturn skips a busy port anyway).
    """
    for _ in range(50):
        start = random.randrange(61000, 65536 - size)
        ports = range(start, start + size)
        if all(_udp_free(port) for port in ports):
            return ports
    raise RuntimeError(f"no {size} consecutive free UDP ports above 61000")


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


# --- STUN/TURN on the wire ---------------------------------------------------------------


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _message(method: int, transaction: bytes, attributes: bytes, key: bytes | None = None) -> bytes:
    """A request; with ``key``, signed by a MESSAGE-INTEGRITY (the last attribute)."""
    if key is None:
        return struct.pack("!HHI", method, len(attributes), MAGIC_COOKIE) + transaction + attributes
    # The HMAC covers the header with its length already counting the integrity attribute.
    header = struct.pack("!HHI", method, len(attributes) + 24, MAGIC_COOKIE) + transaction
    digest = hmac.new(key, header + attributes, hashlib.sha1).digest()
    return header + attributes + _attribute(MESSAGE_INTEGRITY, digest)


def _parse(data: bytes) -> tuple[int, bytes, dict[int, bytes]]:
    """Message type, transaction id and attributes (the first of each type) of a message."""
    kind, length, cookie = struct.unpack_from("!HHI", data)
    if cookie != MAGIC_COOKIE or len(data) < 20 + length:
        raise ValueError("not a STUN message")
    attributes: dict[int, bytes] = {}
    offset = 20
    while offset + 4 <= 20 + length:
        attr, size = struct.unpack_from("!HH", data, offset)
        attributes.setdefault(attr, data[offset + 4 : offset + 4 + size])
        offset += 4 + size + (-size % 4)
    return kind, data[8:20], attributes


def _exchange(sock: socket.socket, message: bytes, timeout: float) -> tuple[int, dict[int, bytes]]:
    """Send a request over UDP and return the response with the same transaction id."""
    transaction = message[8:20]
    deadline = time.monotonic() + timeout
    # UDP may lose a datagram: resend every 250 ms, as a STUN client would.
    while (remaining := deadline - time.monotonic()) > 0:
        sock.send(message)
        sock.settimeout(min(0.25, remaining))
        with contextlib.suppress(TimeoutError):
            while True:
                kind, received, attributes = _parse(sock.recv(2048))
                if received == transaction:
                    return kind, attributes
    raise TimeoutError("no STUN response")


def stun_binding_ok(host: str, port: int, transport: str = "udp", timeout: float = 0.25) -> bool:
    """True when a STUN Binding request over ``transport`` gets a success response."""
    request = _message(BINDING, secrets.token_bytes(12), b"")
    try:
        if transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.connect((host, port))
                sock.send(request)
                sock.settimeout(timeout)
                data = sock.recv(2048)
        else:
            with socket.create_connection((host, port), timeout=timeout) as sock:
                sock.sendall(request)
                data = sock.recv(2048)
        kind, transaction, _ = _parse(data)
    except (OSError, ValueError, struct.error):
        return False
    return kind == BINDING | SUCCESS and transaction == request[8:20]


def _error_code(value: bytes) -> int:
    return (value[2] & 0x7) * 100 + value[3]


def _xor_address(value: bytes) -> tuple[str, int]:
    port = struct.unpack_from("!H", value, 2)[0] ^ (MAGIC_COOKIE >> 16)
    address = struct.unpack_from("!I", value, 4)[0] ^ MAGIC_COOKIE
    return socket.inet_ntoa(struct.pack("!I", address)), port


def allocate(
    host: str, port: int, username: str, password: str, timeout: float = 5.0
) -> AllocateResult:
    """A UDP relay allocation with long-term credentials, released again at once.

    The first Allocate carries no credentials and learns the realm and nonce
    from the 401; the second is signed with ``MD5(username:realm:password)``.
    """
    transport = _attribute(REQUESTED_TRANSPORT, bytes([UDP_PROTOCOL, 0, 0, 0]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        kind, attributes = _exchange(
            sock, _message(ALLOCATE, secrets.token_bytes(12), transport), timeout
        )
        if kind != ALLOCATE | ERROR or _error_code(attributes[ERROR_CODE]) != 401:
            raise ValueError(f"unexpected answer to an unauthenticated Allocate: {kind:#06x}")
        realm, nonce = attributes[REALM_ATTR], attributes[NONCE]
        key = hashlib.md5(username.encode() + b":" + realm + b":" + password.encode()).digest()  # noqa: S324 - the RFC 5389 key
        auth = (
            _attribute(USERNAME, username.encode())
            + _attribute(REALM_ATTR, realm)
            + _attribute(NONCE, nonce)
        )
        request = _message(ALLOCATE, secrets.token_bytes(12), transport + auth, key)
        kind, attributes = _exchange(sock, request, timeout)
        if kind != ALLOCATE | SUCCESS:
            return AllocateResult(relayed=None, error=_error_code(attributes[ERROR_CODE]))
        relayed = _xor_address(attributes[XOR_RELAYED_ADDRESS])
        # Lifetime 0 ends the allocation now rather than after coturn's 10 minutes.
        release = _attribute(LIFETIME, struct.pack("!I", 0)) + auth
        _exchange(sock, _message(REFRESH, secrets.token_bytes(12), release, key), timeout)
        return AllocateResult(relayed=relayed, error=None)


@pytest.fixture(scope="session")
def turn_server(log_dir: Path) -> Iterator[TurnServer]:
    """A real coturn on a free port of 127.0.0.1, with a random TURN REST secret."""
    if turnserver_path() is None:
        pytest.skip("no turnserver: 'apt-get install coturn' (.ci/run installs it)")
    server = TurnServer.start(log_dir)
    yield server
    server.stop()
