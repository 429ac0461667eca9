"""Signals the transport sends, for apps that drive updates (``tasks/`` listens).

``topic_subscribed(topic=...)``: a socket has just subscribed to ``topic`` (in a
server process, after the ``subscribed`` frame and replay were sent). Sent with
``asend_robust``: a receiver's error is logged, never the socket's problem.
Receivers must be quick (sync receivers run in a thread); queue real work.

``presence_left(topic=..., member=...)``: on a presence topic, ``member``'s last
socket has gone (unsubscribed, closed, its subscription revoked, or swept after
its server process died). Sent once per leave across every process, by the one
whose Redis script removed the socket (the same that announces the ``leave``
frame), with ``asend_robust`` on that process' event loop. ``member`` is the
``ws.presence.Member`` dict (``{"id": "user:7", "name": "alice"}``). Calls use
it: a participant whose last socket left ``call.<room>`` leaves the call.
"""

from __future__ import annotations

from django.dispatch import Signal

topic_subscribed = Signal()
presence_left = Signal()
