"""The delivery log answers "did bob's password-reset mail go out?".

Messages go through a real SMTP server on 127.0.0.1; the admin is searched for the
recipient, in each LOG_RECIPIENTS mode.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp.models import DeliveryLog
from django_multismtp.state import hash_address
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer

pytestmark = pytest.mark.django_db

LOG = "/admin/django_multismtp/deliverylog/"


@pytest.fixture
def sent(mailer: Any, smtp_server: Any, clock: Any) -> Any:
    def send(settings: Any, mode: str | None = None) -> DeliveryLog:
        if mode is not None:
            settings.MULTISMTP = {**settings.MULTISMTP, "LOG_RECIPIENTS": mode}
        SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
        reset = EmailMessage(
            "Reset your password", "Click", "from@example.test", ["Bob@Example.test"]
        )
        other = EmailMessage("Weekly news", "News", "from@example.test", ["carol@example.test"])
        get_mailer().send_messages([reset, other])
        return DeliveryLog.objects.get(subject="Reset your password")

    return send


def found(client: Any, query: str) -> list[str]:
    response = client.get(LOG, {"q": query})
    assert response.status_code == 200
    return sorted(row.subject for row in response.context["cl"].result_list)


def test_plain_recipients_and_subject_are_logged_and_searchable(admin_client, settings, sent):
    row = sent(settings)
    assert (row.subject, row.recipients, row.outcome) == (
        "Reset your password",
        "Bob@Example.test",
        "sent",
    )
    assert found(admin_client, "bob@example.test") == ["Reset your password"]
    assert found(admin_client, "password") == ["Reset your password"]
    response = admin_client.get(LOG)
    # Seconds in the time column: attempts of one message often share a minute.
    shown = response.context["cl"].model_admin.time(row)
    assert re.search(r">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d<", shown)
    assert shown in response.content.decode()


def test_hashed_recipients_are_unreadable_but_found_by_the_whole_address(
    admin_client, settings, sent
):
    row = sent(settings, "hashed")
    assert "bob" not in row.recipients.lower()
    assert row.recipients == hash_address("bob@example.test")
    assert found(admin_client, "BOB@example.test") == ["Reset your password"]
    assert found(admin_client, "bob") == []


def test_off_logs_no_recipients(admin_client, settings, sent):
    row = sent(settings, "off")
    assert row.recipients == "" and row.recipient_domains == "example.test"
    assert found(admin_client, "bob@example.test") == []


def test_filters_by_outcome_account_and_date(admin_client, settings, sent):
    sent(settings)
    response = admin_client.get(LOG)
    titles = [str(spec.title) for spec in response.context["cl"].filter_specs]
    assert titles == ["outcome", "account", "time"]
    assert found(admin_client, "") == ["Reset your password", "Weekly news"]
    assert len(admin_client.get(LOG, {"outcome": "sent"}).context["cl"].result_list) == 2
