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

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from chat import calls, ice, services
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


def _room_data(room: Room, user: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "slug": room.slug,
        "title": str(room),
        "topic": room.topic,
        "open": room.open_to_signed_in,
        "direct": room.is_direct,
    }
    if room.is_direct:
        partner = services.direct_partner(room, user)
        data["with"] = None if partner is None else user_data(partner)
    return data


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit() or len(value) > 18:
        raise services.InvalidMessage(f"{name} must be a positive integer")
    return int(value)


@require_GET
@_api
def rooms(request: HttpRequest) -> JsonResponse:
    """``GET /chat/api/rooms``: the rooms the user may read, direct ones included."""
    found = services.readable_rooms(request.user).prefetch_related("members")
    return JsonResponse({"rooms": [_room_data(room, request.user) for room in found]})


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
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        raise services.InvalidMessage('body must be JSON: {"text": ...}') from None
    if not isinstance(body, dict):
        raise services.InvalidMessage('body must be a JSON object: {"text": ...}')
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
    """``POST /chat/api/direct/<user id>``: the direct conversation with that user."""
    other = services.user_by_id(user_id)
    if other is None:
        raise services.NotAllowed("no such user")
    room = services.direct_room(request.user, other)
    return JsonResponse({"room": _room_data(room, request.user)})
