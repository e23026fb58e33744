"""The account pages warn in red when settings expose the password or the mail (#13).

Certificate checks off, or plain SMTP to a host that is not this machine: the admin's
change page and the "My SMTP settings" page show a clear message above the form.
"""

from __future__ import annotations

import pytest
from django.test import Client

from django_multismtp.exposure import is_local_host, security_warnings
from tests.factories import SmtpAccountFactory, UserFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/django_multismtp/smtpaccount/"
WARNING = 'class="errornote multismtp-security-warning"'


def warnings_on(html: str) -> list[str]:
    """The warnings' texts, in page order, and check they come before the form's fields."""
    found = []
    position = 0
    while (start := html.find(WARNING, position)) != -1:
        text_start = html.index(">", start) + 1
        found.append(html[text_start : html.index("</p>", text_start)])
        position = text_start
    if found:
        assert html.find(WARNING) < html.find('name="host"')  # at the top of the form
    return found


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("mail.localhost", True),
        ("smtp.example.com", False),
        ("10.0.0.5", False),
        ("", False),
    ],
)
def test_local_hosts(host, local):
    assert is_local_host(host) is local


def test_plain_smtp_to_a_remote_host_is_warned_about_in_the_admin(admin_client):
    account = SmtpAccountFactory(host="smtp.example.com", port=25, security="none")
    html = admin_client.get(f"{CHANGELIST}{account.pk}/change/").content.decode()
    (warning,) = warnings_on(html)
    assert "plain SMTP for smtp.example.com" in warning and "unencrypted" in warning


def test_certificate_checks_off_are_warned_about_in_the_admin(admin_client):
    account = SmtpAccountFactory(
        host="smtp.example.com", port=587, security="starttls", verify_certificates=False
    )
    html = admin_client.get(f"{CHANGELIST}{account.pk}/change/").content.decode()
    (warning,) = warnings_on(html)
    assert "Certificate checks are off" in warning


def test_safe_settings_and_local_plain_smtp_show_no_warning(admin_client):
    safe = SmtpAccountFactory(host="smtp.example.com", port=587, security="starttls")
    local = SmtpAccountFactory(host="127.0.0.1", port=2525, security="none")
    for account in (safe, local):
        html = admin_client.get(f"{CHANGELIST}{account.pk}/change/").content.decode()
        assert warnings_on(html) == []
    assert warnings_on(admin_client.get(f"{CHANGELIST}add/").content.decode()) == []


def test_both_problems_give_both_warnings():
    assert len(security_warnings("smtp.example.com", "none", False)) == 1  # plain: no certs
    assert len(security_warnings("smtp.example.com", "opportunistic", False)) == 1
    assert security_warnings("smtp.example.com", "tls", True) == []


def test_the_self_service_page_warns_its_owner_too():
    user = UserFactory(username="sam", is_staff=True)
    account = SmtpAccountFactory(
        owner=user,
        host="smtp.example.com",
        port=587,
        security="starttls",
        verify_certificates=False,
        public_host_only=True,
    )
    client = Client()
    client.force_login(user)
    html = client.get(f"/smtp/{account.pk}/").content.decode()
    (warning,) = warnings_on(html)
    assert "Certificate checks are off" in warning
