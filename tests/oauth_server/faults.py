"""Faults of the token endpoint and test controls (expire tokens, withdraw consent).

``POST /test/control/`` with ``action``: ``fault`` (``mode`` = ok, down, slow, garbage,
error500, invalid_grant), ``expire`` (every access token expires now), ``withdraw``
(``username``: the user withdraws consent: their tokens are deleted, so a refresh gets
invalid_grant), ``stats`` (JSON: tokens issued by grant type). Only for tests.
"""

import base64
import json
import secrets
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
            elif mode == "hostile_invalid_grant":  # NUL, a terminal escape, a lone surrogate
                return JsonResponse(
                    {
                        "error": "invalid_grant",
                        "error_description": "AADSTS50173:\x00\x1b[31m\ud800",
                    },
                    status=400,
                )
            elif mode == "invalid_grant":
                return JsonResponse(
                    {"error": "invalid_grant", "error_description": "AADSTS50173: revoked"},
                    status=400,
                )
        if request.path == "/o/token/" and request.POST.get("grant_type") == JWT_BEARER:
            return jwt_bearer(request)
        return self.get_response(request)


JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: issuer (service account) -> public key PEM; filled by serve.py from the fixtures.
SERVICE_ACCOUNTS = {}


def _refuse(description):
    return JsonResponse({"error": "invalid_grant", "error_description": description}, status=400)


def jwt_bearer(request):
    """RFC 7523 section 2.1, which django-oauth-toolkit lacks: check the assertion's
    signature (the service account's registered public key), audience, expiry and
    subject, then issue an ordinary toolkit access token for the subject's mailbox."""
    from django.contrib.auth.models import User
    from joserfc import jwt
    from joserfc.errors import JoseError
    from joserfc.jwk import RSAKey
    from oauth2_provider.models import Application

    assertion = request.POST.get("assertion", "")
    try:  # the issuer names the key; nothing else is trusted before the signature check
        payload = assertion.split(".")[1]
        issuer = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"]
    except (IndexError, ValueError, KeyError):
        return _refuse("malformed assertion")
    public = SERVICE_ACCOUNTS.get(issuer)
    if public is None:
        return _refuse("unknown service account")
    try:
        token = jwt.decode(assertion, RSAKey.import_key(public), algorithms=["RS256"])
        jwt.JWTClaimsRegistry(
            aud={"essential": True, "value": request.build_absolute_uri("/o/token/")},
            exp={"essential": True},
            sub={"essential": True},
        ).validate(token.claims)
    except (JoseError, ValueError) as exc:
        return _refuse(f"bad assertion: {exc}")
    user = User.objects.filter(username=token.claims["sub"]).first()
    if user is None:
        return _refuse("no such mailbox in the domain")
    application = Application.objects.get(client_id=issuer)
    value = secrets.token_urlsafe(30)
    AccessToken.objects.create(
        user=user,
        application=application,
        token=value,
        expires=timezone.now() + timezone.timedelta(hours=1),
        scope=request.POST.get("scope", ""),
    )
    return JsonResponse(
        {"access_token": value, "token_type": "Bearer", "expires_in": 3600, "scope": "SMTP.Send"}
    )


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
