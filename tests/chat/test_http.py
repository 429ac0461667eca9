"""``/chat/api/``: rooms, history pages, sending and direct conversations over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from chat import services
from tests.chat.rooms import make_room, pushed

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(user: Any, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def post_json(client: Client, url: str, body: Any, **headers: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json", **headers)


def test_my_rooms_are_the_open_ones_mine_and_my_direct_conversations(alice, bob, carol):
    make_room("http-open", open_to_signed_in=True)
    make_room("http-mine", alice)
    make_room("http-theirs", bob)
    services.direct_room(alice, bob)

    answer = signed_in(alice).get("/chat/api/rooms").json()
    slugs = {room["slug"]: room for room in answer["rooms"]}
    direct = f"dm-{min(alice.pk, bob.pk)}-{max(alice.pk, bob.pk)}"
    assert set(slugs) == {"http-open", "http-mine", direct}
    assert slugs[direct]["with"] == {"id": bob.pk, "name": "bob"}
    assert slugs["http-mine"]["topic"] == "chat.http-mine"
    assert {room["slug"] for room in signed_in(carol).get("/chat/api/rooms").json()["rooms"]} == {
        "http-open"
    }
    assert Client().get("/chat/api/rooms").status_code == 401


def test_history_pages_back_with_before(alice):
    room = make_room("http-history", alice)
    for n in range(5):
        services.send_message(alice, room, f"m{n}")
    client = signed_in(alice)

    first = client.get("/chat/api/rooms/http-history/messages?limit=2").json()
    assert [m["text"] for m in first["messages"]] == ["m3", "m4"]
    second = client.get(f"/chat/api/rooms/http-history/messages?limit=2&before={first['before']}")
    assert [m["text"] for m in second.json()["messages"]] == ["m1", "m2"]
    last = client.get(
        f"/chat/api/rooms/http-history/messages?before={second.json()['before']}"
    ).json()
    assert [m["text"] for m in last["messages"]] == ["m0"]
    assert last["before"] is None  # nothing older
    assert last["messages"][0]["author"] == {"id": alice.pk, "name": "alice"}
    bad = client.get("/chat/api/rooms/http-history/messages?limit=lots")
    assert bad.status_code == 400


def test_posting_stores_pushes_and_answers_the_seq(alice):
    make_room("http-post", alice)
    response = post_json(signed_in(alice), "/chat/api/rooms/http-post/messages", {"text": "hi"})

    assert response.status_code == 201
    body = response.json()
    assert body["message"]["text"] == "hi"
    assert pushed("chat.http-post") == [(body["seq"], body["message"])]


@pytest.mark.parametrize(
    ("who", "body", "status", "code"),
    [
        ("bob", {"text": "let me in"}, 403, 4003),
        ("alice", {"text": "   "}, 400, 4400),
        ("alice", {"text": "x" * 2001}, 400, 4400),
        ("alice", ["not", "an", "object"], 400, 4400),
    ],
    ids=["non-member", "empty", "too long", "not an object"],
)
def test_refused_posts_answer_json_errors_and_store_nothing(alice, bob, who, body, status, code):
    room = make_room("http-refused", alice)
    user = {"alice": alice, "bob": bob}[who]
    response = post_json(signed_in(user), "/chat/api/rooms/http-refused/messages", body)

    assert response.status_code == status
    assert response.json()["code"] == code
    assert not room.messages.exists()
    assert pushed("chat.http-refused") == []


def test_a_room_that_does_not_exist_looks_like_one_you_may_not_read(alice):
    response = post_json(signed_in(alice), "/chat/api/rooms/http-nowhere/messages", {"text": "?"})
    assert response.status_code == 403
    assert signed_in(alice).get("/chat/api/rooms/http-nowhere/messages").status_code == 403


def test_over_the_rate_limit_is_429_with_retry_after(alice, settings):
    settings.CHAT_RATE_MESSAGES = 1
    settings.CHAT_RATE_WINDOW_S = 600
    make_room("http-rate", alice)
    client = signed_in(alice)
    assert post_json(client, "/chat/api/rooms/http-rate/messages", {"text": "1"}).status_code == 201

    refused = post_json(client, "/chat/api/rooms/http-rate/messages", {"text": "2"})
    assert refused.status_code == 429
    assert refused.json()["code"] == 4429
    assert 1 <= int(refused["Retry-After"]) <= 600


def test_session_posts_need_the_csrf_token(alice):
    make_room("http-csrf", alice)
    client = signed_in(alice, csrf=True)
    url = "/chat/api/rooms/http-csrf/messages"
    assert post_json(client, url, {"text": "no token"}).status_code == 403

    client.get("/admin/login/")  # any page that hands out the token cookie
    token = client.cookies["csrftoken"].value
    assert post_json(client, url, {"text": "with token"}, HTTP_X_CSRFTOKEN=token).status_code == 201
    assert [data["text"] for _, data in pushed("chat.http-csrf")] == ["with token"]


def test_a_direct_conversation_is_found_or_made_and_hidden_from_others(alice, bob, carol):
    made = signed_in(alice).post(f"/chat/api/direct/{bob.pk}").json()["room"]
    found = signed_in(bob).post(f"/chat/api/direct/{alice.pk}").json()["room"]
    assert made["slug"] == found["slug"]
    assert made["direct"] is True
    assert found["with"] == {"id": alice.pk, "name": "alice"}

    url = f"/chat/api/rooms/{made['slug']}/messages"
    assert post_json(signed_in(bob), url, {"text": "psst"}).status_code == 201
    assert signed_in(carol).get(url).status_code == 403
    assert post_json(signed_in(carol), url, {"text": "me too"}).status_code == 403
    assert signed_in(alice).post(f"/chat/api/direct/{alice.pk}").status_code == 400
    assert signed_in(alice).post("/chat/api/direct/999999").status_code == 403


def test_the_admin_shows_a_calls_participants_reconnecting_and_its_lost_links(
    admin_client, alice, bob
):
    from chat import calls

    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.participant_gone(room.slug, bob.pk)
    calls.report_lost(alice, room, bob.pk)
    call_id = calls.current_state(alice, room)["call"]

    page = admin_client.get(f"/admin/chat/call/{call_id}/change/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Reconnecting since" in html
    assert f"[[{min(alice.pk, bob.pk)}, {max(alice.pk, bob.pk)}]]" in html  # read-only
    assert 'name="lost_links"' not in html
