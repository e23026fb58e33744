"""Faults of the token endpoint and test controls (expire tokens, withdraw consent).

``POST /test/control/`` with ``action``: ``fault`` (``mode`` = ok, down, slow, garbage,
error500, invalid_grant), ``expire`` (every access token expires now), ``withdraw``
(``username``: the user withdraws consent: their tokens are deleted, so a refresh gets
invalid_grant), ``stats`` (JSON: tokens issued by grant type). Only for tests.
"""

import time

from django.http import HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.models import AccessToken, Grant, RefreshToken

FAULT = {"mode": "ok", "token_requests": 0}


class TokenEndpointFaults:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == "/o/token/":
            FAULT["token_requests"] += 1
            mode = FAULT["mode"]
            if mode == "slow":
                time.sleep(2)
            elif mode == "garbage":
                return HttpResponse(b"<html>proxy error", status=200, content_type="text/html")
            elif mode == "error500":
                return HttpResponse(b"upstream unavailable", status=503)
            elif mode == "invalid_grant":
                return JsonResponse(
                    {"error": "invalid_grant", "error_description": "AADSTS50173: revoked"},
                    status=400,
                )
        return self.get_response(request)


@csrf_exempt
def control(request):
    action = request.POST.get("action")
    if action == "fault":
        FAULT["mode"] = request.POST["mode"]
    elif action == "expire":
        AccessToken.objects.update(expires=timezone.now() - timezone.timedelta(seconds=1))
    elif action == "withdraw":
        username = request.POST["username"]
        RefreshToken.objects.filter(user__username=username).delete()
        AccessToken.objects.filter(user__username=username).delete()
        Grant.objects.filter(user__username=username).delete()
    return JsonResponse(
        {
            "token_requests": FAULT["token_requests"],
            "access_tokens": AccessToken.objects.count(),
            "mode": FAULT["mode"],
        }
    )
