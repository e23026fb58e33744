"""Access tokens: cached in the database, refreshed once at a time, health kept in state.

Every process sending through an account shares one row
(:class:`~django_multismtp.models.OAuthConnection`): the access token is cached there,
encrypted, until :data:`REFRESH_MARGIN` before it expires. A refresh is claimed with a
conditional update of ``refreshing_until`` (a lease), so two processes never spend the
same rotating refresh token: the loser waits for the winner's token instead.

Outcomes of a refresh:

- a token: stored, failures reset;
- ``invalid_grant`` (or a client the provider no longer accepts): the account goes to
  :attr:`~OAuthState.NEEDS_RECONNECT`; only a person connecting again fixes it, so it is
  skipped like a paused account and its owner and the admins are told;
- anything else (network, timeout, 5xx, a body that is not a token): temporary, tried
  again after a back-off that doubles up to an hour.

All token HTTP is Authlib's; no request is written here by hand.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from typing import Any

import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import AssertionSession, OAuth2Session
from authlib.oauth2.base import OAuth2Error
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Q
from joserfc.jwk import RSAKey

from .. import clock, conf
from ..models import OAuthConnection, OAuthState, SmtpAccount
from ..models.oauth import OAuthFlow
from ..safetext import safe_text
from ..signals import oauth_needs_reconnect
from ..transport import TokenProvider, TokenUnavailable
from . import hints, providers

#: How long a process may hold the refresh of one account.
REFRESH_LEASE = dt.timedelta(seconds=60)
#: Errors of the token endpoint after which only reconnecting helps.
PERMANENT_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client"})
BACKOFF_FIRST = dt.timedelta(minutes=1)
BACKOFF_MAX = dt.timedelta(hours=1)


def app_for(oauth: OAuthConnection) -> providers.App:
    secret = OAuthConnection._meta.get_field("client_secret").reveal(oauth.client_secret)
    return providers.resolve(
        oauth.provider,
        flow=oauth.flow,
        client_id=oauth.client_id,
        client_secret=secret if isinstance(secret, str) else "",
        tenant=oauth.tenant,
        authorize_url=oauth.authorize_url,
        token_url=oauth.token_url,
        revoke_url=oauth.revoke_url,
        scopes=oauth.scopes,
    )


def client_for(app: providers.App, **kwargs: Any) -> OAuth2Session:
    return OAuth2Session(
        app.client_id,
        app.client_secret,
        scope=app.scopes,
        token_endpoint_auth_method=app.token_auth_method,
        **kwargs,
    )


def http_timeout() -> float:
    return float(conf.get_setting("OAUTH_HTTP_TIMEOUT"))


def request_token(oauth: OAuthConnection) -> dict[str, Any]:
    """Ask the token endpoint for a new access token (refresh or app-only grant)."""
    app = app_for(oauth)
    client = client_for(app)
    try:
        if oauth.flow == OAuthFlow.AUTHORIZATION_CODE:
            refresh = OAuthConnection._meta.get_field("refresh_token").reveal(oauth.refresh_token)
            if not isinstance(refresh, str) or not refresh:
                raise OAuthError(error="invalid_grant", description="no refresh token stored")
            token = client.refresh_token(
                app.token_url, refresh_token=refresh, timeout=http_timeout()
            )
        elif oauth.flow == OAuthFlow.JWT_BEARER:
            token = _jwt_bearer_token(oauth, app)
        else:
            token = client.fetch_token(
                app.token_url, grant_type="client_credentials", timeout=http_timeout()
            )
    finally:
        client.close()
    if not isinstance(token, dict) or not token.get("access_token"):
        raise ValueError("the token endpoint answered without an access token")
    return dict(token)


def _jwt_bearer_token(oauth: OAuthConnection, app: providers.App) -> Any:
    """RFC 7523 JWT-bearer grant (a Google Workspace service account with domain-wide
    delegation): an assertion signed with the service account's key, whose subject is
    the mailbox. The key is the account's client secret (or the site's ``private_key``);
    the client id is the service account's e-mail address (the issuer)."""
    try:
        key = RSAKey.import_key(app.private_key or app.client_secret)
    except (ValueError, TypeError) as exc:
        raise OAuthError(
            error="invalid_client", description="the service account key is not an RSA key"
        ) from exc
    session = AssertionSession(
        token_endpoint=app.token_url,
        issuer=app.client_id,
        subject=oauth.account.username,
        audience=app.token_url,
        grant_type=AssertionSession.JWT_BEARER_GRANT_TYPE,
        scope=app.scopes,
        key=key,
        header={"alg": "RS256"},
        default_timeout=http_timeout(),
    )
    try:
        return session.refresh_token()
    except OAuth2Error as exc:  # AssertionSession's error class: make it ours
        raise OAuthError(error=exc.error, description=exc.description) from exc
    finally:
        session.close()


