"""``/chat/api/``: JSON endpoints for rooms, history and sending, with session auth.

POSTs need Django's CSRF token (``X-CSRFToken`` header), as any session POST.
Refusals answer ``{"error": ..., "code": ...}`` with the status of the
service's ``ChatError`` (403, 400, 429 with ``Retry-After``); a room that does
not exist is answered as one the user may not read (403), so room names do
not leak.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import calls, ice, people, rooms, services, unread
from chat.models import Room, user_data

View = Callable[..., JsonResponse]


def _error(error: services.ChatError) -> JsonResponse:
    response = JsonResponse({"error": str(error), "code": int(error.code)}, status=error.status)
    if isinstance(error, services.RateLimited):
        response["Retry-After"] = str(max(1, math.ceil(error.retry_after_s)))
    return response


def _api(view: View) -> View:
    """Signed-in users only (401 otherwise); ``ChatError`` becomes its JSON answer."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not (request.user.is_authenticated and request.user.is_active):
            return JsonResponse({"error": "sign in first"}, status=401)
        try:
            return view(request, *args, **kwargs)
        except services.ChatError as error:
            return _error(error)

    return wrapper


def _room(user: Any, slug: str) -> Room:
    room = Room.objects.filter(slug=slug).first()
    if room is None or not services.can_read(user, room):
        raise services.NotAllowed("no such room, or not a member")
    return room


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise services.InvalidMessage(f"{name} must be a positive integer")
    return int(value)


def _json_body(request: HttpRequest, shape: str) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise services.InvalidMessage(f"body must be JSON: {shape}") from None
    if not isinstance(body, dict):
        raise services.InvalidMessage(f"body must be a JSON object: {shape}")
    return body


@require_http_methods(["GET", "POST"])
@_api
def room_list(request: HttpRequest) -> JsonResponse:
    """``GET``: the rooms the user may read (direct ones included), with unread counts;
    ``POST {"title", "open", "members"}``: make a room (``chat.add_room``)."""
    if request.method == "GET":
        return JsonResponse({"rooms": rooms.listed_rooms(request.user)})
    body = _json_body(request, '{"title": ..., "open": false, "members": [user ids]}')
    room = rooms.create_room(request.user, body.get("title"), body.get("open"), body.get("members"))
    return JsonResponse({"room": rooms.room_data(room, request.user)}, status=201)


@require_POST
@_api
def leave(request: HttpRequest, slug: str) -> JsonResponse:
    """``POST /chat/api/rooms/<slug>/leave``: stop being a member (not of a direct room)."""
    room = _room(request.user, slug)
    rooms.leave_room(request.user, room)
    return JsonResponse({"left": room.slug})


@require_POST
@_api
def read(request: HttpRequest, slug: str) -> JsonResponse:
    """``POST /chat/api/rooms/<slug>/read {"last_read": <message id>}``: mark it read."""
    room = _room(request.user, slug)
    body = _json_body(request, '{"last_read": <message id>}')
    return JsonResponse(unread.mark_read(request.user, room, body.get("last_read")))


@require_POST
@_api
def ring(request: HttpRequest, slug: str) -> JsonResponse:
    """``POST /chat/api/rooms/<slug>/ring {"ring": true}``: calls in this open room ring me."""
    room = _room(request.user, slug)
    body = _json_body(request, '{"ring": true | false}')
    return JsonResponse({"room": rooms.set_ring(request.user, room, body.get("ring"))})


@require_GET
@_api
def people_search(request: HttpRequest) -> JsonResponse:
    """``GET /chat/api/people?q=<name>&limit=<n>``: people the user may contact, by name."""
    query = request.GET.get("q", "").strip()
    if len(query) > people.MAX_QUERY_CHARS:
        raise services.InvalidMessage(f"q is longer than {people.MAX_QUERY_CHARS} characters")
    limit = _int_param(request, "limit")
    limit = 20 if limit is None else limit
    if not 1 <= limit <= settings.CHAT_PEOPLE_PAGE_MAX:
        raise services.InvalidMessage(f"limit must be 1 to {settings.CHAT_PEOPLE_PAGE_MAX}")
    found = people.search(request.user, query, limit)
    return JsonResponse({"people": [user_data(person) for person in found]})


@require_GET
@_api
def call_list(request: HttpRequest) -> JsonResponse:
    """``GET /chat/api/calls?missed=1``: calls that rang the user and nobody answered;
    ``?ringing=1``: the calls ringing them now."""
    if request.GET.get("missed") == "1":
        return JsonResponse({"calls": calls.missed_calls(request.user)})
    if request.GET.get("ringing") == "1":
        return JsonResponse({"calls": calls.ringing_calls(request.user)})
    raise services.InvalidMessage("ask for ?missed=1 or ?ringing=1")


@require_http_methods(["GET", "POST"])
@_api
def messages(request: HttpRequest, slug: str) -> JsonResponse:
    """``GET``: a page of history (``?before=<id>&limit=<n>``); ``POST {"text": ...}``: send."""
    room = _room(request.user, slug)
    if request.method == "POST":
        return _send(request, room)
    page = services.history(
        request.user, room, before=_int_param(request, "before"), limit=_int_param(request, "limit")
    )
    return JsonResponse(
        {
            "room": room.slug,
            "messages": [message.as_data() for message in page],
            # Ask for the next page with ?before=<this>; null: nothing older.
            "before": page[0].pk
            if page and room.messages.filter(id__lt=page[0].pk).exists()
            else None,
        }
    )


def _send(request: HttpRequest, room: Room) -> JsonResponse:
    body = _json_body(request, '{"text": ...}')
    message = services.send_message(request.user, room, body.get("text"))
    return JsonResponse({"message": message.as_data(), "seq": message.seq}, status=201)


@require_GET
@_api
def call(request: HttpRequest, slug: str) -> JsonResponse:
    """``GET /chat/api/rooms/<slug>/call``: the room's live call, as a state message, or null."""
    room = _room(request.user, slug)
    return JsonResponse({"call": calls.current_state(request.user, room)})


@require_GET
@_api
def ice_servers(request: HttpRequest) -> JsonResponse:
    """``GET /chat/api/calls/ice-servers``: STUN and TURN (fresh credentials) for a call."""
    response = JsonResponse(ice.ice_servers(request.user))
    response["Cache-Control"] = "no-store"  # credentials: never from a cache
    return response


@require_POST
@_api
def direct(request: HttpRequest, user_id: int) -> JsonResponse:
    """``POST /chat/api/direct/<user id>``: the direct conversation with that user (one the
    user may contact), made the first time."""
    room = rooms.open_direct(request.user, user_id)
    return JsonResponse({"room": rooms.room_data(room, request.user)})
