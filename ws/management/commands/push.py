"""``python manage.py push TOPIC '{"json": "data"}'``: a broadcast from the shell."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ws import topics
from ws.push import push


class Command(BaseCommand):
    help = (
        "Push JSON data to every socket subscribed to TOPIC "
        "(or, with --room, to the seed route heartbeat/<room>/)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("topic", nargs="?", help="topic, e.g. dashboard.sales or broadcast")
        parser.add_argument("data", help="the data, as JSON")
        parser.add_argument("--room", help="a seed room instead of a topic")
        parser.add_argument("--msg", default="success", help="the envelope's msg (success)")
        parser.add_argument("--code", type=int, default=200, help="the envelope's code (200)")

    def handle(self, *args: Any, **options: Any) -> None:
        topic, room = options["topic"], options["room"]
        if bool(topic) == bool(room):
            raise CommandError("give either TOPIC or --room ROOM")
        try:
            data = json.loads(options["data"])
        except ValueError as exc:
            raise CommandError(f"DATA is not valid JSON ({exc}): {options['data']!r}") from None
        try:
            name = topics.seed_room_topic(room) if room else topics.resolve(topic).name
        except topics.UnknownTopic as exc:
            raise CommandError(f"not a topic: {exc}") from None
        seq = push(name, data, msg=options["msg"], code=options["code"])
        self.stdout.write(f"pushed to {name} as seq {seq}")
