"""``python manage.py chat_demo [USERNAME ...]``: a room and users to try the chat page with.

Makes the open room ``lobby`` (every signed-in user may read, post and call in
it) if it is missing, and each USERNAME that does not exist yet, with a random
password (or ``--password``) printed once. Each USERNAME may make rooms from the
page (the ``chat.add_room`` permission). Existing users keep their password
unless ``--password`` is given. For development: on a real site, make users and
rooms in the admin.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from chat.models import Room

LOBBY = "lobby"


class Command(BaseCommand):
    help = "Make the open room 'lobby' and the given users (passwords printed), to try /chat/."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("usernames", nargs="*", metavar="USERNAME")
        parser.add_argument(
            "--password", help="this password for every USERNAME (default: a random one each)"
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        room, created = Room.objects.get_or_create(
            slug=LOBBY, defaults={"title": "Lobby", "open_to_signed_in": True}
        )
        self.stdout.write(f"room {room.slug}: {'made' if created else 'already there'}")
        model = get_user_model()
        add_room = Permission.objects.get(content_type__app_label="chat", codename="add_room")
        for username in options["usernames"]:
            user = model._default_manager.filter(**{model.USERNAME_FIELD: username}).first()
            if user is not None and not options["password"]:
                self.stdout.write(f"user {username}: already there (password unchanged)")
            else:
                password = options["password"] or secrets.token_urlsafe(9)
                if user is None:
                    user = model._default_manager.create_user(username, password=password)
                    self.stdout.write(f"user {username}: made, password {password}")
                else:
                    user.set_password(password)
                    user.save(update_fields=["password"])
                    self.stdout.write(f"user {username}: password set to {password}")
            user.user_permissions.add(add_room)
        self.stdout.write("sign in at /accounts/login/, then open /chat/?room=lobby")
