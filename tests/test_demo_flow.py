"""The newcomer's flow in `make demo`, against the demo's own SMTP sink.

Create an account in the admin pointing at the sink's open port, test the connection
(good and wrong password), send the confirmation code, read it from the sink's log (as
the demo's /sink/ page does) and confirm it: the account ends up verified.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from django.core.cache import cache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "example_project"))

from demo_site.demo_data import OPEN_MAILBOX, OPEN_PASSWORD, mailboxes  # noqa: E402
from demo_site.sink import Sink, read_log  # noqa: E402

from django_multismtp.models import SmtpAccount  # noqa: E402

CHANGELIST = "/admin/django_multismtp/smtpaccount/"


@pytest.fixture
def sink(tmp_path):
    with Sink(mailboxes(), tmp_path / "sink.jsonl", echo=lambda line: None, base_port=None) as s:
        yield s


def add_account(client, sink, name, password):
    data = {
        "name": name,
        "purpose": "system",
        "priority": "100",
        "from_email": "newcomer@demo.test",
        "host": "127.0.0.1",
        "port": str(sink.port_of(OPEN_MAILBOX)),
        "security": "none",
        "verify_certificates": "on",
        "timeout": "10",
        "auth_method": "login",
        "username": "newcomer",
        "password": password,
        "max_connections": "1",
        "is_active": "on",
    }
    response = client.post(CHANGELIST + "add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return SmtpAccount.objects.get(name=name)


@pytest.mark.django_db
def test_create_test_send_code_and_confirm_against_the_demo_sink(admin_client, sink):
    cache.clear()
    good = add_account(admin_client, sink, "Mine", OPEN_PASSWORD)
    bad = add_account(admin_client, sink, "Typo", "not-the-password")

    page = admin_client.post(
        CHANGELIST, {"action": "test_connection", "_selected_action": [good.pk, bad.pk]}
    ).content.decode()
    assert re.search(r"<td>Mine</td>\s*<td><strong[^>]*>OK</strong>", page)
    assert "App Password" in page  # the wrong password's hint

    response = admin_client.post(
        CHANGELIST,
        {
            "action": "send_test_email",
            "_selected_action": [good.pk],
            "post": "yes",
            "recipient": "me@demo.test",
        },
    )
    assert response.status_code == 302
    (entry,) = read_log(sink.log_path)
    assert entry["login"] == "newcomer" and entry["port"] == sink.port_of(OPEN_MAILBOX)
    code = entry["subject"].rsplit(":", 1)[1].strip()

    confirm = admin_client.post(response["Location"], {"code": code})
    assert confirm.status_code == 302
    good.refresh_from_db()
    assert good.verified_at is not None
    changelist = admin_client.get(CHANGELIST).content.decode()
    assert "multismtp-status-verified" in changelist
