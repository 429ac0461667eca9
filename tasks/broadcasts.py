"""Delivering admin broadcasts: who gets one, sending it once, and sending the due ones.

A broadcast reaches its audience as one push per topic,
``{"msg": "broadcast", "code": 200, "data": {"id", "title", "body", "level"}}``;
open pages show it as a banner.
"""

from __future__ import annotations

import logging
from typing import TypedDict

from django.conf import settings
from django.utils import timezone

from tasks.models import Broadcast
from tasks.tasks import deliver_broadcast
from ws import census
from ws.push import push

__all__ = ["BroadcastData", "deliver", "send_due", "topics_for"]

logger = logging.getLogger(__name__)

BROADCAST_MSG = "broadcast"


class BroadcastData(TypedDict):
    """The ``data`` of a broadcast message: what the banner shows."""

    id: int
    title: str
    body: str
    level: str


def topics_for(broadcast: Broadcast) -> list[str]:
    """The topics that reach the broadcast's audience.

    A group is reached through its active members' own topics (``user.<id>``),
    so a member who signs in on another page later does not see it, as with
    any other message to a user. A deleted group or user reaches nobody.
    """
    target = broadcast.target
    if target == Broadcast.Target.EVERYONE:
        return ["broadcast"]
    if target == Broadcast.Target.USER:
        return [f"user.{broadcast.user_id}"] if broadcast.user_id else []
    if target == Broadcast.Target.GROUP:
        if broadcast.group is None:
            return []
        members = broadcast.group.user_set.filter(is_active=True).order_by("pk")
        return [f"user.{pk}" for pk in members.values_list("pk", flat=True)]
    return [broadcast.topic] if broadcast.topic else []


def deliver(broadcast_id: int) -> int:
    """Send the broadcast once; return how many sockets were subscribed (0 if sent before).

    How it is sent once, yet never lost: ``sent_at`` is set only after every push
    succeeded, with ``UPDATE ... WHERE sent_at IS NULL`` so exactly one run records
    it. Each push carries the key ``broadcast:<id>:<topic>``, and a push whose key
    was used before pushes nothing: two workers running it at once, or a run retried
    after Redis failed half way (some topics pushed, the rest not), send each topic
    the message once. A run that finds ``sent_at`` set does nothing. A claim made
    before pushing would instead need a lease to recover a broadcast whose worker
    died or lost Redis after claiming; the keys make that unnecessary. (Keys are
    remembered for ``PUSH_HISTORY_TTL_S``, far longer than the task's retries.)

    ``subscribers`` is the number of sockets subscribed to the topics when it was
    pushed, from the servers' census (``ws.census``: at most one
    ``PUSH_LAYER_CHECK_S`` old). Raises redis-py's ``ConnectionError`` while Redis
    is unreachable, leaving the broadcast unsent for a retry.
    """
    broadcast = Broadcast.objects.select_related("group").filter(pk=broadcast_id).first()
    if broadcast is None:
        logger.warning("broadcast %s: no such broadcast", broadcast_id)
        return 0
    if broadcast.sent_at is not None:
        return 0
    data: BroadcastData = {
        "id": broadcast.pk,
        "title": broadcast.title,
        "body": broadcast.body,
        "level": broadcast.level,
    }
    reached = 0
    names = topics_for(broadcast)
    for topic in names:
        reached += census.subscribers(topic)
        push(topic, data, msg=BROADCAST_MSG, code=200, key=f"broadcast:{broadcast.pk}:{topic}")
    claimed = Broadcast.objects.filter(pk=broadcast.pk, sent_at__isnull=True).update(
        sent_at=timezone.now(), subscribers=reached
    )
    if not claimed:
        return 0  # another run recorded it first; its pushes and ours were the same ones
    logger.info("broadcast %s sent to %d topics, %d sockets", broadcast.pk, len(names), reached)
    return reached


def send_due() -> int:
    """Queue delivery of every unsent broadcast whose ``send_at`` has passed; return how many.

    Beat calls this every ``BROADCAST_CHECK_S``. Each queued delivery expires after
    that interval: a broadcast still unsent by then (the worker was away) is queued
    again by the next check instead of piling up one message per check.
    """
    due = Broadcast.objects.filter(send_at__lte=timezone.now(), sent_at__isnull=True)
    ids = list(due.order_by("send_at", "pk").values_list("pk", flat=True))
    for pk in ids:
        deliver_broadcast.apply_async((pk,), expires=settings.BROADCAST_CHECK_S)
    return len(ids)
