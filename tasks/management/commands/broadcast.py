"""``python manage.py broadcast "Title" "Body"``: an admin broadcast from the shell."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from tasks import broadcasts
from tasks.models import Broadcast
from tasks.tasks import deliver_broadcast


def _when(value: str) -> dt.datetime:
    """An ISO 8601 date and time; without an offset, in ``TIME_ZONE``."""
    try:
        when = parse_datetime(value)
    except ValueError:
        when = None
    if when is None:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date and time (2030-01-31T09:00), got {value!r}"
        )
    return timezone.make_aware(when) if timezone.is_naive(when) else when


class Command(BaseCommand):
    help = (
        "Create an admin broadcast for everyone (or --user, --group, --topic) and send it: "
        "through the worker, in this process with --sync, or at --at by beat."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("title", help="the banner's title")
        parser.add_argument("body", help="the banner's text")
        parser.add_argument("--level", choices=Broadcast.Level.values, default=Broadcast.Level.INFO)
        audience = parser.add_mutually_exclusive_group()
        audience.add_argument("--user", help="a user's id (or user name)")
        audience.add_argument("--group", help="a group's name")
        audience.add_argument("--topic", help="a topic, e.g. dashboard.sales")
        when = parser.add_mutually_exclusive_group()
        when.add_argument("--at", type=_when, help="send at this time (beat sends it)")
        when.add_argument(
            "--sync", action="store_true", help="send in this process instead of the worker"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        broadcast = Broadcast(
            title=options["title"],
            body=options["body"],
            level=options["level"],
            send_at=options["at"],
            **self._audience(options),
        )
        try:
            broadcast.full_clean()
        except ValidationError as exc:
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            raise CommandError(problems) from None
        broadcast.save()
        label = f"broadcast {broadcast.pk} to {broadcast.audience}"
        if options["at"] is not None:
            self.stdout.write(f"{label} scheduled for {broadcast.send_at.isoformat()}")
        elif options["sync"]:
            reached = broadcasts.deliver(broadcast.pk)
            self.stdout.write(f"{label} sent to {reached} subscribed sockets")
        else:
            deliver_broadcast.delay_on_commit(broadcast.pk)
            self.stdout.write(f"{label} queued for the worker")

    def _audience(self, options: dict[str, Any]) -> dict[str, Any]:
        if options["user"]:
            users = get_user_model().objects
            value = options["user"]
            user = (
                users.filter(pk=value).first()
                if value.isdigit()
                else users.filter(**{users.model.USERNAME_FIELD: value}).first()
            )
            if user is None:
                raise CommandError(f"no user {value!r}")
            return {"target": Broadcast.Target.USER, "user": user}
        if options["group"]:
            group = Group.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"no group {options['group']!r}")
            return {"target": Broadcast.Target.GROUP, "group": group}
        if options["topic"]:
            return {"target": Broadcast.Target.TOPIC, "topic": options["topic"]}
        return {"target": Broadcast.Target.EVERYONE}