def token_provider(account: SmtpAccount) -> TokenProvider:
    """The callable the transport asks for a token (``force`` after a refused one)."""
    return functools.partial(access_token, account.pk)


def access_token(account_pk: int, force: bool = False) -> str:
    """A current access token for the account; may block on the token endpoint.

    Runs in a worker thread of the SMTP loop: it uses that thread's own database
    connection, closed again when done.
    """
    try:
        return _access_token(account_pk, force)
    except DatabaseError as exc:
        # The token state could not be read or written (a locked SQLite file, a lost
        # connection): temporary, and said as such rather than crashing the send.
        raise TokenUnavailable(
            f"the OAuth token state could not be read: {exc}", hints.ENDPOINT_DOWN, permanent=False
        ) from exc
    finally:
        if threading.current_thread() is not threading.main_thread():
            connection.close()
        else:
            close_old_connections()


def _field(name: str) -> Any:
    return OAuthConnection._meta.get_field(name)


def _cached(oauth: OAuthConnection, now: dt.datetime) -> str | None:
    token = _field("access_token").reveal(oauth.access_token)
    margin = conf.get_timedelta("OAUTH_REFRESH_MARGIN")
    if isinstance(token, str) and token and oauth.access_expires_at:
        if oauth.access_expires_at - margin > now:
            return token
    return None


def _access_token(account_pk: int, force: bool) -> str:
    deadline = time.monotonic() + REFRESH_LEASE.total_seconds()
    while True:
        now = clock.now()
        oauth = OAuthConnection.objects.filter(account_id=account_pk).first()
        if oauth is None or oauth.state == OAuthState.DISCONNECTED:
            raise TokenUnavailable(
                "the account is not connected to its OAuth provider",
                hints.NOT_CONNECTED,
                permanent=True,
            )
        if oauth.state == OAuthState.NEEDS_RECONNECT:
            raise TokenUnavailable(
                f"the account needs reconnecting: {oauth.last_refresh_error}",
                hints.for_token_error(oauth.provider, oauth.last_refresh_error),
                permanent=True,
            )
        cached = _cached(oauth, now)
        if cached is not None and not force:
            return cached
        stale = cached if force else None
        if not force and oauth.retry_refresh_at and oauth.retry_refresh_at > now:
            raise TokenUnavailable(
                f"the token endpoint failed; next try at {oauth.retry_refresh_at:%H:%M:%S}: "
                f"{oauth.last_refresh_error}",
                hints.for_token_error(oauth.provider, oauth.last_refresh_error),
                permanent=False,
            )
        claimed = (
            OAuthConnection.objects.filter(pk=oauth.pk)
            .filter(Q(refreshing_until__isnull=True) | Q(refreshing_until__lte=now))
            .update(refreshing_until=now + REFRESH_LEASE)
        )
        if claimed:
            return _refresh(oauth, now, stale=stale)
        # Another process is refreshing: its token will do for us too.
        if time.monotonic() > deadline:
            raise TokenUnavailable(
                "another process has held the token refresh for too long",
                hints.ENDPOINT_DOWN,
                permanent=False,
            )
        force = False
        time.sleep(0.05)


def granted_scopes(token: dict[str, Any]) -> str:
    """The token response's ``scope`` as stored: space-separated, safe text (the
    provider is a server nobody vouches for), at most 500 characters (Authlib gives a
    list for some providers, the RFC a string)."""
    scope = token.get("scope") or ""
    if isinstance(scope, list | tuple):
        scope = " ".join(map(str, scope))
    return safe_text(" ".join(str(scope).split()), 500)


