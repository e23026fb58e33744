"""The app's own admin pages look like Django's on every supported Django line.

Django 6.1 writes and styles breadcrumbs as ``<ol class="breadcrumbs">``; a page that
still writes 5.2's ``<div class="breadcrumbs">`` shows them as bare text under 6.1. Each
of our pages is compared, in headless Chromium, with Django's own changelist on the same
line: the trail must have the same background as Django's and sit right under #header.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from tests import test_browser
from tests.factories import SmtpAccountFactory, UserFactory
from tests.smtp_servers import SMTPTestServer
from tests.test_browser import PASSWORD, SELF_SERVICE, log_in, run_action

# The Playwright fixtures of the browser tests (module-scoped there, see its docstring).
pytestmark = test_browser.pytestmark
browser_type_launch_args = test_browser.browser_type_launch_args
playwright = test_browser.playwright
browser = test_browser.browser
browser_context_args = test_browser.browser_context_args
page = test_browser.page
server = test_browser.server
_fresh_rate_limits = test_browser._fresh_rate_limits
shot = test_browser.shot

TRAIL = "nav .breadcrumbs"


def trail_style(page: Page) -> dict[str, Any]:
    """What decides whether the trail looks like Django's: colour, and its place."""
    result: dict[str, Any] = page.evaluate(
        """() => {
            const trail = document.querySelector('nav .breadcrumbs');
            const header = document.querySelector('#header');
            const style = getComputedStyle(trail);
            return {
                tag: trail.tagName,
                background: style.backgroundColor,
                padding: style.paddingLeft,
                gap: trail.getBoundingClientRect().top - header.getBoundingClientRect().bottom,
                width: trail.getBoundingClientRect().width - header.getBoundingClientRect().width,
            };
        }"""
    )
    return result


def test_breadcrumbs_of_our_pages_are_styled_as_djangos(
    page: Page, live_server: Any, server: SMTPTestServer, settings: Any
) -> None:
    settings.MULTISMTP = SELF_SERVICE
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    account = SmtpAccountFactory.for_server(server, name="Support", username="", password="")
    log_in(page, base, "admin", PASSWORD)

    page.goto(f"{base}/admin/django_multismtp/smtpaccount/")
    reference = trail_style(page)
    assert reference["background"] not in ("rgba(0, 0, 0, 0)", "transparent"), reference

    def check(what: str, *texts: str) -> None:
        style = trail_style(page)
        assert style == reference, (what, style, reference)
        for text in texts:
            expect(page.locator(TRAIL)).to_contain_text(text)

    run_action(page, "test_connection", "Support")
    expect(page.locator("h1")).to_have_text("Connection test results")
    check("test results", "Home", "SMTP accounts", "Accounts", "Connection test results")

    page.goto(f"{base}/admin/django_multismtp/smtpaccount/")
    run_action(page, "send_test_email", "Support")
    expect(page.locator("h1")).to_contain_text("confirmation code")
    check("send code", "Home", "SMTP accounts")

    page.goto(f"{base}/admin/django_multismtp/smtpaccount/{account.pk}/confirm/")
    check("confirm code", "Home", "Support", "Confirm code")

    UserFactory(username="carol", email="carol@example.test")
    page.context.clear_cookies()
    log_in(page, base, "carol", PASSWORD)
    page.goto(f"{base}/smtp/")
    check("my SMTP settings", "Home", "My SMTP settings")


def test_the_change_page_has_test_connection_and_send_test_email_buttons(
    page: Page, live_server: Any, server: SMTPTestServer
) -> None:
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    account = SmtpAccountFactory.for_server(server, name="Support", username="", password="")
    log_in(page, base, "admin", PASSWORD)
    change = f"{base}/admin/django_multismtp/smtpaccount/{account.pk}/change/"

    page.goto(change)
    page.get_by_role("button", name="Test connection").click()
    expect(page.locator("h1")).to_have_text("Connection test results")
    expect(page.locator("table.multismtp-results")).to_contain_text("Support")

    page.goto(change)
    page.get_by_role("button", name="Send test e-mail").click()
    expect(page.locator("h1")).to_contain_text("confirmation code")

    # The add form starts with the preset, and has no State section yet.
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/add/")
    headings = page.locator("fieldset h2").all_inner_texts()
    assert headings[0].strip().lower() == "provider" and "State" not in headings
    expect(page.get_by_role("button", name="Test connection")).to_have_count(0)


# -- the lists on a laptop: decisive columns stay on screen ---------------------------------
SCREENS = [(1366, 900), (1920, 1080)]
#: Per list, the columns that decide "does it work / did it go out / why not".
DECISIVE = {
    "smtpaccount": ["name", "status_badge"],
    "deliverylog": ["time", "subject_short", "outcome", "reply_code"],
    "outboxmessage": ["subject_short", "status_badge", "next_attempt", "last_error_short"],
}


