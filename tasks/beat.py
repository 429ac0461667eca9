"""Beat's scheduler: schedules declared in code become django-celery-beat rows, by name.

``CELERY_BEAT_SCHEDULE`` entries and dashboards with ``every_s`` are written to
``PeriodicTask`` rows when beat starts. A new name gets a row; an existing row
keeps the interval and the on/off switch an admin gave it (only the task, its
arguments and options follow the code), so admin edits survive restarts. Beat
reads the rows through django-celery-beat's ``DatabaseScheduler``, which
notices admin changes while it runs: a new interval or a disabled job takes
effect without a restart.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler

from tasks import registry

logger = logging.getLogger("tasks")


@dataclass(frozen=True)
class CodeSchedule:
    """One job declared in code: a name, a task, every how many seconds."""

    name: str
    task: str
    every_s: int
    args: list[Any] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def code_schedules() -> list[CodeSchedule]:
    """Every schedule the code declares: ``CELERY_BEAT_SCHEDULE`` and the dashboards'."""
    found = []
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        every_s = max(1, round(float(entry["schedule"])))
        found.append(
            CodeSchedule(name, entry["task"], every_s, list(entry.get("args", [])),
                         dict(entry.get("options", {})))
        )  # fmt: skip
    for entry in registry.registered():
        if entry.every_s is not None:
            found.append(
                CodeSchedule(
                    f"dashboard-{entry.name}",
                    "tasks.tasks.refresh_dashboard",
                    entry.every_s,
                    [entry.name],
                    # A late run is worthless once the next is due.
                    {"expires": entry.every_s},
                )
            )
    return found


def _whole_seconds(value: float | None) -> int | None:
    return None if value is None else max(1, round(float(value)))


def sync_schedules(schedules: list[CodeSchedule]) -> tuple[int, int]:
    """Write ``schedules`` to ``PeriodicTask`` rows; return (created, updated)."""
    created = updated = 0
    with transaction.atomic():
        for job in schedules:
            follows_code = {
                "task": job.task,
                "args": json.dumps(job.args),
                "expires": None,
                "expire_seconds": _whole_seconds(job.options.get("expires")),
                "queue": job.options.get("queue"),
            }
            row = PeriodicTask.objects.filter(name=job.name).first()
            if row is None:
                interval, _ = IntervalSchedule.objects.get_or_create(
                    every=job.every_s, period=IntervalSchedule.SECONDS
                )
                PeriodicTask.objects.create(name=job.name, interval=interval, **follows_code)
                created += 1
            elif any(getattr(row, key) != value for key, value in follows_code.items()):
                for key, value in follows_code.items():
                    setattr(row, key, value)
                row.save()
                updated += 1
    return created, updated


class Scheduler(DatabaseScheduler):
    """django-celery-beat's database scheduler, with the code's schedules synced first."""

    def setup_schedule(self) -> None:
        self.install_default_entries(self.schedule)
        created, updated = sync_schedules(code_schedules())
        logger.info("beat: schedules from code synced (%d new, %d updated)", created, updated)
