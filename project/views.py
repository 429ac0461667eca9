"""The landing page and a health check."""

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """What runs here, with the live clock pushed by beat."""
    return render(request, "home.html", {"clock_room": settings.PUSH_CLOCK_SEED_ROOM})


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and for the test harness."""
    return JsonResponse({"ok": True})