def long_lived_data(server: SMTPTestServer) -> None:
    """Rows with the long texts real sites have: replies, subjects, addresses."""
    import datetime as dt

    from django.utils import timezone

    from django_multismtp.models import DeliveryLog, OutboxMessage

    now = timezone.now()
    error = (
        "535 5.7.8 Username and Password not accepted. For more information, go to "
        "https://support.google.com/mail/?p=BadCredentials"
    )
    broken = SmtpAccountFactory.for_server(
        server,
        name="Newsletter (marketing department, EU)",
        from_email="newsletter-marketing-department@example.test",
        last_error=error,
        last_error_at=now,
    )
    SmtpAccountFactory.for_server(server, name="Support", verified_at=now)
    subject = "Your password reset link for the customer portal of Example Corporation"
    for i in range(3):
        DeliveryLog.objects.create(
            account=broken,
            account_name=broken.name,
            message_id=f"<{i}.{'x' * 40}@mail.example.test>",
            subject=subject,
            recipients="bob.longname-with-a-department@customers.example.test",
            recipient_count=1,
            recipient_domains="customers.example.test",
            outcome="auth_failed",
            reply_code=535,
            reply_text=error,
            created_at=now - dt.timedelta(seconds=i),
        )
        OutboxMessage.objects.create(
            message_id=f"<q{i}.{'y' * 40}@mail.example.test>",
            subject=subject,
            from_email="newsletter-marketing-department@example.test",
            envelope_recipients="bob.longname-with-a-department@customers.example.test",
            data=b"Subject: x\r\n\r\nx",
            next_attempt_at=now + dt.timedelta(minutes=5),
            created_at=now,
            last_error=error,
            attempts=1,
            smtp_attempts=1,
        )


@pytest.mark.parametrize(("width", "height"), SCREENS, ids=["1366", "1920"])
def test_decisive_columns_fit_the_screen_with_the_sidebar_open(
    page: Page, live_server: Any, server: SMTPTestServer, shot: Any, width: int, height: int
) -> None:
    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    long_lived_data(server)
    page.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'true')")
    page.set_viewport_size({"width": width, "height": height})
    log_in(page, base, "admin", PASSWORD)
    for model, columns in DECISIVE.items():
        page.goto(f"{base}/admin/django_multismtp/{model}/")
        expect(page.locator("#nav-sidebar")).to_be_visible()
        for column in columns:
            cells = page.locator(f"#result_list .column-{column}, #result_list .field-{column}")
            assert cells.count() > 1, (model, column)
            # Within the window and not scrolled out of the list's own box.
            frame = page.locator("#changelist .results").bounding_box()
            assert frame is not None
            right = min(width, frame["x"] + frame["width"])
            for box in (cells.nth(i).bounding_box() for i in range(cells.count())):
                assert box is not None, (model, column)
                assert box["x"] >= 0 and box["x"] + box["width"] <= right, (model, column, box)
        shot(page, f"admin-{model}-{width}.png")
        # Long texts are truncated: a row is at most three lines tall, not six.
        row = page.locator("#result_list tbody tr").first.bounding_box()
        assert row is not None and row["height"] < 90, (model, row)


def test_a_sent_outbox_row_reads_as_sent(page: Page, live_server: Any) -> None:
    """Not "Attempts 0", "reached its sending limit" and a next attempt on a sent row."""
    from django.utils import timezone

    from django_multismtp.models import OutboxMessage

    base = live_server.url
    get_user_model().objects.create_superuser("admin", "admin@example.test", PASSWORD)
    now = timezone.now()
    OutboxMessage.objects.create(
        message_id="<sent@mail.example.test>",
        subject="Welcome",
        envelope_recipients="bob@example.test",
        data=b"Subject: Welcome\r\n\r\nx",
        status="sent",
        sent_at=now,
        created_at=now,
        next_attempt_at=now,
        smtp_attempts=1,
        deferrals=2,
        last_error="Account A reached its sending limit",
    )
    log_in(page, base, "admin", PASSWORD)
    page.goto(f"{base}/admin/django_multismtp/outboxmessage/")
    row = page.locator("#result_list tbody tr", has_text="Welcome")
    expect(row.locator(".field-status_badge")).to_have_text("sent")
    expect(row.locator(".field-next_attempt")).to_have_text("-")
    expect(row.locator(".field-last_error_short")).to_have_text("-")  # the admin's empty value
    expect(row.locator(".field-tries")).to_have_text("1 SMTP attempt, 2 deferrals")
    expect(page.locator("#result_list")).not_to_contain_text("sending limit")
