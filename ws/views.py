"""HTTP side of the transport: tokens for clients that cannot send cookies, metrics."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_POST

from ws.conf import push_settings
from ws.metrics import render_prometheus
from ws.tokens import issue_token


@require_POST
def token(request: HttpRequest) -> JsonResponse:
    """``POST /ws/token``: a socket token for the signed-in user (CSRF-protected)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "sign in first"}, status=401)
    return JsonResponse(
        {"token": issue_token(request.user), "expires_in": push_settings.PUSH_TOKEN_MAX_AGE_S}
    )


def metrics(request: HttpRequest) -> HttpResponse:
    """``GET /ws/metrics``: this process's counters, as Prometheus text."""
    return HttpResponse(render_prometheus(), content_type="text/plain; version=0.0.4")
