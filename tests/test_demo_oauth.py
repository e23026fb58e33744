"""The demo's OAuth 2.0 flow in headless Chromium, with no Microsoft or Google account.

``manage.py demo`` runs as a newcomer starts it (its own process, database and port, as in
test_demo_flow.py). In the browser: log in, open the seeded "Demo OAuth mailbox" account,
click "Connect", sign in and allow on the demo's own authorization server
(demo_site/oauth_server.py), and land back on the account, connected and tested. A message
sent through it reaches the demo's SMTP sink with ``AUTH XOAUTH2`` and a bearer token the
sink checked with that server. Revoking the grant on the server's page (consent
withdrawn) then turns the account into *needs reconnect* at the next send, and the demo
says so.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

EXAMPLE_PROJECT = Path(__file__).resolve().parent.parent / "example_project"
sys.path.insert(0, str(EXAMPLE_PROJECT))

from demo_site import oauth_server  # noqa: E402
from demo_site.demo_data import ADMIN, OAUTH_ACCOUNT  # noqa: E402
from demo_site.sink import free_port, read_log  # noqa: E402

from tests import processes, test_browser  # noqa: E402
from tests.test_demo_flow import serves, start_demo  # noqa: E402

# The module-scoped Playwright fixtures of the admin's browser tests (see their docstring).
playwright = test_browser.playwright
browser = test_browser.browser
browser_type_launch_args = test_browser.browser_type_launch_args
browser_context_args = test_browser.browser_context_args
page = test_browser.page

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running demo: its base URL and its directory."""
    demo_dir, port = tmp_path / "demo", free_port()
    log = tmp_path / "demo.log"
    process: subprocess.Popen[bytes] = start_demo(demo_dir, port, log)
    try:

        def up() -> bool:
            assert process.poll() is None, log.read_text()
            return serves(port)

        processes.wait_until(up, timeout=120, what="the demo serving")
        yield f"http://127.0.0.1:{port}", demo_dir
    finally:
        processes.stop(process)


def sent_through_oauth(demo_dir: Path) -> list[dict[str, Any]]:
    return [e for e in read_log(demo_dir / "sink.jsonl") if e.get("account") == OAUTH_ACCOUNT]


def test_connect_the_demo_oauth_mailbox_and_send_through_it(
    page: Page, demo: tuple[str, Path]
) -> None:
    base, demo_dir = demo
    page.goto(f"{base}/admin/login/")
    page.locator("#id_username").fill(ADMIN[0])
    page.locator("#id_password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()

    # The home page tells a newcomer where to start.
    page.goto(f"{base}/")
    expect(page.locator("#demo-oauth")).to_contain_text(oauth_server.MAILBOX)
    page.locator("#demo-oauth").get_by_role("link", name=OAUTH_ACCOUNT).click()
    expect(page.locator(".oauth-state")).to_have_text("not connected")
    expect(page.locator(".oauth-redirect-uri")).to_have_text("/smtp/oauth/callback/")

    # Connect: the demo's own authorization server signs the mailbox in and asks consent.
    page.get_by_role("button", name="Connect with OAuth 2.0").click()
    expect(page).to_have_url(re.compile(re.escape(f"{base}/oauth/authorize/?")))
    assert "code_challenge_method=S256" in page.url
    page.locator("input[name=password]").fill("wrong")
    page.get_by_role("button", name="Sign in and allow").click()
    expect(page.locator("#oauth-problem")).to_have_text("Wrong mailbox or password.")
    page.locator("input[name=password]").fill(oauth_server.MAILBOX_PASSWORD)
    page.get_by_role("button", name="Sign in and allow").click()

    # Back on the account: connected, and the connection test (AUTH XOAUTH2) passed.
    expect(page.locator("ul.messagelist")).to_contain_text("Connected; the connection test passed")
    expect(page.locator(".oauth-state")).to_have_text("connected")

    # A message through it: the sink took it with AUTH XOAUTH2 as the mailbox.
    page.goto(f"{base}/")
    page.get_by_role("button", name="Send through the OAuth mailbox").click()
    expect(page.locator("ul.messages")).to_contain_text(f"through the account “{OAUTH_ACCOUNT}”")
    (entry,) = sent_through_oauth(demo_dir)
    assert entry["auth"] == "XOAUTH2" and entry["login"] == oauth_server.MAILBOX
    assert entry["mail_from"] == oauth_server.MAILBOX

    # Consent withdrawn at the provider: the next send finds the token refused and the
    # refresh token revoked, so the account needs reconnecting and nothing is sent.
    page.goto(f"{base}/oauth/")
    expect(page.locator("td").filter(has_text=oauth_server.MAILBOX)).to_have_count(1)
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("td").filter(has_text="No grant yet")).to_have_count(1)
    page.goto(f"{base}/")
    page.get_by_role("button", name="Send through the OAuth mailbox").click()
    expect(page.locator("ul.messages .error")).to_contain_text("not sent")
    assert len(sent_through_oauth(demo_dir)) == 1
    page.goto(f"{base}/admin/django_multismtp/smtpaccount/")
    expect(page.locator("tr", has_text=OAUTH_ACCOUNT)).to_contain_text("needs reconnect")
