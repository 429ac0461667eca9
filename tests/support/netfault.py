"""Real network faults on this machine: UDP dropped by nftables, TCP connections destroyed
on the server's side with ``ss -K`` (both need root or CAP_NET_ADMIN).

Each fault is an ``inet`` table of its own (IPv4 and IPv6), named
``push_test_fault_<pid>_<n>``, deleted when the fault ends. A run killed
mid-fault leaves its table behind; the next fault deletes every such table
whose process is gone, never the live one of a concurrent run.

Packets between two addresses of this machine (127.0.0.1, 192.0.2.2) pass
both hooks, output then input, and are dropped at input: they vanish as on a
lossy path. A drop at output makes the sender's ``sendto`` fail with EPERM
instead, which a real network never does, so output drops only packets that
leave the machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator

import pytest

TABLE_PREFIX = "push_test_fault_"
TABLE_NAME = re.compile(rf"^table inet ({TABLE_PREFIX}(\d+)_\d+)$", re.MULTILINE)
NOT_PERMITTED = "Operation not permitted"

_sequence = itertools.count()


def nft_path() -> str | None:
    return shutil.which("nft") or next(
        (path for path in ("/usr/sbin/nft", "/sbin/nft") if os.access(path, os.X_OK)), None
    )


def _nft(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    nft = nft_path()
    if nft is None:
        pytest.skip("no nft: 'apt-get install nftables' (.ci/run installs it)")
    result = subprocess.run(
        [nft, *args], input=script, capture_output=True, text=True, timeout=10, check=False
    )
    if result.returncode != 0 and NOT_PERMITTED in result.stderr:
        reason = "; ".join(result.stderr.strip().splitlines())
        pytest.skip(f"nft needs root or CAP_NET_ADMIN: {reason}")
    if result.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} failed: {result.stderr.strip()}")
    return result


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def fault_tables() -> list[str]:
    """Names of the fault tables that exist now, of any run."""
    return [match[1] for match in TABLE_NAME.finditer(_nft("list", "tables").stdout)]


def remove_stale_tables() -> list[str]:
    """Delete the fault tables of runs that are gone (killed mid-fault); their names."""
    listing = _nft("list", "tables").stdout
    stale = [match[1] for match in TABLE_NAME.finditer(listing) if not _alive(int(match[2]))]
    for name in stale:
        _nft("delete", "table", "inet", name)
    return stale


def _ruleset(table: str, ports: list[int] | None) -> str:
    if ports is None:
        drops = ["meta l4proto udp drop"]
    else:
        elements = ", ".join(str(port) for port in ports)
        drops = [f"udp sport {{ {elements} }} drop", f"udp dport {{ {elements} }} drop"]
    rules = "\n".join(f"    {rule}" for rule in drops)
    leaving = "\n".join(f'    oifname != "lo" {rule}' for rule in drops)
    return f"""table inet {table} {{
  chain input {{
    type filter hook input priority filter; policy accept;
{rules}
  }}
  chain output {{
    type filter hook output priority filter; policy accept;
{leaving}
  }}
}}
"""


@contextlib.contextmanager
def udp_blocked(*, ports: Iterable[int] | None = None) -> Iterator[str]:
    """While active, drop UDP on every interface: all of it, or that from or to ``ports``.

    Yields the table's name. Skips the test when nft is missing or not permitted.
    """
    port_list = None if ports is None else sorted(set(ports))
    if port_list == []:
        raise ValueError("no ports to block: pass ports=None to block all UDP")
    remove_stale_tables()
    table = f"{TABLE_PREFIX}{os.getpid()}_{next(_sequence)}"
    _nft("-f", "-", script=_ruleset(table, port_list))
    try:
        yield table
    finally:
        _nft("delete", "table", "inet", table)


def established_client_ports(server_port: int) -> set[int]:
    """The client ports of the TCP connections established to ``server_port`` now."""
    listing = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{server_port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(line.split()[-1].rsplit(":", 1)[1]) for line in listing.splitlines() if line}


def cut_connections(server_port: int, client_ports: Iterable[int]) -> None:
    """Destroy, on the server's side, the connections to ``server_port`` from ``client_ports``.

    ``ss -K``: the server sees its socket reset, the client a connection abort,
    as when a proxy or a NAT drops a connection.
    """
    ports = " or ".join(f"dport = :{port}" for port in sorted(set(client_ports)))
    if not ports:
        raise ValueError("no client ports to cut")
    subprocess.run(
        ["ss", "-K", "state", "established", f"( sport = :{server_port} and ( {ports} ) )"],
        capture_output=True,
        check=True,
    )
