"""What the transport had to repair, counted per server process.

Served as Prometheus text at ``/ws/metrics`` (each process answers for itself,
as Prometheus expects of an instance). Counters only ever rise.
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Counters:
    """The process's counters; the field names are the metrics' names."""

    # Messages dropped because a socket's queue was over capacity (ws/layer.py).
    messages_dropped: int = 0
    # Times a socket was sent what it missed: a gap, an overflow, a lost history.
    catchups: int = 0
    # Times the layer watch found the channel layer's Redis unreachable.
    layer_outages: int = 0
    # Times the watch had every socket of the process catch up (Redis back or flushed).
    layer_recoveries: int = 0


counters = Counters()

_HELP = {
    "messages_dropped": "Messages dropped for sockets over the channel capacity.",
    "catchups": "Sockets sent the messages they missed (replay or reset).",
    "layer_outages": "Times the channel layer's Redis was found unreachable.",
    "layer_recoveries": "Times every socket caught up after Redis came back or was flushed.",
}


def render_prometheus() -> str:
    """The counters in Prometheus' text exposition format."""
    lines = []
    for counter in fields(Counters):
        name = f"push_{counter.name}_total"
        lines += [
            f"# HELP {name} {_HELP[counter.name]}",
            f"# TYPE {name} counter",
            f"{name} {getattr(counters, counter.name)}",
        ]
    return "\n".join(lines) + "\n"
