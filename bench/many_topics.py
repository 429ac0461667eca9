"""Many topics: N clients spread over T rooms, pushes spread round-robin across the rooms.

Client ``i`` joins room ``t<i % T>`` on the seed route; push ``n`` goes to room
``t<n % T>`` from a separate publisher process. Runs ours and the seed's setup as
written (``bench/reference``) one after the other, each on a fresh Redis and
server. Prints one JSON line with both systems' figures and our/seed ratios
(above 1 means ours is better), as ``bench/fanout.py`` does.

    .venv/bin/python bench/many_topics.py --clients 5000 --topics 500 --pushes 2000
    .venv/bin/python bench/many_topics.py --smoke
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--topics", type=int, default=500)
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="pushes per second, all rooms")
    parser.add_argument("--system", choices=SYSTEM_CHOICES, help="default: all; both with --smoke")
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument(
        "--web-processes", type=int, default=1, help="uvicorn workers serving ours (one port)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, ours and the seed, fast")
    options = parser.parse_args()
    if options.smoke:
        options.clients, options.topics, options.pushes = 20, 5, 10
        options.rate = 20.0
    exit_on_signals()
    raise_nofile_limit()

    rooms = [f"t{index}" for index in range(options.topics)]
    record: dict = {"bench": "many_topics", "clients": options.clients, "topics": options.topics,
                    "pushes": options.pushes, "rate": options.rate}  # fmt: skip
    for system in systems_from(options.system, smoke=options.smoke):
        record[system] = push_round(
            system,
            [rooms[index % len(rooms)] for index in range(options.clients)],
            rooms,
            pushes=options.pushes,
            rate=options.rate,
            processes=options.client_processes,
            web_processes=options.web_processes,
            deliver_timeout=20 if options.smoke else None,
        )
    add_ratios(record, PUSH_RATIOS)
    record["environment"] = environment_stamp()
    emit(record)


if __name__ == "__main__":
    main()
