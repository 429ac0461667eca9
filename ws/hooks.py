"""Signals the transport sends, for apps that drive updates (``tasks/`` listens).

``topic_subscribed(topic=...)``: a socket has just subscribed to ``topic`` (in a
server process, after the ``subscribed`` frame and replay were sent). Sent with
``asend_robust``: a receiver's error is logged, never the socket's problem.
Receivers must be quick (sync receivers run in a thread); queue real work.
"""

from __future__ import annotations

from django.dispatch import Signal

topic_subscribed = Signal()
