"""``manage.py chat_demo``: the lobby and users a new developer signs in with."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

from chat.models import Room


def run(*args: str) -> str:
    out = StringIO()
    call_command("chat_demo", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_it_makes_an_open_lobby_and_users_who_can_sign_in_with_the_printed_password():
    output = run("alice", "bob")

    lobby = Room.objects.get(slug="lobby")
    assert lobby.open_to_signed_in
    assert not lobby.is_direct
    for name in ("alice", "bob"):
        line = next(line for line in output.splitlines() if line.startswith(f"user {name}:"))
        password = line.rsplit(" ", 1)[1]
        user = authenticate(username=name, password=password)
        assert user is not None
        assert user.has_perm("chat.add_room")  # they may make rooms on the page


@pytest.mark.django_db
def test_a_second_run_keeps_passwords_unless_one_is_given():
    run("alice", "--password", "first-pw")
    output = run("alice")
    assert "already there (password unchanged)" in output
    assert authenticate(username="alice", password="first-pw") is not None
    assert Room.objects.filter(slug="lobby").count() == 1

    run("alice", "--password", "second-pw")
    assert authenticate(username="alice", password="second-pw") is not None
    assert get_user_model().objects.filter(username="alice").count() == 1
