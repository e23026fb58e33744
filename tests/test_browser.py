"""The admin and "My SMTP settings" pages, driven in headless Chromium against real servers.

Each test is what a person does: log in through the login form, fill the forms, pick
actions, read the confirmation code out of the message the local SMTP server received,
and check what the page shows. Nothing is mocked: the live server runs the real views,
the SMTP servers are aiosmtpd on 127.0.0.1 (STARTTLS with a throw-away certificate).

Screenshots for the admin guide (docs/admin.rst) are written to ``docs/_static`` when
``MULTISMTP_SCREENSHOTS`` is set, and to the test's temporary folder otherwise, so a
normal run never touches the checkout::

    MULTISMTP_SCREENSHOTS=1 pytest tests/test_browser.py

Playwright's sync API keeps an asyncio loop "running" in the main thread for as long as it
is started. That trips Django's async-safety check on every ORM call made by the test
(and by pytest-django's fixtures), and makes the backend take its "inside an event loop"
path. So Playwright lives for this module only (the plugin's session-wide fixtures are
overridden), and DJANGO_ALLOW_ASYNC_UNSAFE is set only while it runs: the rest of the
suite keeps both the check and the normal code path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.conftest import USERS
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import direct_construction
from tests.smtp_servers import SMTPTestServer, TLSFiles

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    direct_construction,
]

DOCS_STATIC = Path(__file__).resolve().parent.parent / "docs" / "_static"
CODE_RE = re.compile(r"is:\s+([A-Z0-9]{8})\b")
SELF_SERVICE = {"PURPOSES": {"billing": "Billing"}, "ALLOW_INTERNAL_HOSTS": True}
PASSWORD = "pw"  # what UserFactory gives every user


# -- Playwright for this module only ------------------------------------------------------
@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    # Debian's Chromium: Playwright cannot download its own browsers here.
    return {
        **browser_type_launch_args,
        "executable_path": "/usr/bin/chromium",
        "args": [
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """Overrides pytest-playwright's session fixture: see the module docstring."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as pw:
            yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright, browser_type_launch_args: dict[str, Any]) -> Iterator[Browser]:
    browser = playwright.chromium.launch(**browser_type_launch_args)
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    # The plugin's session fixture needs the session-wide Playwright (for --device).
    return {"viewport": {"width": 1600, "height": 900}}


@pytest.fixture
def page(context: BrowserContext) -> Page:
    page = context.new_page()
    # The admin's navigation sidebar closed: the pages get the whole width (as after
    # clicking its toggle once, which the admin remembers in localStorage).
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    return page


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    # django-ratelimit counts in the LocMem cache, which the live server thread shares.
    cache.clear()


