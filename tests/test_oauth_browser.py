"""Connecting an account with OAuth in headless Chromium, against the real servers.

Admin → the account → "Connect" → the authorization server's own login and consent
pages (django-oauth-toolkit in its own process) → back on the account, connected and
tested; then a message goes out through the bearer-checking SMTP server, and
"Disconnect" revokes the grant at the provider. A callback with a state this browser
session did not start is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.test import Client
from playwright.sync_api import Page, expect

from django_multismtp.models import OAuthConnection, OAuthState, SmtpAccount
from django_multismtp.oauth import tokens
from django_multismtp.oauth.tokens import TokenUnavailable
from tests import test_browser
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer
from tests.oauth_authserver import MAILBOX, MAILBOX_PASSWORD, WEB_CLIENT, AuthServer
from tests.smtp_servers import SMTPTestServer
from tests.test_browser import log_in

# The module-scoped Playwright fixtures of the admin's browser tests (see their docstring).
playwright = test_browser.playwright
browser = test_browser.browser
browser_type_launch_args = test_browser.browser_type_launch_args
browser_context_args = test_browser.browser_context_args
page = test_browser.page
_fresh_rate_limits = test_browser._fresh_rate_limits
shot = test_browser.shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CALLBACK = "/smtp/oauth/callback/"


@pytest.fixture(scope="module")
def authserver(live_server: Any) -> Iterator[AuthServer]:
    """One authorization server for the module: starting one (a process that migrates
    its own database) took 4 s of every test's set-up. Nothing here depends on a fresh
    one: each test connects its own account in a fresh browser context (signed in at
    the server anew), consent is asked every time (the toolkit's "force" prompt), and
    tokens are only ever looked at by the test that obtained them."""
    server = AuthServer([live_server.url + CALLBACK])
    yield server
    server.stop()


@pytest.fixture
def bearer_server(authserver: AuthServer) -> Iterator[SMTPTestServer]:
    server = SMTPTestServer(bearer_check=authserver.check_bearer, auth_required=True).start()
    yield server
    server.stop()


def oauth_account(smtp: SMTPTestServer, authserver: AuthServer, **kw: Any) -> SmtpAccount:
    account = SmtpAccountFactory.for_server(
        smtp,
        name="Alice's mailbox",
        auth_method="xoauth2",
        username=MAILBOX,
        from_email=MAILBOX,
        **kw,
    )
    OAuthConnection.objects.create(
        account=account,
        provider="generic",
        client_id=WEB_CLIENT[0],
        client_secret=WEB_CLIENT[1],
        authorize_url=authserver.authorize_url,
        token_url=authserver.token_url,
        revoke_url=authserver.revoke_url,
        scopes="SMTP.Send",
    )
    return account


def test_admin_connects_sends_and_disconnects(
    page: Page,
    live_server: Any,
    authserver: AuthServer,
    bearer_server: SMTPTestServer,
    admin_user: Any,
    mailer: None,
) -> None:
    account = oauth_account(bearer_server, authserver)
    log_in(page, live_server.url, "admin", "password")
    page.goto(f"{live_server.url}/admin/django_multismtp/smtpaccount/{account.pk}/change/")
    expect(page.locator(".oauth-state")).to_have_text("not connected")
    expect(page.locator(".oauth-redirect-uri")).to_have_text(CALLBACK)

    page.get_by_role("button", name="Connect with OAuth 2.0").click()
    # The authorization server's own pages.
    expect(page).to_have_url(re.compile(re.escape(authserver.url + "/accounts/login/")))
    page.locator("#id_username").fill(MAILBOX)
    page.locator("#id_password").fill(MAILBOX_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Authorize").click()
    # Back on the account: connected and tested at once.
    expect(page.locator("ul.messagelist")).to_contain_text("Connected; the connection test passed")
    expect(page.locator(".oauth-state")).to_have_text("connected")
    oauth = OAuthConnection.objects.get(account=account)
    assert oauth.state == OAuthState.CONNECTED and oauth.refresh_token and oauth.access_token
    assert bearer_server.auth_attempts[-1][1:] == (MAILBOX, True)

    message = EmailMessage("via OAuth", "body", MAILBOX, ["to@example.test"])
    assert get_mailer().send_messages([message]) == 1
    assert [r.login for r in bearer_server.received] == [MAILBOX]

    # Disconnect: revoked at the provider (its access token is dead too), forgotten here.
    access = OAuthConnection._meta.get_field("access_token").reveal(oauth.access_token)
    page.get_by_role("button", name="Disconnect").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Disconnected")
    oauth.refresh_from_db()
    assert oauth.state == OAuthState.DISCONNECTED and not oauth.refresh_token
    assert authserver.introspect(access).get("active") is False


def test_a_forged_state_is_refused(
    page: Page, live_server: Any, authserver: AuthServer, admin_user: Any
) -> None:
    log_in(page, live_server.url, "admin", "password")
    response = page.goto(f"{live_server.url}{CALLBACK}?state=forged-state&code=stolen-code")
    assert response is not None and response.status == 400
    expect(page.locator("body")).to_contain_text("not started from this browser session")


def test_staff_may_connect_only_their_own_account(
    authserver: AuthServer, bearer_server: SMTPTestServer
) -> None:
    owner, other = UserFactory(), UserFactory()
    account = oauth_account(bearer_server, authserver, owner=owner)
    url = f"/smtp/{account.pk}/oauth/connect/"
    client = Client()
    client.force_login(other)
    assert client.post(url).status_code == 404
    client.force_login(owner)
    response = client.post(url)
    assert response.status_code == 302
    assert response["Location"].startswith(authserver.authorize_url)
    assert "code_challenge_method=S256" in response["Location"]


def test_my_smtp_settings_connects_the_owners_account(
    shot: Any,
    page: Page,
    live_server: Any,
    authserver: AuthServer,
    bearer_server: SMTPTestServer,
    settings: Any,
) -> None:
    settings.MULTISMTP = {"ALLOW_INTERNAL_HOSTS": True}
    owner = UserFactory(username="carol")
    account = oauth_account(bearer_server, authserver, owner=owner)
    log_in(page, live_server.url, "carol", "pw")
    page.goto(f"{live_server.url}/smtp/{account.pk}/")
    expect(page.locator(".oauth-state")).to_have_text("not connected")
    shot(page, "my-smtp-settings-oauth.png", "#content", width=1000)
    page.get_by_role("button", name="Connect").click()
    page.locator("#id_username").fill(MAILBOX)
    page.locator("#id_password").fill(MAILBOX_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Authorize").click()
    expect(page.locator("ul.messagelist")).to_contain_text("Connected; the connection test passed")
    expect(page).to_have_url(f"{live_server.url}/smtp/{account.pk}/")
    expect(page.locator(".oauth-state")).to_have_text("connected")


def sign_in_at_the_authserver(page: Page) -> None:
    """Sign in (unless still signed in there from an earlier connect) and authorize."""
    authorize = page.get_by_role("button", name="Authorize")
    expect(page.locator("#id_username").or_(authorize)).to_be_visible()
    if page.locator("#id_username").count():
        page.locator("#id_username").fill(MAILBOX)
        page.locator("#id_password").fill(MAILBOX_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
    authorize.click()


def test_withdrawn_consent_shows_needs_reconnect_until_connected_again(
    page: Page,
    live_server: Any,
    authserver: AuthServer,
    bearer_server: SMTPTestServer,
    admin_user: Any,
    shot: Any,
) -> None:
    account = oauth_account(bearer_server, authserver)
    SmtpAccountFactory(name="Newsletter")  # an account that is fine: no banner for it
    change = f"{live_server.url}/admin/django_multismtp/smtpaccount/{account.pk}/change/"
    log_in(page, live_server.url, "admin", "password")
    page.goto(change)
    page.get_by_role("button", name="Connect with OAuth 2.0").click()
    sign_in_at_the_authserver(page)
    expect(page.locator(".oauth-state")).to_have_text("connected")

    # The mailbox owner withdraws consent at the provider: the next token refresh is
    # refused for good (invalid_grant).
    authserver.control("withdraw", username=MAILBOX)
    OAuthConnection.objects.filter(account=account).update(access_token="")
    with pytest.raises(TokenUnavailable):
        tokens.access_token(account.pk)

    page.goto(f"{live_server.url}/admin/django_multismtp/smtpaccount/")
    banner = page.locator("ul.messagelist li.error")
    expect(banner).to_have_count(1)
    expect(banner).to_contain_text("“Alice's mailbox” needs reconnecting")
    expect(banner).not_to_contain_text("Newsletter")
    row = page.locator("#result_list tbody tr", has_text="Alice's mailbox")
    expect(row.locator(".multismtp-status")).to_have_text("needs reconnect")
    shot(page, "admin-oauth-needs-reconnect.png", "ul.messagelist", "#result_list", width=1200)

    # Connect again: connected, and the banner is gone.
    page.goto(change)
    expect(page.locator(".oauth-state")).to_have_text("needs reconnect")
    page.get_by_role("button", name="Connect with OAuth 2.0").click()
    sign_in_at_the_authserver(page)
    expect(page.locator(".oauth-state")).to_have_text("connected")
    page.goto(f"{live_server.url}/admin/django_multismtp/smtpaccount/")
    expect(page.locator("ul.messagelist li.error")).to_have_count(0)
    expect(row.locator(".multismtp-status")).not_to_have_text("needs reconnect")
