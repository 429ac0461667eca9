"""The chat page: rooms, messages, who is here and who is typing, and voice calls, over push.js."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from chat.models import user_data
from chat.rooms import OPEN_ROOMS_TOPIC


@login_required
def index(request: HttpRequest) -> HttpResponse:
    """``/chat/``: everything on it comes from the JSON endpoints and the ``chat.<room>`` topics."""
    user = request.user
    config = {
        "user": user_data(user),
        "roomsUrl": reverse("chat:rooms"),
        "messagesUrl": reverse("chat:messages", args=["ROOM"]),
        "callUrl": reverse("chat:call", args=["ROOM"]),
        "readUrl": reverse("chat:read", args=["ROOM"]),
        "leaveUrl": reverse("chat:leave", args=["ROOM"]),
        "ringUrl": reverse("chat:ring", args=["ROOM"]),
        "peopleUrl": reverse("chat:people"),
        "directUrl": reverse("chat:direct", args=[0]).removesuffix("0"),
        "callsUrl": reverse("chat:calls"),
        "openRoomsTopic": OPEN_ROOMS_TOPIC,
        "canAddRoom": user.has_perm("chat.add_room"),
        "iceServersUrl": reverse("chat:ice-servers"),
        "ringTimeoutS": settings.CALL_RING_TIMEOUT_S,
        "iceTransportPolicy": settings.CALL_ICE_TRANSPORT_POLICY,
        "peerGiveUpS": settings.CALL_PEER_GIVE_UP_S,
    }
    return render(request, "chat/index.html", {"page_config": config})