@pytest.fixture
def server(tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    """STARTTLS submission server: AUTH only after STARTTLS, and always required."""
    with SMTPTestServer(
        mode="starttls", tls=tls_files, users={"alice": USERS["alice"]}, auth_required=True
    ) as smtp:
        yield smtp


@pytest.fixture
def shot(tmp_path: Path) -> Callable[..., None]:
    """``shot(page, name, *selectors, width=None)``: a screenshot for the docs.

    The whole page, or only the part spanning ``selectors``; ``width`` lays the page out
    in a narrower window first, so that short pages do not shrink to nothing in the docs.
    """
    folder = DOCS_STATIC if os.environ.get("MULTISMTP_SCREENSHOTS") else tmp_path

    def take(page: Page, name: str, *selectors: str, width: int | None = None) -> None:
        viewport = page.viewport_size
        assert viewport is not None
        if width is not None:
            page.set_viewport_size({"width": width, "height": viewport["height"]})
        clip = None
        if selectors:
            boxes = [page.locator(selector).bounding_box() for selector in selectors]
            assert all(boxes), selectors
            x, y = page.evaluate("[window.scrollX, window.scrollY]")
            left = max(0, min(b["x"] for b in boxes if b) + x - 8)
            top = max(0, min(b["y"] for b in boxes if b) + y - 8)
            right = max(b["x"] + b["width"] for b in boxes if b) + x + 8
            bottom = max(b["y"] + b["height"] for b in boxes if b) + y + 8
            clip = {"x": left, "y": top, "width": right - left, "height": bottom - top}
        page.screenshot(path=str(folder / name), full_page=True, clip=clip)  # type: ignore[arg-type]
        if width is not None:
            page.set_viewport_size(viewport)

    return take


# -- helpers ------------------------------------------------------------------------------
def log_in(page: Page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/admin/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text(username)


def run_action(page: Page, action: str, *names: str) -> None:
    """Tick the rows of ``names`` on the changelist and run ``action``."""
    for name in names:
        page.locator("#result_list tbody tr", has_text=name).locator("input.action-select").check()
    page.locator("select[name='action']").select_option(action)
    # "Go" up to Django 6.0, "Run" from 6.1.
    page.locator("div.actions button[name='index']").click()


def code_from(server: SMTPTestServer, index: int) -> str:
    body = server.wait_for(index + 1)[index].message().get_content()
    match = CODE_RE.search(body)
    assert match, body
    return match.group(1)


def messages(page: Page) -> Locator:
    return page.locator("ul.messagelist")


# -- the admin ----------------------------------------------------------------------------
def test_admin_preset_test_send_code_and_confirm(
    page: Page, live_server: Any, server: SMTPTestServer, tls_files: TLSFiles, shot: Any
) -> None:
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    broken = SmtpAccountFactory.for_server(
        server,
        name="Newsletter (wrong password)",
        purpose="campaigns",
        from_email="news@example.test",
        auth_method="login",
        username="alice",
        password="not-the-app-password",
    )
    log_in(page, base, "admin", PASSWORD)

    # Add an account: the Gmail preset fills the server fields and shows its caveat.
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/add/")
    page.locator("#id_name").fill("Support mailbox")
    page.locator("#id_purpose").select_option("customer_service")
    page.locator("#id_from_email").fill("support@example.test")
    page.locator("#id_from_name").fill("Example Support")
    page.locator("#id_preset").select_option(label="SendGrid")
    expect(page.locator("#id_host")).to_have_value("smtp.sendgrid.net")
    expect(page.locator("#id_username")).to_have_value("apikey")
    expect(page.locator("#multismtp-caveat")).to_contain_text("literally 'apikey'")
    # Changing one's mind replaces everything the first choice filled in.
    page.locator("#id_preset").select_option(label="Gmail / Google Workspace")
    expect(page.locator("#id_username")).to_have_value("")
    expect(page.locator("#id_host")).to_have_value("smtp.gmail.com")
    expect(page.locator("#id_port")).to_have_value("587")
    expect(page.locator("#id_security")).to_have_value("starttls")
    expect(page.locator("#multismtp-caveat")).to_contain_text("App Password")
    expect(page.locator("#id_username")).to_have_attribute("placeholder", "Your full Gmail address")
    page.locator("#id_username").fill("alice")
    page.locator("#id_auth_method").select_option("login")
    shot(
        page,
        "admin-add-preset.png",
        "fieldset:has(#id_preset)",
        "fieldset:has(#id_password)",
        width=1200,
    )

    # ...then point it at the local STARTTLS server instead of Gmail.
    page.locator("#id_host").fill("127.0.0.1")
    page.locator("#id_port").fill(str(server.port))
    page.locator("#id_ca_file").fill(tls_files.cert_path)
    page.locator("#id_password").fill(USERS["alice"])
    page.get_by_role("button", name="Save", exact=True).click()
    expect(messages(page)).to_contain_text("was added successfully")
    # The host was overwritten by hand, so the Gmail caveat no longer applies: no warning.
    expect(page.locator("ul.messagelist li.warning")).to_have_count(0)
    row = page.locator("#result_list tbody tr", has_text="Support mailbox")
    expect(row).to_contain_text(f"127.0.0.1:{server.port}")
    expect(row.locator(".multismtp-status")).to_have_text("not verified")

    # Test connection on both: the good one logs in, the other shows the reply and a hint.
    run_action(page, "test_connection", "Support mailbox", broken.name)
    expect(page.locator("h1")).to_have_text("Connection test results")
    good_row = page.locator("table.multismtp-results tr", has_text="Support mailbox")
    bad_row = page.locator("table.multismtp-results tr", has_text=broken.name)
    expect(good_row).to_have_class(re.compile("multismtp-ok"))
    expect(good_row.locator("td").nth(1)).to_have_text("OK")
    expect(bad_row).to_have_class(re.compile("multismtp-failed"))
    expect(bad_row.locator("td").nth(1)).to_have_text("Authentication failed")
    expect(bad_row.locator("td").nth(2)).to_contain_text("535")
    expect(bad_row.locator("td").nth(3)).to_contain_text("2-Step Verification")
    expect(bad_row.locator("td").nth(3)).to_contain_text("App Password")
    shot(page, "admin-test-results.png", "#header", "#content", width=1200)
    assert server.received == []  # a connection test sends nothing

    # Send a code through the good account, read it from the mailbox, paste it.
    page.get_by_role("link", name="Back to the accounts").click()
    run_action(page, "send_test_email", "Support mailbox")
    expect(page.locator("h1")).to_have_text("Send a test email with a confirmation code")
    expect(page.locator("#id_recipient")).to_have_value("admin@example.test")
    page.locator("#id_recipient").fill("helpdesk@example.test")
    page.get_by_role("button", name="Send the code").click()
    expect(messages(page)).to_contain_text("Code sent to helpdesk@example.test")
    code = code_from(server, 0)
    received = server.received[0]
    assert received.rcpt_tos == ["helpdesk@example.test"]
    assert received.login == "alice" and received.tls
    assert received.message()["From"] == "Example Support <support@example.test>"

    expect(page.locator("h1")).to_have_text("Confirm the code for Support mailbox")
    page.locator("#id_code").fill(code)
    shot(page, "admin-confirm-code.png", "#header", "#content", width=1000)
    page.get_by_role("button", name="Confirm").click()

    expect(messages(page)).to_contain_text("The code is right: the account is verified.")
    badge = page.locator("#result_list tbody tr", has_text="Support mailbox").locator(
        ".multismtp-status"
    )
    expect(badge).to_have_text("verified")
    expect(badge).to_have_class(re.compile("multismtp-status-verified"))
    expect(badge).to_have_css("background-color", "rgb(46, 125, 50)")
    expect(badge).to_be_in_viewport()  # not scrolled out of the table's overflow box
    failed = page.locator("#result_list tbody tr", has_text=broken.name).locator(
        ".multismtp-status"
    )
    expect(failed).to_have_class(re.compile("multismtp-status-error"))
    shot(page, "admin-changelist.png")

    # Editing something else keeps the stored password and the verification...
    page.get_by_role("link", name="Support mailbox").click()
    expect(page.locator("#id_password")).to_have_value("")
    expect(page.locator(".field-password .help")).to_contain_text("A password is stored")
    page.locator("#id_from_name").fill("Example Help Desk")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(badge).to_have_text("verified")
    run_action(page, "test_connection", "Support mailbox")
    expect(good_row.locator("td").nth(1)).to_have_text("OK")
    # ...changing the server does not: the new one has to be proven again.
    page.get_by_role("link", name="Back to the accounts").click()
    page.get_by_role("link", name="Support mailbox").click()
    page.locator("#id_host").fill("localhost")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(badge).to_have_text("not verified")


# -- "My SMTP settings" -------------------------------------------------------------------
def fill_my_settings(page: Page, port: int, password: str) -> None:
    page.locator("#id_host").fill("127.0.0.1")
    page.locator("#id_port").fill(str(port))
    page.locator("#id_security").select_option("starttls")
    page.locator("#id_auth_method").select_option("login")
    page.locator("#id_username").fill("alice")
    page.locator("#id_password").fill(password)


@pytest.fixture
def trusted_certificate(monkeypatch: pytest.MonkeyPatch, tls_files: TLSFiles) -> None:
    # The self-service form has no CA file field (a public provider's certificate is
    # trusted by the system store); make the test certificate part of that store, so
    # "verify certificates" stays on as a person would leave it.
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)


def test_presets_switch_the_authentication_method(page: Page, live_server: Any, shot: Any) -> None:
    """The OAuth presets choose OAuth 2.0 (XOAUTH2) and show the OAuth section (a note
    before the first save); a password preset takes the method back to Automatic and
    shows the password again. The server-side rules are in test_admin.py (no JavaScript)."""
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    log_in(page, base, "admin", PASSWORD)
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/add/")
    method, note = page.locator("#id_auth_method"), page.locator("#multismtp-oauth-note")
    password = page.locator(".form-row.field-password")
    expect(method).to_have_value("auto")
    expect(note).to_be_hidden()

    page.locator("#id_preset").select_option(label="Microsoft 365 (OAuth 2.0)")
    expect(method).to_have_value("xoauth2")
    expect(page.locator("#id_host")).to_have_value("smtp.office365.com")
    expect(note).to_be_visible()
    expect(password).to_be_hidden()
    page.locator("#id_preset").select_option(label="SendGrid")
    expect(method).to_have_value("auto")
    expect(note).to_be_hidden()
    expect(password).to_be_visible()
    # A password method chosen by hand stays when another password preset is chosen.
    method.select_option("login")
    page.locator("#id_preset").select_option(label="Yahoo Mail")
    expect(method).to_have_value("login")
    # Choosing OAuth by hand shows the note too.
    method.select_option("oauthbearer")
    expect(note).to_be_visible()

    page.locator("#id_preset").select_option(label="Gmail / Google Workspace (OAuth 2.0)")
    expect(method).to_have_value("xoauth2")
    page.locator("#id_name").fill("Support (Google)")
    page.locator("#id_from_email").fill("support@example.test")
    page.locator("#id_username").fill("support@example.test")
    page.locator("#id_host").fill("127.0.0.1")  # no DNS here; the preset set the rest
    page.get_by_role("button", name="Save and continue editing").click()
    expect(messages(page)).to_contain_text("was added successfully")

    # The saved account has its OAuth section: provider Google, Connect, the redirect URI.
    section = page.locator("#oauth-group")
    expect(section).to_be_visible()
    expect(page.locator("#id_oauth-0-provider")).to_have_value("google")
    expect(section.get_by_role("button", name="Connect with Google")).to_be_visible()
    expect(section.locator(".oauth-redirect-uri")).to_have_text("/smtp/oauth/callback/")
    expect(password).to_be_hidden()
    shot(page, "admin-oauth-connect.png", "#oauth-group", width=1200)

    # A password preset hides it again; the Microsoft OAuth preset brings it back.
    page.locator("#id_preset").select_option(label="Yahoo Mail")
    expect(method).to_have_value("auto")
    expect(section).to_be_hidden()
    expect(note).to_be_hidden()
    expect(password).to_be_visible()
    page.locator("#id_preset").select_option(label="Microsoft 365 (OAuth 2.0)")
    expect(method).to_have_value("xoauth2")
    expect(section).to_be_visible()
    expect(page.locator("#id_oauth-0-provider")).to_have_value("microsoft")
    expect(note).to_be_hidden()  # the section itself is there


def test_my_smtp_settings_save_test_verify(
    page: Page,
    live_server: Any,
    server: SMTPTestServer,
    settings: Any,
    trusted_certificate: None,
    shot: Any,
) -> None:
    settings.MULTISMTP = SELF_SERVICE
    base = live_server.url
    UserFactory(username="carol", email="carol@example.test")  # staff, no permissions
    stranger = SmtpAccountFactory(owner=UserFactory(username="dave"), name="dave (personal)")
    log_in(page, base, "carol", PASSWORD)

    page.goto(f"{base}/smtp/")
    expect(page.locator("h1")).to_have_text("My SMTP settings")
    expect(page.locator("#id_from_email")).to_have_value("carol@example.test")
    expect(page.locator("#id_verify_certificates")).to_be_checked()
    fill_my_settings(page, server.port, USERS["alice"])
    page.get_by_role("button", name="Save").click()
    expect(messages(page)).to_have_text("Your SMTP settings were saved.")
    expect(page.locator(".multismtp-state")).to_contain_text("not verified yet")
    # The password is write-only: never sent back to the browser.
    expect(page.locator("#id_password")).to_have_value("")
    assert USERS["alice"] not in page.content()

    page.get_by_role("button", name="Test settings").click()
    expect(messages(page)).to_contain_text("The settings work:")
    assert server.received == []

    expect(page.locator("#id_recipient")).to_have_value("carol@example.test")
    page.get_by_role("button", name="Send code").click()
    expect(messages(page)).to_contain_text("A code was sent to carol@example.test.")
    code = code_from(server, 0)
    assert server.received[0].rcpt_tos == ["carol@example.test"]

    # A wrong code first: the form says so and the account stays unverified.
    page.locator("#id_code").fill("AAAAAAAA")
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator(".errorlist")).to_contain_text("That code is not right.")
    expect(page.locator(".multismtp-state")).to_contain_text("not verified yet")

    page.locator("#id_code").fill(code.lower())  # typed casually
    page.get_by_role("button", name="Confirm").click()
    expect(messages(page)).to_contain_text("The code is right: the account is verified.")
    expect(page.locator(".multismtp-verified")).to_have_text("verified")
    shot(page, "my-smtp-settings.png", "#header", "#content", width=1000)

    # Somebody else's account does not exist as far as carol can tell.
    response = page.goto(f"{base}/smtp/{stranger.pk}/")
    assert response is not None and response.status == 404


