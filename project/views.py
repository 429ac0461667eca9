"""A health check. (The page at ``/`` is ``dashboard.views.index``.)"""

from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for load balancers and for the test harness."""
    return JsonResponse({"ok": True})
