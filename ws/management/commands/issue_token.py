"""``python manage.py issue_token USERNAME``: a socket token for a non-browser client."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ws.conf import push_settings
from ws.tokens import issue_token


class Command(BaseCommand):
    help = "Print a short-lived socket token for USERNAME (send it as ?token= or an auth frame)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        user = model._default_manager.filter(**{model.USERNAME_FIELD: options["username"]}).first()
        if user is None or not user.is_active:
            raise CommandError(f"no active user {options['username']!r}")
        self.stdout.write(issue_token(user))
        self.stderr.write(f"valid for {push_settings.PUSH_TOKEN_MAX_AGE_S} s")
