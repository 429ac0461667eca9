"""The chat page as the README shows it: a room list with unread counts, a conversation,
and a three-person call with one peer muted and one speaking.

It checks what the picture shows and writes it to the test's folder; with
``CHAT_SCREENSHOT=<path>`` (``make screenshot``) also there, which is how
``docs/chat-page.png`` is made.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import in_plain_thread, media_browsers  # noqa: F401
from tests.support.call_pages import WAIT_MS, call_page, connect_three
from tests.support.users import make_user
from tests.support.voices import voice_files  # noqa: F401

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.media]

VIEWPORT = {"width": 1280, "height": 760}


def furnish(alice: Any, bob: Any, carol: Any) -> str:
    """The rooms Alice sees: a team room with a conversation, a direct one, one unread."""
    from django.utils import timezone

    from chat.models import Message, Room
    from chat.services import direct_room

    team = Room.objects.create(slug="release", title="Release 2.4")
    team.members.add(alice, bob, carol)
    now = timezone.now()
    lines = [
        (bob, "The build for 2.4 is green on every platform."),
        (carol, "Translations are in; two strings are still waiting for review."),
        (alice, "Good. Shall we go through the checklist on a call?"),
        (bob, "Yes, calling in now."),
    ]
    for minutes_ago, (author, text) in zip(range(len(lines) * 3, 0, -3), lines, strict=True):
        Message.objects.create(
            room=team, author=author, text=text, created_at=now - timedelta(minutes=minutes_ago)
        )
    ops = Room.objects.create(slug="ops", title="Ops")
    ops.members.add(alice, bob)
    for text in ("Disk on db-2 at 81%", "Cleared old WAL files: 64% now"):
        Message.objects.create(room=ops, author=bob, text=text)
    direct_room(alice, carol)
    Room.objects.create(slug="lobby", title="Lobby", open_to_signed_in=True)
    return team.slug


def test_the_readme_screenshot_shows_unread_counts_a_muted_and_a_speaking_peer(
    daphne_server,
    media_browsers,  # noqa: F811
    voice_files,  # noqa: F811
    tmp_path: Path,
):
    speech, silence = voice_files
    alice, bob, carol = (in_plain_thread(make_user, name) for name in ("alice", "bob", "carol"))
    slug = in_plain_thread(furnish, alice, bob, carol)
    alice_page, alice_errors = call_page(
        media_browsers(silence), daphne_server, alice, slug, viewport=VIEWPORT
    )
    bob_page, bob_errors = call_page(media_browsers(silence), daphne_server, bob, slug)
    carol_page, carol_errors = call_page(media_browsers(speech), daphne_server, carol, slug)

    connect_three(bob_page, carol_page, alice_page)
    bob_page.click("#call-mute")
    alice_page.wait_for_selector(
        f"#call-peers li[data-id='{bob.pk}'][data-muted='true']", timeout=WAIT_MS
    )
    alice_page.fill("#people-q", "c")
    alice_page.wait_for_selector("#people[data-q='c'] li", timeout=WAIT_MS)
    alice_page.wait_for_selector(
        f"#call-peers li[data-id='{carol.pk}'][data-speaking='true']", timeout=WAIT_MS
    )

    # She joined the group call from the panel: its ring is gone from her page.
    alice_page.wait_for_selector("#ring", state="hidden", timeout=WAIT_MS)
    assert alice_page.get_attribute("#rooms li[data-slug='ops']", "data-unread") == "2"
    assert alice_page.locator("#messages li time").count() == 4
    assert alice_page.get_attribute(f"#call-peers li[data-id='{bob.pk}']", "data-speaking") != (
        "true"
    )
    shot = tmp_path / "chat-page.png"
    alice_page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    wanted = os.environ.get("CHAT_SCREENSHOT")
    if wanted:
        Path(wanted).write_bytes(shot.read_bytes())
    assert alice_errors == bob_errors == carol_errors == []
