"""Model changes recompute the dashboards that watch them, after commit.

Saves, deletes and many-to-many changes of any watched model ask for a
recompute once the transaction commits (a rolled-back one asks for nothing);
``tasks.registry.request_refresh`` coalesces the requests of every process.
Connected for all senders in ``TasksConfig.ready``; the registry is consulted
at signal time, so dashboards registered by later apps are watched too.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from tasks import registry
from ws.signals import topic_subscribed

logger = logging.getLogger("tasks")

_M2M_CHANGES = frozenset({"post_add", "post_remove", "post_clear"})


def _after_commit(model: type, using: str | None) -> None:
    for entry in registry.watching(model):
        transaction.on_commit(lambda name=entry.name: _request(name), using=using)


def _request(name: str) -> None:
    try:
        registry.request_refresh(name)
    except Exception:  # Redis away: the next change or the schedule recomputes it
        logger.exception("dashboard %s: could not ask for a recompute", name)


def on_saved(sender: type, using: str | None = None, **kwargs: Any) -> None:
    _after_commit(sender, using)


def on_deleted(sender: type, using: str | None = None, **kwargs: Any) -> None:
    _after_commit(sender, using)


def on_m2m_changed(
    sender: type, instance: Any, action: str, model: type, using: str | None = None, **kwargs: Any
) -> None:
    if action in _M2M_CHANGES:
        _after_commit(type(instance), using)
        _after_commit(model, using)


def on_topic_subscribed(sender: Any, topic: str, **kwargs: Any) -> None:
    """A socket subscribed to a dashboard: give it a fresh value if the last is old."""
    kind, _, name = topic.partition(".")
    if kind == "dashboard" and registry.is_registered(name):
        registry.refresh_if_stale(name)


def connect() -> None:
    topic_subscribed.connect(on_topic_subscribed, dispatch_uid="tasks.dashboards.subscribed")
    post_save.connect(on_saved, dispatch_uid="tasks.dashboards.saved")
    post_delete.connect(on_deleted, dispatch_uid="tasks.dashboards.deleted")
    m2m_changed.connect(on_m2m_changed, dispatch_uid="tasks.dashboards.m2m")
