"""Fan-out: N clients in one room, M pushes from a separate publisher process.

Runs ours (uvicorn), ours on daphne and the seed's setup as written
(``bench/reference``) one after the other (``--system``), each on a fresh Redis
and server, with the same clients on the seed route (``/ws/heartbeat/<room>/``
for ours, ``/heartbeat/<room>/`` for the seed: the like-for-like comparison).
Prints one JSON line:

    {"bench": "fanout", "clients": N, "ours": {...}, "ours-daphne": {...}, "seed": {...},
     "ratio": {...}, "ratio_ours_daphne": {...}}

Ratios are oriented so that above 1 means ours is better (ours/seed for
throughput, seed/ours for latency and memory). ``client_cpu_pct_max`` is the
busiest client process's CPU share while pushes were delivered (100 = a core):
well below 100 means the clients were not the bottleneck.

    .venv/bin/python bench/fanout.py --clients 1000 --pushes 200 --rate 20
    .venv/bin/python bench/fanout.py --clients 10000 --rate 1 --pushes 20 --system both \
        --web-processes 2 --client-processes 4 --profile bench/results/profile.txt
    .venv/bin/python bench/fanout.py --smoke
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    PUSH_RATIOS,
    SYSTEM_CHOICES,
    add_ratios,
    emit,
    environment_stamp,
    exit_on_signals,
    push_round,
    raise_nofile_limit,
    systems_from,
)

ROOM = "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument(
        "--rate",
        type=float,
        default=20.0,
        help="pushes per second (0: as fast as the publisher can)",
    )
    parser.add_argument("--system", choices=SYSTEM_CHOICES, help="default: all; both with --smoke")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--web-processes", type=int, default=1, help="uvicorn workers serving ours (one port)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="write a py-spy summary of our server's hot path there (needs py-spy)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, ours and the seed, fast")
    options = parser.parse_args()
    if options.smoke:
        options.clients, options.pushes, options.rate = 20, 10, 20.0
    exit_on_signals()
    raise_nofile_limit()

    record: dict = {"bench": "fanout", "clients": options.clients, "pushes": options.pushes,
                    "rate": options.rate, "route": "seed route, both systems"}  # fmt: skip
    for system in systems_from(options.system, smoke=options.smoke):
        record[system] = push_round(
            system,
            [ROOM] * options.clients,
            [ROOM],
            pushes=options.pushes,
            rate=options.rate,
            processes=options.client_processes,
            web_processes=options.web_processes,
            profile_to=options.profile if system == "ours" else None,
            deliver_timeout=20 if options.smoke else None,
        )
    # The targets: memory per idle socket always; one push to 10,000 in 250 ms.
    record["targets"] = {"server_rss_kib_per_conn": 30.0}
    if options.clients >= 10_000:
        record["targets"]["p99_ms"] = 250.0
    add_ratios(record, PUSH_RATIOS)
    record["environment"] = environment_stamp()
    emit(record)


if __name__ == "__main__":
    main()