def test_my_smtp_settings_refuse_internal_hosts_and_explain_a_wrong_password(
    page: Page,
    live_server: Any,
    server: SMTPTestServer,
    settings: Any,
    trusted_certificate: None,
) -> None:
    settings.MULTISMTP = {"PURPOSES": {"billing": "Billing"}}  # ALLOW_INTERNAL_HOSTS off
    base = live_server.url
    UserFactory(username="erin", email="erin@example.test")
    log_in(page, base, "erin", PASSWORD)
    page.goto(f"{base}/smtp/")
    expect(page.locator("h1")).to_have_text("My SMTP settings")

    fill_my_settings(page, server.port, "my-everyday-password")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".field-host .errorlist")).to_contain_text(
        "resolves to an internal address"
    )

    settings.MULTISMTP = SELF_SERVICE
    # The password is never rendered back, so it is typed again.
    page.locator("#id_password").fill("my-everyday-password")
    page.get_by_role("button", name="Save").click()
    expect(messages(page)).to_have_text("Your SMTP settings were saved.")

    page.get_by_role("button", name="Test settings").click()
    error = page.locator("ul.messagelist li.error")
    expect(error).to_contain_text("The test failed (auth_failed 535")
    expect(error).to_contain_text("2-Step Verification")
    expect(error).to_contain_text("App Password")
    expect(page.locator(".multismtp-last-error")).to_contain_text("535")


