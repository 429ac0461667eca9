"""The live dashboard page: it only subscribes to the dashboards' topics and renders."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def index(request: HttpRequest) -> HttpResponse:
    """The dashboard page at ``/``.

    The server pushes everything it shows; the page is the same for everyone
    but for a signed-in user's private topic ``user.<pk>``, where broadcasts
    meant for that user alone arrive.
    """
    user = request.user
    config = {"user": user.pk if user.is_authenticated else None}
    return render(request, "dashboard/index.html", {"page_config": config})
