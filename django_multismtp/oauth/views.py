"""Connect and disconnect an OAuth account: the authorization-code flow with PKCE.

Used by the admin's change page and by "My SMTP settings". The ``state`` parameter is
random, kept in the session with the account, the PKCE verifier and the page to return
to, and used once: a callback whose state this session did not start is refused, so
nobody can attach their mailbox (or a stolen code) to someone else's account. Only the
account's owner, or a user with the global change permission, may connect or disconnect
an account. All token HTTP is Authlib's.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from typing import Any

import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.debug import sensitive_variables
from django.views.decorators.http import require_POST

from .. import clock, ops
from ..models import OAuthConnection, OAuthState, SmtpAccount
from . import tokens

logger = logging.getLogger("django_multismtp.oauth")
SESSION_KEY = "multismtp_oauth_flows"


def may_manage(user: Any, account: SmtpAccount) -> bool:
    """The owner, or someone allowed to change every account."""
    if not (user.is_authenticated and user.is_active):
        return False
    if account.owner_id is not None and account.owner_id == user.pk:
        return True
    return bool(user.has_perm("django_multismtp.change_smtpaccount"))


def _account(request: HttpRequest, pk: int) -> SmtpAccount:
    account = get_object_or_404(SmtpAccount.objects.select_related("oauth"), pk=pk)
    if not may_manage(request.user, account) or not hasattr(account, "oauth"):
        raise Http404  # someone else's account is as absent as a missing one
    return account


def callback_url(request: HttpRequest) -> str:
    """The exact redirect URI to register in the provider's console."""
    return request.build_absolute_uri(reverse("django_multismtp:oauth_callback"))


def _back(request: HttpRequest, account: SmtpAccount) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}):
        return target
    return reverse("django_multismtp:edit", args=[account.pk])


@login_required
@require_POST
def connect(request: HttpRequest, pk: int) -> HttpResponse:
    account = _account(request, pk)
    oauth = account.oauth
    app = tokens.app_for(oauth)
    state = generate_token(32)
    verifier = generate_token(64)
    client = tokens.client_for(
        app, redirect_uri=callback_url(request), code_challenge_method="S256"
    )
    url, _state = client.create_authorization_url(
        app.authorize_url, state=state, code_verifier=verifier, **app.authorize_params
    )
    client.close()
    flows = dict(request.session.get(SESSION_KEY, {}))
    flows[state] = {"account": account.pk, "verifier": verifier, "next": _back(request, account)}
    request.session[SESSION_KEY] = dict(list(flows.items())[-5:])  # a few tabs at most
    return HttpResponseRedirect(url)


@login_required
@sensitive_variables("token", "flow")
def callback(request: HttpRequest) -> HttpResponse:
    state = request.GET.get("state", "")
    flows = dict(request.session.get(SESSION_KEY, {}))
    flow = flows.pop(state, None) if state else None
    request.session[SESSION_KEY] = flows
    if flow is None:
        return HttpResponseBadRequest(
            _(
                "This sign-in was not started from this browser session (or was already "
                "used). Click “Connect” on the account again."
            )
        )
    account = _account(request, int(flow["account"]))
    back = str(flow["next"])
    if request.GET.get("error"):
        messages.error(
            request,
            _("The provider did not connect the account: %(error)s %(description)s")
            % {
                "error": request.GET["error"],
                "description": request.GET.get("error_description", ""),
            },
        )
        return HttpResponseRedirect(back)
    oauth = account.oauth
    app = tokens.app_for(oauth)
    client = tokens.client_for(app, redirect_uri=callback_url(request))
    try:
        token = client.fetch_token(
            app.token_url,
            authorization_response=request.build_absolute_uri(),
            code_verifier=flow["verifier"],
            timeout=tokens.http_timeout(),
        )
    except (OAuthError, requests.RequestException, ValueError) as exc:
        messages.error(request, _("The provider refused the sign-in: %(error)s") % {"error": exc})
        return HttpResponseRedirect(back)
    finally:
        client.close()
    if not token.get("refresh_token"):
        messages.error(
            request,
            _(
                "The provider sent no refresh token, so mail would stop within the hour. "
                "Add the offline_access scope (Microsoft) or access_type=offline (Google)."
            ),
        )
        return HttpResponseRedirect(back)
    _store(oauth, account, dict(token))
    result = ops.test_connection(account)
    if result.ok:
        messages.success(request, _("Connected; the connection test passed."))
    else:
        messages.warning(
            request,
            _("Connected, but the connection test failed: %(detail)s")
            % {"detail": f"{result.reply} {result.hint}".strip()},
        )
    return HttpResponseRedirect(back)


def _store(oauth: OAuthConnection, account: SmtpAccount, token: dict[str, Any]) -> None:
    now = clock.now()
    field = OAuthConnection._meta.get_field
    OAuthConnection.objects.filter(pk=oauth.pk).update(
        refresh_token=field("refresh_token").seal(token["refresh_token"]),  # type: ignore[union-attr]
        access_token=field("access_token").seal(token["access_token"]),  # type: ignore[union-attr]
        access_expires_at=now + dt.timedelta(seconds=float(token.get("expires_in") or 3600)),
        state=OAuthState.CONNECTED,
        refresh_failures=0,
        retry_refresh_at=None,
        last_refresh_error="",
        connected_at=now,
        refreshed_at=now,
        granted_scopes=tokens.granted_scopes(token),
    )
    mailbox = _mailbox_of(token)
    if mailbox and not account.username:
        account.username = mailbox
        account.save(update_fields=["username"])


def _mailbox_of(token: dict[str, Any]) -> str:
    """The signed-in address, from the token response or its ID token's claims.

    Only used to fill an empty user name the person sees right away and can correct;
    the claims' signature is not what protects anything here.
    """
    if token.get("email"):
        return str(token["email"])
    id_token = str(token.get("id_token") or "")
    parts = id_token.split(".")
    if len(parts) == 3:
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        except ValueError:
            return ""
        return str(claims.get("email") or claims.get("preferred_username") or "")
    return ""


@login_required
@require_POST
def disconnect(request: HttpRequest, pk: int) -> HttpResponse:
    account = _account(request, pk)
    oauth = account.oauth
    app = tokens.app_for(oauth)
    refresh = OAuthConnection._meta.get_field("refresh_token").reveal(oauth.refresh_token)
    if app.revoke_url and isinstance(refresh, str) and refresh:
        client = tokens.client_for(app)
        try:
            client.revoke_token(
                app.revoke_url,
                token=refresh,
                token_type_hint="refresh_token",  # noqa: S106
                timeout=tokens.http_timeout(),
            )
        except (OAuthError, requests.RequestException, ValueError) as exc:
            messages.warning(
                request,
                _("The provider did not confirm the revocation (%(error)s); tokens forgotten.")
                % {"error": exc},
            )
        finally:
            client.close()
    OAuthConnection.objects.filter(pk=oauth.pk).update(
        refresh_token="",
        access_token="",
        access_expires_at=None,
        state=OAuthState.DISCONNECTED,
        connected_at=None,
    )
    messages.success(request, _("Disconnected; the tokens are forgotten."))
    return HttpResponseRedirect(_back(request, account))