def _refresh(oauth: OAuthConnection, now: dt.datetime, stale: str | None) -> str:
    """Refresh under the lease this process claimed, and release it.

    The new token is stored in the same UPDATE that releases the lease: released first,
    a waiting process would find neither a lease nor a token and refresh again (spending
    a rotating refresh token twice). On failure the state is written before release.
    """
    try:
        token = _request_under_lease(oauth, now, stale)
    except BaseException:
        OAuthConnection.objects.filter(pk=oauth.pk).update(refreshing_until=None)
        raise
    if isinstance(token, str):  # another process's fresh token
        OAuthConnection.objects.filter(pk=oauth.pk).update(refreshing_until=None)
        return token
    expires_in = token.get("expires_in")
    expires_at = now + dt.timedelta(seconds=float(expires_in or 3600))
    update: dict[str, Any] = {
        "access_token": _field("access_token").seal(token["access_token"]),
        "access_expires_at": expires_at,
        "refresh_failures": 0,
        "retry_refresh_at": None,
        "last_refresh_error": "",
        "state": OAuthState.CONNECTED,
        "refreshing_until": None,
        "refreshed_at": now,
    }
    if token.get("scope"):
        update["granted_scopes"] = granted_scopes(token)
    if token.get("refresh_token"):  # rotated (Microsoft, Google sometimes)
        update["refresh_token"] = _field("refresh_token").seal(token["refresh_token"])
    # Conditional: a disconnect meanwhile wins over this refresh.
    stored = (
        OAuthConnection.objects.filter(pk=oauth.pk)
        .exclude(state=OAuthState.DISCONNECTED)
        .update(**update)
    )
    if not stored:
        OAuthConnection.objects.filter(pk=oauth.pk).update(refreshing_until=None)
    return str(token["access_token"])


def _request_under_lease(
    oauth: OAuthConnection, now: dt.datetime, stale: str | None
) -> dict[str, Any] | str:
    """The token endpoint's answer, or a token another process stored meanwhile; a
    failure is recorded on the row and raised as :class:`TokenUnavailable`."""
    oauth.refresh_from_db()
    # Another process may have stored a token between our read and our claim (its
    # lease released with it): use that one, unless it is the token that was refused.
    current = _cached(oauth, now)
    if current is not None and current != stale:
        return current
    try:
        return request_token(oauth)
    except OAuthError as exc:
        description = f"{exc.error}: {exc.description or ''}".strip(": ")
        if exc.error in PERMANENT_ERRORS:
            _needs_reconnect(oauth, description)
            raise TokenUnavailable(
                f"the provider refused the refresh token ({description})",
                hints.for_token_error(oauth.provider, description),
                permanent=True,
            ) from exc
        raise _temporary(oauth, now, description) from exc
    except (requests.RequestException, ValueError, OSError) as exc:
        raise _temporary(oauth, now, f"{type(exc).__name__}: {exc}") from exc


def _temporary(oauth: OAuthConnection, now: dt.datetime, description: str) -> TokenUnavailable:
    failures = oauth.refresh_failures + 1
    delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
    OAuthConnection.objects.filter(pk=oauth.pk).update(
        refresh_failures=failures,
        retry_refresh_at=now + delay,
        last_refresh_error=description[:2000],
    )
    return TokenUnavailable(
        f"the token endpoint failed ({description}); "
        f"trying again in {int(delay.total_seconds())} s",
        hints.for_token_error(oauth.provider, description),
        permanent=False,
    )


def _needs_reconnect(oauth: OAuthConnection, description: str) -> None:
    changed = (
        OAuthConnection.objects.filter(pk=oauth.pk)
        .exclude(state=OAuthState.NEEDS_RECONNECT)
        .update(
            state=OAuthState.NEEDS_RECONNECT,
            access_token="",
            access_expires_at=None,
            last_refresh_error=description[:2000],
        )
    )
    if changed:  # told once, by the process that saw it first
        account = SmtpAccount.objects.get(pk=oauth.account_id)
        oauth_needs_reconnect.send(
            sender=SmtpAccount,
            account=account,
            error=description,
            hint=hints.for_token_error(oauth.provider, description),
        )