# -- the outbox ---------------------------------------------------------------------------
def test_admin_outbox_shows_queued_mail_and_retries_it_now(
    page: Page, live_server: Any, smtp_server: SMTPTestServer, shot: Any, clock: Any
) -> None:
    from django_multismtp import worker
    from django_multismtp.backends import EmailBackend
    from django_multismtp.models import OutboxMessage
    from tests.smtp_servers import Fault
    from tests.test_outbox import message

    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    SmtpAccountFactory.for_server(smtp_server, name="Campaigns", is_site_default=True)
    # Postfix's message-rate limit: the account is paused (a greylisting-style "try again
    # later" would not pause it).
    smtp_server.add_fault(Fault.reply(450, "4.7.1 Error: too much mail from 127.0.0.1"))
    assert EmailBackend().send_messages([message("Spring newsletter")]) == 1
    row = OutboxMessage.objects.get()

    log_in(page, base, "admin", PASSWORD)
    page.goto(f"{base}/admin/django_multismtp/outboxmessage/")
    line = page.locator("#result_list tbody tr", has_text="Spring newsletter")
    expect(line.locator(".multismtp-status")).to_have_text("queued")
    # Cut between words in the list, the whole reply in the tooltip.
    expect(line).to_contain_text("450 4.7.1 Error: too much")
    expect(line.locator('[title*="too much mail from 127.0.0.1"]').first).to_be_attached()
    shot(page, "admin-outbox.png", "#changelist")

    # The 450 paused the account for a minute: clear that, then send the mail now.
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/")
    run_action(page, "clear_rate_limit", "Campaigns")
    page.goto(f"{base}/admin/django_multismtp/outboxmessage/")
    run_action(page, "retry_now", "Spring newsletter")
    expect(messages(page)).to_contain_text("1 message(s) will be sent by the next worker run.")
    row.refresh_from_db()
    assert row.next_attempt_at == clock()  # due now, not after its back-off

    result = worker.drain()  # the worker (cron, systemd, a task) comes by
    row.refresh_from_db()
    assert result.sent == 1, row.last_error
    page.reload()
    expect(line.locator(".multismtp-status")).to_have_text("sent")
    line.locator("th a").click()
    expect(page.locator(".field-possible_duplicate")).to_be_visible()
    expect(page.get_by_role("link", name="Attempts of this message")).to_be_visible()


def test_admin_warns_in_red_when_certificate_checks_are_turned_off(
    page: Page, live_server: Any, server: SMTPTestServer
) -> None:
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    account = SmtpAccountFactory.for_server(
        server, name="Relay", auth_method="auto", username="alice", password=USERS["alice"]
    )
    log_in(page, base, "admin", PASSWORD)
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/{account.pk}/change/")
    warning = page.locator(".multismtp-security-warning")
    expect(warning).to_have_count(0)

    page.locator("#id_verify_certificates").uncheck()
    page.get_by_role("button", name="Save and continue editing").click()
    expect(warning).to_have_count(1)
    expect(warning).to_contain_text("Certificate checks are off")
    expect(warning).to_have_css("color", "rgb(186, 33, 33)")  # red, as admin errors are
    # At the top of the form, above the server fields.
    top, host = warning.bounding_box(), page.locator("#id_host").bounding_box()
    assert top is not None and host is not None and top["y"] < host["y"]
