"""The examples of docs/testing-your-app.rst, as written there: they must stay true.

The fixtures and the first test are copied from the page; keep the two in step.
"""

import django
import pytest
from django.core import mail
from django.core.mail import send_mail

from django_multismtp import worker
from django_multismtp.hints import sending_as
from django_multismtp.message import MultiSMTPMessage
from django_multismtp.models import SmtpAccount

TEST_BACKEND = "django_multismtp.backends.test.EmailBackend"


@pytest.fixture
def multismtp_backend(settings):
    if django.VERSION >= (6, 1):
        settings.MAILERS = {"default": {"BACKEND": TEST_BACKEND}}
    else:
        settings.EMAIL_BACKEND = TEST_BACKEND


@pytest.fixture
def accounts(django_user_model):
    alice = django_user_model.objects.create_user("alice", is_staff=True)
    SmtpAccount.objects.create(
        name="site",
        purpose="system",
        is_site_default=True,
        from_email="noreply@example.com",
        host="smtp.example.com",
    )
    SmtpAccount.objects.create(
        name="newsletter",
        purpose="campaigns",
        from_email="news@example.com",
        host="smtp.example.com",
    )
    SmtpAccount.objects.create(
        name="alice's mailbox",
        owner=alice,
        from_email="alice@example.com",
        host="smtp.example.com",
    )
    return alice


@pytest.mark.django_db
def test_each_message_takes_its_account(multismtp_backend, accounts):
    send_mail("Welcome", "Hello!", None, ["new.user@example.com"])
    with sending_as(user=accounts):
        send_mail("Re: your order", "...", None, ["customer@example.com"])
    MultiSMTPMessage(
        subject="Spring sale",
        body="...",
        to=["customer@example.com"],
        smtp_purpose="campaigns",
    ).send()

    assert [m.multismtp_account for m in mail.outbox] == [
        "site",
        "alice's mailbox",
        "newsletter",
    ]
    assert b"From: alice@example.com" in mail.outbox[1].multismtp_wire


@pytest.mark.django_db
def test_the_outbox_example(multismtp_backend, accounts, settings):
    settings.MULTISMTP = {"OUTBOX": "always"}
    send_mail("Welcome", "Hello!", None, ["new.user@example.com"])
    assert mail.outbox == []
    result = worker.drain()
    assert result.sent == 1
    assert mail.outbox[0].multismtp_account == "site"


@pytest.mark.django_db
def test_the_sent_message_keeps_its_status(multismtp_backend, accounts):
    m = MultiSMTPMessage(subject="x", body="...", to=["c@example.com"], smtp_purpose="campaigns")
    m.send()
    assert m.multismtp_status.outcome == "sent"
    assert m.multismtp_status.account == "newsletter"
