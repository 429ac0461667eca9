"""Connect storm: N clients connect at once; time until all are subscribed, refusals, errors.

Every client process opens all of its connections at the same moment (no
limit on attempts in flight). A client counts as subscribed when the greeting
arrives (both systems send it after joining the room's group). Then one push
checks that every connected client really is in the group. Runs ours and the
seed's setup as written (``bench/reference``), each on a fresh Redis and server,
and prints one JSON line with both and our/seed ratios (above 1: ours better).

    .venv/bin/python bench/connect_storm.py --clients 5000
    .venv/bin/python bench/connect_storm.py --smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    SYSTEM_CHOICES,
    ClientFleet,
    Stack,
    System,
    add_ratios,
    emit,
    environment_stamp,
    exit_on_signals,
    note,
    raise_nofile_limit,
    run_publisher,
    systems_from,
)

ROOM = "storm"
STORM_RATIOS = {
    "connected": True,
    "all_subscribed_s": False,
    "half_subscribed_s": False,
    "last_subscribed_s": False,
    "refused": False,
    "server_error_lines": False,
    "server_rss_kib_per_conn": False,
}


def storm(system: System, clients: int, processes: int, timeout: float) -> dict[str, Any]:
    with Stack(system) as stack:
        rss_idle = stack.warm_up()
        log_start = stack.log_offset()
        urls = [stack.ws_url(ROOM)] * clients
        with ClientFleet(
            urls, origin=stack.origin, processes=processes, concurrency=None, open_timeout=timeout
        ) as fleet:
            note(f"{system}: {clients} clients connecting at once")
            connect = fleet.connect(timeout=timeout)
            time.sleep(1.0)
            rss_connected = stack.server_rss_kib()
            fleet.reset_clock()
            published = run_publisher(stack, [ROOM], pushes=1, rate=1, timeout=60)
            fleet.wait_delivered(connect["connected"], timeout=30, quiet=5)
            result = fleet.stop()
        failures = stack.server_failures(log_start)
    connected = connect["connected"]
    return {
        "clients": clients,
        "connected": connected,
        "refused": connect["failed"],
        "no_answer": connect["pending"],
        "connect_errors": connect["errors"],
        "all_subscribed_s": connect["all_greeted_s"] if connected == clients else None,
        "last_subscribed_s": connect["all_greeted_s"],
        "half_subscribed_s": connect["greeted_p50_s"],
        "push_reached": result["delivered"],
        "push_reached_ratio": round(result["delivered"] / connected, 4) if connected else None,
        "publisher_errors": published.get("errors", {}),
        "extra_heartbeats": result["extra_heartbeats"],
        "dropped_after_connect": result["closed_after_greeting"],
        "server_rss_kib_per_conn": round((rss_connected - rss_idle) / connected, 1)
        if connected
        else None,
        "server_error_lines": len(failures),
        "server_tracebacks": sum(line.startswith("Traceback") for line in failures),
        "server_error_sample": failures[:3],
        "client_cpu_pct_max_connect": connect["client_cpu_pct_max"],
        "client_processes": processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--system", choices=SYSTEM_CHOICES, help="default: all; both with --smoke")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0, help="connect budget, seconds")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, ours and the seed, fast")
    options = parser.parse_args()
    if options.smoke:
        options.clients, options.timeout = 20, 20.0
    exit_on_signals()
    raise_nofile_limit()

    record: dict = {"bench": "connect_storm", "clients": options.clients}
    for system in systems_from(options.system, smoke=options.smoke):
        record[system] = storm(system, options.clients, options.client_processes, options.timeout)
    add_ratios(record, STORM_RATIOS)
    record["environment"] = environment_stamp()
    emit(record)


if __name__ == "__main__":
    main()
