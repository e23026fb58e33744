"""What the outbox keeps in "retry" mode: only what waiting can fix (issue #13).

Throttling, 4xx replies, connection trouble and full sending limits wait in the outbox.
A wrong login, a TLS or certificate failure, an undecryptable password, an inactive
account asked for by name need a person: the caller hears at once (or, failing
silently, the message is not counted), unless the site opts in with
``MULTISMTP["OUTBOX_QUEUE_CONFIG_ERRORS"]``. Every deferral leaves a ``deferred`` row in
the delivery log. Real servers on 127.0.0.1, a real database, time through ``clock``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp import conf, limits
from django_multismtp.exceptions import SendFailed
from django_multismtp.message import MultiSMTPMessage
from django_multismtp.models import DeliveryLog, OutboxMessage
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer, use_mailers
from tests.smtp_servers import Fault

pytestmark = pytest.mark.django_db

ALICE = {"auth_method": "auto", "username": "alice", "password": USERS["alice"]}
WRONG = {"auth_method": "auto", "username": "alice", "password": "wrong-password"}


def message(subject: str = "Hello", **kwargs: Any) -> EmailMessage:
    return MultiSMTPMessage(subject=subject, body="Body\n", to=["to@example.test"], **kwargs)


def send(*messages: EmailMessage) -> int:
    return int(get_mailer().send_messages(list(messages)))


def log_rows() -> list[tuple[str, str]]:
    return list(DeliveryLog.objects.order_by("id").values_list("account_name", "outcome"))


@pytest.fixture(autouse=True)
def _retry_mode(settings: Any, mailer: None, clock: Any) -> None:
    assert conf.outbox_mode() == "retry"  # the default, which this file is about


def fail_silently(settings: Any) -> None:
    use_mailers(settings, default={"OPTIONS": {"fail_silently": True}})


# -- failures only a person can fix: raised, not queued -------------------------------------


def test_a_wrong_password_raises_at_once_and_is_not_queued(starttls_server):
    SmtpAccountFactory.for_server(starttls_server, name="A", is_site_default=True, **WRONG)
    msg = message()
    with pytest.raises(SendFailed) as caught:
        send(msg)
    assert caught.value.failure is not None
    assert caught.value.failure.outcome == "auth_failed" and caught.value.smtp_code == 535
    assert (msg.multismtp_status.outcome, msg.multismtp_status.queued) == ("auth_failed", False)
    assert not OutboxMessage.objects.exists()
    assert log_rows() == [("A", "auth_failed")]


def test_failing_silently_a_wrong_password_is_not_counted_as_sent(settings, starttls_server):
    fail_silently(settings)
    SmtpAccountFactory.for_server(starttls_server, name="A", is_site_default=True, **WRONG)
    msg = message()
    assert send(msg) == 0
    assert msg.multismtp_status.outcome == "auth_failed"
    assert not OutboxMessage.objects.exists()


def test_a_security_mode_that_does_not_match_the_server_raises(starttls_server):
    # STARTTLS answered with bytes that are not TLS: "check the mode matches the port".
    SmtpAccountFactory.for_server(starttls_server, name="A", is_site_default=True, **ALICE)
    starttls_server.add_fault(Fault.break_tls())
    with pytest.raises(SendFailed) as caught:
        send(message())
    assert caught.value.failure is not None and caught.value.failure.outcome == "tls_failed"
    assert "matches the port" in caught.value.hint
    assert not OutboxMessage.objects.exists()


def test_an_unverifiable_certificate_raises(implicit_server):
    SmtpAccountFactory.for_server(
        implicit_server, name="A", is_site_default=True, ca_file="", **ALICE
    )
    with pytest.raises(SendFailed) as caught:
        send(message())
    assert "certificate" in caught.value.hint
    assert not OutboxMessage.objects.exists()


def test_an_undecryptable_password_raises(settings, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, **ALICE)
    settings.FERNET_KEYS = ["a-key-that-never-wrote-it"]
    with pytest.raises(SendFailed) as caught:
        send(message())
    assert caught.value.failure is not None and caught.value.failure.outcome == "config_error"
    assert "FERNET_KEYS" in caught.value.hint
    assert not OutboxMessage.objects.exists()
    assert smtp_server.connections == 0


def test_the_site_may_opt_in_to_queue_configuration_errors(settings, starttls_server, clock):
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX_QUEUE_CONFIG_ERRORS": True}
    account = SmtpAccountFactory.for_server(
        starttls_server, name="A", is_site_default=True, **WRONG
    )
    msg = message()
    assert send(msg) == 1
    assert msg.multismtp_status.queued is True
    row = OutboxMessage.objects.get()
    assert "535" in row.last_error

    # Someone fixes the password; the worker sends it.
    account.password = USERS["alice"]
    account.save()
    clock.current = row.next_attempt_at + dt.timedelta(seconds=1)
    from django_multismtp import worker

    assert worker.drain().sent == 1
    assert len(starttls_server.received) == 1


# -- waiting can fix these: queued ----------------------------------------------------------


def test_connection_refused_is_still_queued(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    smtp_server.stop()
    msg = message()
    assert send(msg) == 1
    assert msg.multismtp_status.queued is True
    assert OutboxMessage.objects.get().last_error.startswith("Error connecting")


def test_a_4xx_on_one_account_keeps_the_message_although_the_next_has_a_wrong_login(
    smtp_server, starttls_server
):
    """The last failure needs a person, but the first account only asked to wait."""
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, priority=1)
    SmtpAccountFactory.for_server(starttls_server, name="B", priority=2, **WRONG)
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Temporary local problem"))
    msg = message()
    assert send(msg) == 1
    assert msg.multismtp_status.queued is True
    assert log_rows() == [("A", "transient"), ("B", "auth_failed")]
    assert OutboxMessage.objects.get().status == OutboxMessage.Status.QUEUED


# -- an account named explicitly --------------------------------------------------------


def test_an_inactive_named_account_is_a_configuration_error_not_a_rate_limit(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="resting", is_active=False)
    msg = message(smtp_account="resting")
    with pytest.raises(SendFailed) as caught:
        send(msg)
    failure = caught.value.failure
    assert failure is not None and failure.outcome == "config_error"
    assert "resting" in failure.text and "inactive" in failure.text
    assert "rate limit" not in str(caught.value)
    assert caught.value.account == "resting"
    assert not OutboxMessage.objects.exists()  # never queued for days
    assert smtp_server.connections == 0


def test_an_inactive_named_account_is_not_queued_even_when_errors_may_wait(settings, smtp_server):
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX_QUEUE_CONFIG_ERRORS": True}
    fail_silently(settings)
    SmtpAccountFactory.for_server(smtp_server, name="resting", is_active=False)
    msg = message(smtp_account="resting")
    assert send(msg) == 0
    assert msg.multismtp_status.outcome == "config_error"
    assert not OutboxMessage.objects.exists()


def test_a_skipped_named_account_is_named_in_the_log_of_the_account_that_sent(
    smtp_server, second_server
):
    SmtpAccountFactory.for_server(
        smtp_server, name="resting", from_email="sender@example.test", is_active=False
    )
    SmtpAccountFactory.for_server(second_server, name="spare", allowed_senders="example.test")
    msg = message(smtp_account="resting", from_email="sender@example.test")
    assert send(msg) == 1
    assert msg.multismtp_status.account == "spare"
    (row,) = DeliveryLog.objects.all()
    assert (row.account_name, row.outcome) == ("spare", "sent")
    assert "the account resting named by the message was skipped (inactive)" in row.reply_text
    assert "failover account for the same sender" in row.reply_text


def test_a_rate_limited_named_account_defers_visibly_and_queues(smtp_server, clock):
    account = SmtpAccountFactory.for_server(
        smtp_server, name="busy", rate_limited_until=clock() + dt.timedelta(minutes=5)
    )
    msg = message(smtp_account="busy")
    assert send(msg) == 1
    assert msg.multismtp_status.queued is True
    (row,) = DeliveryLog.objects.all()
    assert (row.account_id, row.outcome) == (account.pk, "deferred")
    assert "rate limited until" in row.reply_text
    assert OutboxMessage.objects.get().next_attempt_at == account.rate_limited_until


# -- deferrals are visible ------------------------------------------------------------------


def test_a_full_limit_writes_a_deferred_row_and_the_message_waits(smtp_server, clock):
    account = SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, limit_per_minute=1
    )
    first, second = message("one"), message("two")
    assert send(first, second) == 2
    assert (first.multismtp_status.outcome, second.multismtp_status.outcome) == ("sent", "queued")
    deferred = DeliveryLog.objects.get(outcome="deferred")
    assert deferred.account_id == account.pk
    assert deferred.message_id == second.multismtp_status.message_id
    free = limits.free_at(account, clock())
    assert f"free again at {free.isoformat(timespec='seconds')}" in deferred.reply_text
    assert deferred.get_outcome_display() == "deferred"
    assert OutboxMessage.objects.get().next_attempt_at >= free


def test_a_queue_config_errors_setting_that_is_not_a_bool_is_refused(settings):
    from django_multismtp.checks import check_settings

    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX_QUEUE_CONFIG_ERRORS": "yes"}
    (error,) = [e for e in check_settings() if e.id == "django_multismtp.E005"]
    assert "OUTBOX_QUEUE_CONFIG_ERRORS" in error.msg
