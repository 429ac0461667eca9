"""HTTP side of the transport: tokens for clients that cannot send cookies."""

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_POST

from ws.tokens import issue_token


@require_POST
def token(request: HttpRequest) -> JsonResponse:
    """``POST /ws/token``: a socket token for the signed-in user (CSRF-protected)."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "sign in first"}, status=401)
    return JsonResponse(
        {"token": issue_token(request.user), "expires_in": settings.PUSH_TOKEN_MAX_AGE_S}
    )
