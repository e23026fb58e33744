"""XOAUTH2/OAUTHBEARER through a real authorization server and a bearer-checking SMTP server.

The authorization server is django-oauth-toolkit in its own process
(``tests/oauth_authserver.py``); the SMTP server asks its introspection endpoint about
every bearer token, so an expired, revoked or foreign token is refused as Microsoft and
Google refuse it. Our side's time is the injected clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import django
import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from django_multismtp import ops
from django_multismtp.models import OAuthConnection, OAuthState, OutboxMessage, SmtpAccount
from django_multismtp.oauth import providers, tokens
from django_multismtp.oauth import views as oauth_views
from django_multismtp.signals import oauth_needs_reconnect
from django_multismtp.transport import TokenUnavailable
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer
from tests.oauth_authserver import (
    DAEMON_CLIENT,
    MAILBOX,
    SERVICE_ACCOUNT,
    WEB_CLIENT,
    AuthServer,
    _service_account_keys,
)
from tests.oauth_helpers import REDIRECT_URI, obtain_refresh_token, sign_in_and_consent
from tests.processes import start, start_together, stop
from tests.smtp_servers import SMTPTestServer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def authserver() -> Iterator[AuthServer]:
    server = AuthServer([REDIRECT_URI])
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _healthy(authserver: AuthServer) -> None:
    authserver.control("fault", mode="ok")


@pytest.fixture(params=["microsoft", "google"])
def bearer_server(request: Any, authserver: AuthServer) -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(
        bearer_check=authserver.check_bearer, bearer_style=request.param, auth_required=True
    ).start()
    yield server
    server.stop()


def app_only_account(server: SMTPTestServer, authserver: AuthServer, **kw: Any) -> SmtpAccount:
    account = SmtpAccountFactory.for_server(
        server,
        auth_method=kw.pop("auth_method", "xoauth2"),
        username="shared@example.com",
        from_email="shared@example.com",
    )
    OAuthConnection.objects.create(
        account=account,
        flow="client_credentials",
        client_id=DAEMON_CLIENT[0],
        client_secret=DAEMON_CLIENT[1],
        token_url=authserver.token_url,
        scopes="SMTP.Send",
        state=OAuthState.CONNECTED,
    )
    return account


def delegated_account(server: SMTPTestServer, authserver: AuthServer, **kw: Any) -> SmtpAccount:
    token = obtain_refresh_token(authserver)
    account = SmtpAccountFactory.for_server(
        server,
        auth_method=kw.pop("auth_method", "xoauth2"),
        username=MAILBOX,
        from_email=MAILBOX,
    )
    OAuthConnection.objects.create(
        account=account,
        flow="authorization_code",
        client_id=WEB_CLIENT[0],
        client_secret=WEB_CLIENT[1],
        token_url=authserver.token_url,
        scopes="SMTP.Send",
        state=OAuthState.CONNECTED,
        refresh_token=token["refresh_token"],
    )
    return account


def send(account: SmtpAccount, subject: str = "Hello") -> int:
    message = EmailMessage(subject, "body", account.from_email, ["to@example.test"])
    return int(get_mailer().send_messages([message]))


def token_requests(authserver: AuthServer) -> int:
    return int(authserver.control("stats")["token_requests"])


@pytest.mark.parametrize("method", ["xoauth2", "oauthbearer"])
def test_app_only_account_sends_and_reuses_its_cached_token(
    mailer: None,
    outbox_off: None,
    bearer_server: SMTPTestServer,
    authserver: AuthServer,
    method: str,
) -> None:
    account = app_only_account(bearer_server, authserver, auth_method=method)
    before = token_requests(authserver)
    assert send(account, "first") == 1
    assert send(account, "second") == 1
    assert [r.login for r in bearer_server.received] == ["shared@example.com"] * 2
    # One client-credentials grant, then the cached (encrypted) token.
    assert token_requests(authserver) == before + 1
    oauth = OAuthConnection.objects.get(account=account)
    assert oauth.access_expires_at is not None
    assert bearer_server.auth_attempts[-1][0] == method.upper()


def test_delegated_account_refreshes_when_its_token_is_due(
    mailer: None,
    outbox_off: None,
    bearer_server: SMTPTestServer,
    authserver: AuthServer,
    clock: Any,
) -> None:
    account = delegated_account(bearer_server, authserver)
    assert send(account, "first") == 1
    first = OAuthConnection.objects.get(account=account)
    requests_after_first = token_requests(authserver)
    # Our clock passes the token's expiry (minus the margin): the next message refreshes.
    clock.advance(seconds=3600)
    assert send(account, "second") == 1
    second = OAuthConnection.objects.get(account=account)
    assert token_requests(authserver) == requests_after_first + 1
    assert second.access_expires_at is not None and first.access_expires_at is not None
    assert second.access_expires_at > first.access_expires_at
    assert [r.login for r in bearer_server.received] == [MAILBOX, MAILBOX]


def test_token_refused_by_the_server_is_refreshed_once_and_the_message_sent(
    mailer: None, outbox_off: None, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    account = delegated_account(bearer_server, authserver)
    assert send(account, "first") == 1
    # The provider expires every token early; our cache still believes in it.
    authserver.control("expire")
    get_mailer().close()
    assert send(account, "second") == 1
    refused = [a for a in bearer_server.auth_attempts if not a[2]]
    assert len(refused) == 1
    assert len(bearer_server.received) == 2


def test_withdrawn_consent_puts_the_account_in_needs_reconnect(
    bearer_server: SMTPTestServer, authserver: AuthServer, clock: Any, settings: Any
) -> None:
    # Plain addresses from Django 6.0 (pairs are deprecated there), pairs before.
    settings.ADMINS = (
        ["admin@example.test"] if django.VERSION >= (6, 0) else [("Admin", "admin@example.test")]
    )
    account = delegated_account(bearer_server, authserver)
    account.owner = UserFactory(email="owner@example.test")
    account.save()
    told: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        told.append(kwargs)

    oauth_needs_reconnect.connect(receiver)
    try:
        authserver.control("withdraw", username=MAILBOX)
        with pytest.raises(TokenUnavailable) as raised:
            tokens.access_token(account.pk)
        assert raised.value.permanent
        # Asked again: no new request, still the same state, told only once.
        before = token_requests(authserver)
        with pytest.raises(TokenUnavailable):
            tokens.access_token(account.pk)
        assert token_requests(authserver) == before
    finally:
        oauth_needs_reconnect.disconnect(receiver)
    oauth = OAuthConnection.objects.get(account=account)
    assert oauth.state == OAuthState.NEEDS_RECONNECT
    assert "invalid_grant" in oauth.last_refresh_error
    assert len(told) == 1 and told[0]["account"] == account
    assert "Connect" in told[0]["hint"]
    # The default notice (locmem here): the admins and the owner, once.
    assert sorted(to for m in mail.outbox for to in m.to) == [
        "admin@example.test",
        "owner@example.test",
    ]
    assert all("needs to be connected again" in m.subject for m in mail.outbox)


def test_needs_reconnect_account_is_skipped_and_verify_names_it(
    mailer: None, outbox_off: None, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    broken = app_only_account(bearer_server, authserver)
    broken.is_site_default = True
    broken.priority = 1
    broken.save()
    OAuthConnection.objects.filter(account=broken).update(
        state=OAuthState.NEEDS_RECONNECT, last_refresh_error="invalid_grant: AADSTS50173"
    )
    other_server = SMTPTestServer().start()
    try:
        other = SmtpAccountFactory.for_server(other_server, priority=2)
        message = EmailMessage("failover", "body", None, ["to@example.test"])
        assert get_mailer().send_messages([message]) == 1
        assert len(other_server.received) == 1 and not bearer_server.received
        assert message.multismtp_status.account == other.name  # type: ignore[attr-defined]
    finally:
        other_server.stop()
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("verify_smtp_accounts", broken.name, stdout=out)
    assert broken.name in str(raised.value)
    assert "Connect" in out.getvalue()


@pytest.mark.parametrize("where", ["account", "settings"])
def test_verify_shows_the_tokens_and_warns_before_the_client_secret_expires(
    bearer_server: SMTPTestServer, authserver: AuthServer, clock: Any, settings: Any, where: str
) -> None:
    """verify_smtp_accounts tells when the access token expires, when the last token
    came and what the provider granted, and warns (exit status 3) from 30 days before
    the client secret expires: the token endpoint says nothing until it has expired."""
    account = delegated_account(bearer_server, authserver)
    today = clock().date()

    def expire_secret_in(days: int) -> None:
        expires = today + dt.timedelta(days=days)
        if where == "account":
            OAuthConnection.objects.filter(account=account).update(client_secret_expires=expires)
        else:
            settings.MULTISMTP = {
                **getattr(settings, "MULTISMTP", {}),
                "OAUTH_PROVIDERS": {"generic": {"client_secret_expires": expires.isoformat()}},
            }

    expire_secret_in(10)
    out = io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("verify_smtp_accounts", account.name, "--json", stdout=out)
    assert raised.value.returncode == 3 and account.name in str(raised.value)
    [result] = json.loads(out.getvalue())
    assert result["ok"] is True
    oauth = OAuthConnection.objects.get(account=account)
    assert result["oauth"] == {
        "provider": "generic",
        "state": "connected",
        "token_expires": oauth.access_expires_at.isoformat(),
        "refreshed_at": clock().isoformat(),  # the check's own refresh, just now
        "scopes": "SMTP.Send",  # what the authorization server granted
        "client_secret_expires": (today + dt.timedelta(days=10)).isoformat(),
    }
    assert any("expires on" in warning and "(10 days)" in warning for warning in result["warnings"])

    expire_secret_in(40)  # outside the 30 days: nothing to do yet
    out = io.StringIO()
    call_command("verify_smtp_accounts", account.name, stdout=out)
    line = next(line for line in out.getvalue().splitlines() if "OAuth generic" in line)
    assert "scopes: SMTP.Send" in line and "client secret until" in line
    assert "warning" not in out.getvalue()


def test_token_expiring_between_two_messages_of_one_batch(
    mailer: None, outbox_off: None, authserver: AuthServer
) -> None:
    accepted: list[str] = []

    def check_then_expire(user: str, token: str) -> str | None:
        # The provider expires every token right after the first login of the batch.
        error = authserver.check_bearer(user, token)
        if error is None and not accepted:
            authserver.control("expire")
        if error is None:
            accepted.append(token)
        return error

    server = SMTPTestServer(bearer_check=check_then_expire, auth_required=True).start()
    try:
        account = app_only_account(server, authserver)
        account.max_messages_per_connection = 1  # a new login for the second message
        account.save()
        messages = [
            EmailMessage(f"m{n}", "body", account.from_email, ["to@example.test"]) for n in (1, 2)
        ]
        assert get_mailer().send_messages(messages) == 2
        assert len(server.received) == 2
        assert [ok for _m, _u, ok in server.auth_attempts] == [True, False, True]
        assert len(set(accepted)) == 2  # the second login used a refreshed token
    finally:
        server.stop()


def test_two_processes_refreshing_at_once_share_one_refresh(
    authserver: AuthServer, bearer_server: SMTPTestServer
) -> None:
    account = app_only_account(bearer_server, authserver)
    account.is_site_default = True
    account.save()
    # The token endpoint takes two seconds: both processes need a token meanwhile.
    authserver.control("fault", mode="slow")
    before = token_requests(authserver)
    children = [start(["-m", "tests.child_send", f"p{n}", "1"], stdin=True) for n in range(2)]
    try:
        start_together(children)
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outputs.extend(out.split())
    finally:
        stop(*children)
    assert sorted(outputs) == ["p0-0", "p1-0", "sent", "sent"]
    assert token_requests(authserver) == before + 1
    assert len(bearer_server.received) == 2


@pytest.mark.parametrize("mode", ["error500", "garbage", "down", "slow"])
def test_temporary_token_endpoint_failure_backs_off(
    mailer: None,
    bearer_server: SMTPTestServer,
    authserver: AuthServer,
    clock: Any,
    mode: str,
    settings: Any,
) -> None:
    # The slow endpoint answers after 2 s; we wait 1 s.
    settings.MULTISMTP = {**getattr(settings, "MULTISMTP", {}), "OAUTH_HTTP_TIMEOUT": 1}
    account = app_only_account(bearer_server, authserver)
    if mode == "down":
        OAuthConnection.objects.filter(account=account).update(
            token_url="http://127.0.0.1:9/o/token/"
        )
    else:
        authserver.control("fault", mode=mode)
    with pytest.raises(TokenUnavailable) as raised:
        tokens.access_token(account.pk)
    assert not raised.value.permanent
    oauth = OAuthConnection.objects.get(account=account)
    assert oauth.state == OAuthState.CONNECTED
    assert oauth.retry_refresh_at == clock.current + dt.timedelta(minutes=1)
    # Within the back-off nothing is asked; after it, a healthy endpoint heals the account.
    before = token_requests(authserver)
    with pytest.raises(TokenUnavailable):
        tokens.access_token(account.pk)
    assert token_requests(authserver) == before
    authserver.control("fault", mode="ok")
    if mode == "down":
        OAuthConnection.objects.filter(account=account).update(token_url=authserver.token_url)
    clock.advance(minutes=1)
    assert tokens.access_token(account.pk)
    oauth.refresh_from_db()
    assert oauth.refresh_failures == 0 and oauth.retry_refresh_at is None


def test_invalid_grant_from_the_endpoint_is_permanent_with_the_aadsts_hint(
    mailer: None, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    account = delegated_account(bearer_server, authserver)
    authserver.control("fault", mode="invalid_grant")
    with pytest.raises(TokenUnavailable) as raised:
        tokens.access_token(account.pk)
    assert raised.value.permanent
    assert "Connect" in raised.value.hint
    assert OAuthConnection.objects.get(account=account).state == OAuthState.NEEDS_RECONNECT


def test_a_token_endpoints_garbled_error_is_stored_cleaned_and_the_account_needs_reconnect(
    mailer: None, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    """The token endpoint is a server nobody vouches for: a NUL (which PostgreSQL text
    refuses), a terminal escape or a lone surrogate (which no driver encodes) in its
    error must not stop the account from being marked, nor reach a page or a console."""
    account = delegated_account(bearer_server, authserver)
    authserver.control("fault", mode="hostile_invalid_grant")
    with pytest.raises(TokenUnavailable) as raised:
        tokens.access_token(account.pk)
    assert raised.value.permanent
    oauth = OAuthConnection.objects.get(account=account)
    assert oauth.state == OAuthState.NEEDS_RECONNECT
    assert oauth.last_refresh_error.startswith("invalid_grant: AADSTS50173:")
    assert not {"\x00", "\x1b", "\ud800"} & set(oauth.last_refresh_error)


@pytest.mark.parametrize(
    "scope", ["SMTP.Send\x00 offline_access\x1b[2J", ["SMTP.Send", "\ud800"], "x" * 900]
)
def test_granted_scopes_from_the_provider_are_stored_as_safe_bounded_text(scope: Any) -> None:
    stored = tokens.granted_scopes({"scope": scope})
    assert len(stored) <= 500
    assert not {"\x00", "\x1b", "\ud800"} & set(stored)
    assert stored.split()[0].startswith(("SMTP.Send", "x"))


@pytest.mark.parametrize("style", ["microsoft", "google"])
def test_a_fresh_token_refused_for_another_mailbox_says_what_to_fix(
    authserver: AuthServer, style: str
) -> None:
    server = SMTPTestServer(bearer_check=authserver.check_bearer, bearer_style=style).start()
    try:
        account = delegated_account(server, authserver)
        account.username = "bob@example.com"  # not the mailbox the token is for
        account.save()
        result = ops.test_connection(account)
    finally:
        server.stop()
    assert not result.ok and result.outcome == "auth_failed"
    assert "535 5.7" in result.reply
    assert "user name" in result.hint
    # Refused, refreshed once, refused again: not an endless loop of refreshes.
    assert [ok for _m, _u, ok in server.auth_attempts] == [False, False]


def test_presets_resolve_the_tenant_and_the_site_app(settings: Any) -> None:
    settings.MULTISMTP = {
        "OAUTH_PROVIDERS": {"microsoft": {"client_id": "site-app", "tenant": "contoso-id"}}
    }
    delegated = providers.resolve("microsoft", flow="authorization_code")
    assert delegated.client_id == "site-app"
    assert delegated.token_url == ("https://login.microsoftonline.com/contoso-id/oauth2/v2.0/token")
    assert "https://outlook.office.com/SMTP.Send" in delegated.scopes.split()
    assert "offline_access" in delegated.scopes.split()
    app_only = providers.resolve("microsoft", flow="client_credentials", client_id="own")
    assert app_only.client_id == "own"  # the account's own value wins
    assert app_only.scopes == "https://outlook.office365.com/.default"
    google = providers.resolve("google", flow="authorization_code")
    assert google.scopes.split()[0] == "https://mail.google.com/"
    assert google.authorize_params == {"access_type": "offline", "prompt": "consent"}


def test_connect_asks_google_for_offline_access(
    authserver: AuthServer, bearer_server: SMTPTestServer
) -> None:
    owner = UserFactory()
    account = SmtpAccountFactory.for_server(bearer_server, auth_method="xoauth2", owner=owner)
    OAuthConnection.objects.create(
        account=account, provider="google", client_id="g", authorize_url=authserver.authorize_url
    )
    client = Client()
    client.force_login(owner)
    location = client.post(f"/smtp/{account.pk}/oauth/connect/")["Location"]
    query = parse_qs(urlparse(location).query)
    assert query["access_type"] == ["offline"] and query["prompt"] == ["consent"]
    assert query["scope"] == ["https://mail.google.com/ openid email"]
    assert query["code_challenge_method"] == ["S256"] and query["state"][0]
    assert query["redirect_uri"] == ["http://testserver/smtp/oauth/callback/"]


def test_service_account_jwt_bearer_sends_as_the_mailbox(
    mailer: None, outbox_off: None, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    """Workspace domain-wide delegation: RFC 7523 assertion signed with the key, sub = mailbox."""
    account = SmtpAccountFactory.for_server(
        bearer_server, auth_method="xoauth2", username=MAILBOX, from_email=MAILBOX
    )
    OAuthConnection.objects.create(
        account=account,
        flow="jwt_bearer",
        client_id=SERVICE_ACCOUNT,
        client_secret=authserver.service_account_key,
        token_url=authserver.token_url,
        scopes="SMTP.Send",
        state=OAuthState.CONNECTED,
    )
    assert send(account, "delegated") == 1
    assert [r.login for r in bearer_server.received] == [MAILBOX]


def test_service_account_with_a_foreign_key_needs_reconnect(
    bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    account = SmtpAccountFactory.for_server(bearer_server, auth_method="xoauth2", username=MAILBOX)
    other_key = _service_account_keys()[0]  # not the key the server knows
    OAuthConnection.objects.create(
        account=account,
        flow="jwt_bearer",
        client_id=SERVICE_ACCOUNT,
        client_secret=other_key,
        token_url=authserver.token_url,
        scopes="SMTP.Send",
        state=OAuthState.CONNECTED,
    )
    with pytest.raises(TokenUnavailable) as raised:
        tokens.access_token(account.pk)
    assert raised.value.permanent and "invalid_grant" in str(raised.value)


def test_admin_list_shows_the_needs_reconnect_badge(
    admin_client: Client, bearer_server: SMTPTestServer, authserver: AuthServer
) -> None:
    account = app_only_account(bearer_server, authserver)
    page = admin_client.get("/admin/django_multismtp/smtpaccount/").content.decode()
    assert "needs reconnect" not in page
    OAuthConnection.objects.filter(account=account).update(
        state=OAuthState.NEEDS_RECONNECT, last_refresh_error="invalid_grant: AADSTS50173"
    )
    page = admin_client.get("/admin/django_multismtp/smtpaccount/").content.decode()
    assert "needs reconnect" in page and "AADSTS50173" in page


def test_the_outbox_worker_sends_through_an_oauth_account_and_waits_for_a_broken_one(
    mailer: None, bearer_server: SMTPTestServer, authserver: AuthServer, settings: Any
) -> None:
    settings.MULTISMTP = {"OUTBOX": "always"}
    account = app_only_account(bearer_server, authserver)
    account.is_site_default = True
    account.save()
    OAuthConnection.objects.filter(account=account).update(state=OAuthState.NEEDS_RECONNECT)
    message = EmailMessage("queued", "body", account.from_email, ["to@example.test"])
    get_mailer().send_messages([message])
    call_command("send_queued_mail", stdout=io.StringIO())
    assert not bearer_server.received  # skipped like a paused account: still queued
    assert OutboxMessage.objects.get().status == "queued"
    # Reconnected (here: state back to connected; the app-only flow needs no person).
    OAuthConnection.objects.filter(account=account).update(state=OAuthState.CONNECTED)
    OutboxMessage.objects.update(next_attempt_at=timezone.now())
    call_command("send_queued_mail", stdout=io.StringIO())
    assert [r.login for r in bearer_server.received] == ["shared@example.com"]
    assert OutboxMessage.objects.get().status == "sent"


@pytest.mark.parametrize("state", ["disconnected", "missing"])
def test_an_unconnected_oauth_account_is_skipped(
    mailer: None, outbox_off: None, authserver: AuthServer, state: str
) -> None:
    server, other_server = SMTPTestServer().start(), SMTPTestServer().start()
    try:
        account = app_only_account(server, authserver)
        account.is_site_default, account.priority = True, 1
        account.save()
        if state == "missing":
            OAuthConnection.objects.filter(account=account).delete()
        else:
            OAuthConnection.objects.filter(account=account).update(state=state)
        SmtpAccountFactory.for_server(other_server, priority=2)
        message = EmailMessage("skip", "body", None, ["to@example.test"])
        assert get_mailer().send_messages([message]) == 1
        assert len(other_server.received) == 1 and server.connections == 0
    finally:
        server.stop()
        other_server.stop()


def test_a_declined_consent_comes_back_as_a_message_and_changes_nothing(
    authserver: AuthServer, bearer_server: SMTPTestServer
) -> None:
    owner = UserFactory()
    account = SmtpAccountFactory.for_server(
        bearer_server, auth_method="xoauth2", owner=owner, username=MAILBOX
    )
    OAuthConnection.objects.create(
        account=account,
        client_id=WEB_CLIENT[0],
        client_secret=WEB_CLIENT[1],
        authorize_url=authserver.authorize_url,
        token_url=authserver.token_url,
        scopes="SMTP.Send",
    )
    client = Client()
    client.force_login(owner)
    location = client.post(f"/smtp/{account.pk}/oauth/connect/")["Location"]
    # This module's authorization server knows only REDIRECT_URI: point ours at it.
    ours = quote("http://testserver/smtp/oauth/callback/", safe="")
    back = sign_in_and_consent(
        authserver, location.replace(ours, quote(REDIRECT_URI, safe="")), allow=False
    )
    query = urlparse(back).query
    assert "error=access_denied" in query
    response = client.get(f"/smtp/oauth/callback/?{query}", follow=True)
    assert "did not connect the account: access_denied" in response.content.decode()
    assert OAuthConnection.objects.get(account=account).state == OAuthState.DISCONNECTED
    # The state was used once: the same answer again is refused.
    assert client.get(f"/smtp/oauth/callback/?{query}").status_code == 400


def test_the_mailbox_address_is_read_from_the_token_response() -> None:
    claims = base64.urlsafe_b64encode(json.dumps({"email": "x@example.com"}).encode()).decode()
    assert oauth_views._mailbox_of({"id_token": f"h.{claims.rstrip('=')}.s"}) == "x@example.com"
    assert oauth_views._mailbox_of({"email": "y@example.com"}) == "y@example.com"
    assert oauth_views._mailbox_of({"id_token": "garbage"}) == ""
