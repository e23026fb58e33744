"""The outbox: what is queued, what is not, and how a worker sends it later.

Real SMTP servers on 127.0.0.1 and a real database throughout; time moves only through
the ``clock`` fixture, so back-offs and leases are exercised without waiting.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_multismtp import outbox, worker
from django_multismtp.exceptions import MultiSMTPConfigurationError, SendFailed
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = pytest.mark.django_db

THROTTLE = "4.7.0 Throttling failure: Maximum sending rate exceeded"
Status = OutboxMessage.Status


def message(subject: str = "Hello", **kw: Any) -> EmailMessage:
    kw.setdefault("to", ["to@example.test"])
    return EmailMessage(subject=subject, body=f"Body of {subject}\n", **kw)


def send(*messages: EmailMessage) -> int:
    return int(get_mailer().send_messages(list(messages)))


def outbox_mode(settings: Any, mode: str, **extra: Any) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": mode, **extra}


def received_ids(server: SMTPTestServer) -> list[str]:
    return [str(r.message()["Message-ID"]) for r in server.received]


@pytest.fixture
def account(mailer, smtp_server, clock) -> SmtpAccount:  # type: ignore[no-untyped-def]
    return SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)


# -- what is queued -----------------------------------------------------------------------


def test_a_throttled_message_is_queued_then_sent_by_a_worker(account, smtp_server, clock):
    smtp_server.add_fault(Fault.reply(454, THROTTLE))
    msg = message()

    assert send(msg) == 1  # accepted for later delivery
    assert msg.multismtp_status.outcome == "queued"
    assert msg.multismtp_status.queued is True
    assert "454" in msg.multismtp_status.error
    assert smtp_server.received == []
    row = OutboxMessage.objects.get()
    assert row.status == Status.QUEUED
    assert (row.attempts, row.deferrals, row.smtp_attempts) == (1, 0, 1)
    assert row.message_id == msg.multismtp_status.message_id
    assert row.recipients() == ["to@example.test"]
    assert "454" in row.last_error and row.last_error_code == 454
    # The account is paused for a minute (THROTTLE_BACKOFF); the row waits as long.
    account.refresh_from_db()
    assert row.next_attempt_at == account.rate_limited_until == clock() + dt.timedelta(minutes=1)

    assert worker.drain().sent == 0  # not due yet
    clock.advance(minutes=1)
    result = worker.drain()

    assert (result.sent, result.retrying, result.failed) == (1, 0, 0)
    assert received_ids(smtp_server) == [row.message_id]  # the same Message-ID
    row.refresh_from_db()
    assert row.status == Status.SENT
    assert row.sent_by == account
    assert row.sent_at == clock()
    assert (row.smtp_attempts, row.locked_by, row.locked_until) == (2, "", None)
    assert list(DeliveryLog.objects.order_by("id").values_list("outcome", "attempt")) == [
        ("throttled", 1),
        ("sent", 2),
    ]


def test_a_message_over_every_limit_is_deferred_without_touching_a_server(
    mailer, smtp_server, clock
):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, limit_per_minute=1)
    first, second = message("one"), message("two")

    assert send(first, second) == 2

    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["one"]
    assert second.multismtp_status.outcome == "queued"
    row = OutboxMessage.objects.get()
    assert (row.subject, row.attempts, row.deferrals, row.smtp_attempts) == ("two", 0, 1, 0)
    assert "sending limit" in row.last_error
    clock.advance(minutes=1)
    assert worker.drain().sent == 1
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["one", "two"]


@pytest.mark.parametrize(
    "fault",
    [
        Fault.reply(550, "5.1.1 User unknown", stage="RCPT"),
        Fault.reply(554, "5.7.1 Message rejected as spam"),
    ],
    ids=["550-rcpt", "554-data"],
)
def test_permanent_failures_raise_and_are_never_queued(account, smtp_server, fault):
    smtp_server.add_fault(fault)
    with pytest.raises(SendFailed) as caught:
        send(message())
    assert str(fault.code) in str(caught.value)
    assert not OutboxMessage.objects.exists()
    assert DeliveryLog.objects.get().outcome == "permanent"


def test_fail_silently_still_queues_and_never_drops(settings, smtp_server, clock):
    from tests.mailers import use_mailers

    use_mailers(settings, default={"OPTIONS": {"fail_silently": True}})
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    smtp_server.add_fault(Fault.disconnect())
    assert send(message()) == 1
    assert OutboxMessage.objects.get().status == Status.QUEUED


def test_outbox_off_raises_instead_of_queueing(settings, account, smtp_server):
    outbox_mode(settings, "off")
    smtp_server.add_fault(Fault.reply(454, THROTTLE))
    with pytest.raises(SendFailed, match="454"):
        send(message())
    assert not OutboxMessage.objects.exists()


def test_unroutable_mail_is_a_configuration_error_even_in_always_mode(settings, mailer):
    outbox_mode(settings, "always")
    settings.MULTISMTP = {**settings.MULTISMTP, "USE_FALLBACK_SERVER": False}
    with pytest.raises(MultiSMTPConfigurationError, match="No SMTP account matches"):
        send(message())
    assert not OutboxMessage.objects.exists()


# -- always mode --------------------------------------------------------------------------


def test_always_mode_queues_without_smtp_and_the_worker_applies_the_accounts_sender(
    settings, mailer, smtp_server, clock
):
    outbox_mode(settings, "always")
    SmtpAccountFactory.for_server(
        smtp_server,
        name="A",
        is_site_default=True,
        from_email="noreply@brand.test",
        from_name="Brand Ünïcode",
        reply_to="help@brand.test",
    )
    attachment = bytes(range(256)) * 40
    msg = message("Grüße", headers={"X-Keep": "me"})
    msg.attach("data.bin", attachment, "application/octet-stream")

    assert send(msg) == 1
    assert smtp_server.received == []
    row = OutboxMessage.objects.get()
    assert (row.status, row.attempts, row.deferrals, row.last_error) == ("queued", 0, 0, "")
    assert row.next_attempt_at == clock()
    assert row.uses_default_from is True

    assert worker.drain().sent == 1
    (received,) = smtp_server.received
    parsed = email.message_from_bytes(received.data, policy=email.policy.default)
    assert parsed["From"].addresses[0].addr_spec == "noreply@brand.test"
    assert parsed["From"].addresses[0].display_name == "Brand Ünïcode"
    assert str(parsed["Reply-To"]) == "help@brand.test"
    assert str(parsed["Subject"]) == "Grüße"
    assert parsed["X-Keep"] == "me"
    assert parsed["Message-ID"] == row.message_id
    assert received.mail_from == "noreply@brand.test"
    (part,) = [p for p in parsed.iter_attachments()]
    assert part.get_content() == attachment


def test_always_mode_keeps_a_callers_own_from_and_reply_to(settings, mailer, smtp_server):
    outbox_mode(settings, "always")
    SmtpAccountFactory.for_server(
        smtp_server,
        name="A",
        is_site_default=True,
        from_email="noreply@brand.test",
        reply_to="help@brand.test",
        allowed_senders="own.test",
    )
    send(message(from_email="Me <me@own.test>", reply_to=["back@own.test"]))
    worker.drain()
    (received,) = smtp_server.received
    parsed = received.message()
    assert str(parsed["From"]) == "Me <me@own.test>"
    assert str(parsed["Reply-To"]) == "back@own.test"


def test_queueing_a_large_batch_costs_the_same_queries_as_a_small_one(settings, account):
    outbox_mode(settings, "always")

    def queries(n: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert send(*(message(f"m{i}") for i in range(n))) == n
        return len(captured.captured_queries)

    assert queries(10) == queries(1000)
    assert OutboxMessage.objects.count() == 1010


# -- back-off and giving up ---------------------------------------------------------------


def test_retries_back_off_exponentially_and_give_up_after_max_attempts(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "retry", OUTBOX_MAX_ATTEMPTS=4)
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Temporary local problem", times=None))
    assert send(message()) == 1
    row = OutboxMessage.objects.get()
    waits = []
    while row.status == Status.QUEUED:
        waits.append(row.next_attempt_at - clock())
        clock.current = row.next_attempt_at
        worker.drain()
        row.refresh_from_db()

    assert waits == [dt.timedelta(minutes=m) for m in (1, 2, 4)]
    assert row.status == Status.FAILED
    assert row.attempts == 4
    assert row.last_error.startswith("Gave up after 4 attempts. 451")
    assert len(smtp_server.received) == 0
    assert DeliveryLog.objects.filter(outcome="transient").count() == 4


def test_back_off_is_capped(settings):
    settings.MULTISMTP = {
        **settings.MULTISMTP,
        "OUTBOX_RETRY_BACKOFF": 30,
        "OUTBOX_RETRY_BACKOFF_MAX": dt.timedelta(minutes=5),
    }
    delays = [outbox.retry_delay(n).total_seconds() for n in range(1, 8)]
    assert delays == [30, 60, 120, 240, 300, 300, 300]


def test_a_retry_waits_for_every_candidates_rate_limit(account, smtp_server, clock):
    account.rate_limited_until = clock() + dt.timedelta(hours=3)
    account.save()
    assert send(message()) == 1
    row = OutboxMessage.objects.get()
    assert row.deferrals == 1
    assert row.next_attempt_at == account.rate_limited_until
    assert "rate limited until" in row.last_error


# -- leases -------------------------------------------------------------------------------


def test_claims_do_not_overlap_and_an_expired_lease_marks_a_possible_duplicate(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "always")
    send(*(message(f"m{i}") for i in range(5)))
    first = outbox.claim(3, worker="w1", now=clock())
    second = outbox.claim(3, worker="w2", now=clock())
    assert len(first) == 3 and len(second) == 2
    assert not {r.pk for r in first} & {r.pk for r in second}
    assert outbox.claim(3, worker="w3", now=clock()) == []

    # w1 dies; after its lease the rows go to the next worker, flagged.
    clock.advance(minutes=10, seconds=1)
    again = outbox.claim(10, worker="w3", now=clock())
    assert sorted(r.pk for r in again) == sorted(r.pk for r in first + second)
    assert all(r.possible_duplicate and r.claims == 2 for r in again)

    # w1 comes back to life and tries to settle: it no longer holds the rows.
    items = worker.backend_for("").send_queued(first)
    assert outbox.settle(items, worker="w1", now=clock()).lost_lease == 3
    assert OutboxMessage.objects.filter(status=Status.SENT).count() == 0

    result = worker.send_batch(again, worker="w3")
    assert result.sent == 5
    log = DeliveryLog.objects.filter(outcome="sent").order_by("id").last()
    assert log is not None and "possible duplicate" in log.reply_text


def test_a_row_cancelled_while_claimed_is_not_requeued_but_a_send_is_recorded(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "always")
    send(message("sent anyway"), message("fails"))
    rows = outbox.claim(10, worker="w1", now=clock())
    assert outbox.cancel(OutboxMessage.objects.all()) == 2
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Try later", on_message=2))
    worker.send_batch(rows, worker="w1")
    statuses = dict(OutboxMessage.objects.values_list("subject", "status"))
    assert statuses == {"sent anyway": "sent", "fails": "cancelled"}


def test_retry_now_and_cancel(settings, account, clock):
    outbox_mode(settings, "always")
    send(message("a"), message("b"))
    OutboxMessage.objects.update(
        status=Status.FAILED, next_attempt_at=clock() + dt.timedelta(days=1)
    )
    assert outbox.retry_now(OutboxMessage.objects.filter(subject="a"), clock()) == 1
    assert outbox.cancel(OutboxMessage.objects.filter(subject="b")) == 1
    assert dict(OutboxMessage.objects.values_list("subject", "status")) == {
        "a": "queued",
        "b": "cancelled",
    }
    assert OutboxMessage.objects.get(subject="a").next_attempt_at == clock()
    assert outbox.cancel(OutboxMessage.objects.filter(status=Status.SENT)) == 0


# -- hints survive the queue --------------------------------------------------------------


def test_queued_mail_keeps_its_purpose_and_explicit_account(
    settings, mailer, smtp_server, second_server, clock
):
    outbox_mode(settings, "always")
    SmtpAccountFactory.for_server(smtp_server, name="system", is_site_default=True)
    campaigns = SmtpAccountFactory.for_server(second_server, name="bulk", purpose="campaigns")
    one = message("by purpose")
    one.smtp_purpose = "campaigns"
    two = message("by account")
    two.smtp_account = campaigns
    send(one, two, message("default"))
    rows = {r.subject: r for r in OutboxMessage.objects.all()}
    assert rows["by purpose"].purpose == "campaigns"
    assert rows["by account"].hinted_account_id == campaigns.pk
    assert rows["by account"].account_hint == "bulk"  # for people; routing is by key

    worker.drain()
    assert sorted(str(r.message()["Subject"]) for r in second_server.received) == [
        "by account",
        "by purpose",
    ]
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["default"]


def test_a_row_naming_a_deleted_account_stays_queued_with_the_reason(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "always")
    msg = message()
    msg.smtp_account = "gone-later"
    SmtpAccountFactory(name="gone-later")
    send(msg)
    SmtpAccount.objects.filter(name="gone-later").delete()
    result = worker.drain()
    row = OutboxMessage.objects.get()
    assert (result.retrying, row.status, row.deferrals) == (1, "queued", 1)
    assert "gone-later" in row.last_error


# -- the wake hook ------------------------------------------------------------------------

woken: list[int] = []


def wake_for_test() -> None:
    woken.append(OutboxMessage.objects.count())


def test_the_wake_hook_runs_after_commit(settings, account, django_capture_on_commit_callbacks):
    outbox_mode(settings, "always", OUTBOX_WAKE="tests.test_outbox.wake_for_test")
    woken.clear()
    with django_capture_on_commit_callbacks(execute=True):
        send(message())
        assert woken == []
    assert woken == [1]


def test_a_failing_wake_hook_does_not_lose_the_mail(
    settings, account, django_capture_on_commit_callbacks, caplog
):
    def broken() -> None:
        raise RuntimeError("queue server down")

    outbox_mode(settings, "always", OUTBOX_WAKE=broken)
    with django_capture_on_commit_callbacks(execute=True):
        assert send(message()) == 1
    assert OutboxMessage.objects.count() == 1
    assert "queue server down" in caplog.text


# -- the test backend ---------------------------------------------------------------------


def test_the_test_backend_records_mail_sent_from_the_outbox(settings, clock):
    from django_multismtp.backends.test import EmailBackend as TestBackend
    from tests.mailers import use_mailers

    outbox_mode(settings, "always")
    use_mailers(settings)
    if hasattr(settings, "MAILERS"):
        settings.MAILERS = {"default": {"BACKEND": "django_multismtp.backends.test.EmailBackend"}}
    else:
        settings.EMAIL_BACKEND = "django_multismtp.backends.test.EmailBackend"
    SmtpAccountFactory(name="A", is_site_default=True)
    mail.outbox = []
    TestBackend().send_messages([message("queued")])
    assert mail.outbox == []
    worker.drain()
    (recorded,) = mail.outbox
    assert recorded.subject == "queued"
    assert recorded.multismtp_account == "A"
    assert b"Body of queued" in recorded.multismtp_wire


# -- the command --------------------------------------------------------------------------


def test_send_queued_mail_reports_what_it_did(settings, account, smtp_server, clock):
    outbox_mode(settings, "always")
    send(*(message(f"m{i}") for i in range(5)))
    smtp_server.add_fault(Fault.reply(554, "5.7.1 Rejected", on_message=2))
    out, err = StringIO(), StringIO()
    call_command("send_queued_mail", "--batch", "2", stdout=out, stderr=err)
    assert out.getvalue().strip() == ("Total: sent 4, retrying later 0, failed 1, cancelled 0.")
    assert "554 5.7.1 Rejected" in err.getvalue()
    assert len(smtp_server.received) == 4


def test_send_queued_mail_v2_reports_mail_waiting_but_not_due(settings, account, clock):
    outbox_mode(settings, "always")
    send(message("later"), message("much later"))
    first = clock.current + dt.timedelta(minutes=5)
    OutboxMessage.objects.filter(subject="later").update(next_attempt_at=first)
    OutboxMessage.objects.filter(subject="much later").update(
        next_attempt_at=first + dt.timedelta(hours=1)
    )
    out = StringIO()
    call_command("send_queued_mail", verbosity=2, stdout=out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "Total: sent 0, retrying later 0, failed 0, cancelled 0."
    assert lines[1] == (
        f"Waiting, not yet due: 2; the next is due at {first.isoformat(timespec='seconds')} "
        "(in 300 s)."
    )
    # The default verbosity stays one line for cron mail.
    out = StringIO()
    call_command("send_queued_mail", stdout=out)
    assert out.getvalue().strip().count("\n") == 0


def test_send_queued_mail_v2_says_when_nothing_waits(settings, account, clock):
    out = StringIO()
    call_command("send_queued_mail", verbosity=2, stdout=out)
    assert out.getvalue().strip().endswith("Nothing else is waiting.")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--batch", "0"], "--batch must be a whole number of at least 1, not '0'."),
        (["--batch", "ten"], "--batch must be a whole number of at least 1, not 'ten'."),
        (["--connections", "0"], "--connections must be a whole number of at least 1, not '0'."),
        (["--max-seconds", "-3"], "--max-seconds must be a positive number of seconds"),
        (["--max-seconds", "nan"], "--max-seconds must be a positive number of seconds"),
    ],
)
def test_send_queued_mail_refuses_bad_arguments(args, error):
    with pytest.raises(CommandError) as caught:
        call_command("send_queued_mail", *args)
    assert str(caught.value).startswith(error)
    assert "\n" not in str(caught.value)


def test_send_queued_mail_stops_after_max_seconds_between_batches(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "always")
    send(*(message(f"m{i}") for i in range(3)))
    out = StringIO()
    call_command("send_queued_mail", "--batch", "1", "--max-seconds", "0.000001", stdout=out)
    # The deadline is checked before each batch; one microsecond allows at most one.
    assert len(smtp_server.received) <= 1
    assert OutboxMessage.objects.filter(status=Status.QUEUED).count() >= 2


def test_loop_polls_until_stopped(settings, account, smtp_server, clock):
    outbox_mode(settings, "always")
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            send(message("arrived while idle"))

    result = worker.drain(loop=True, sleep=sleep, stop=lambda: len(polls) >= 3)
    assert result.sent == 1
    assert polls == [5.0, 5.0, 5.0]
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["arrived while idle"]


def test_post_send_reports_queueing_and_then_the_workers_outcome(account, smtp_server, clock):
    from django_multismtp import signals

    seen: list[tuple[str, str]] = []

    def receiver(sender, message, status, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((type(message).__name__, status.outcome))

    signals.post_send.connect(receiver)
    try:
        smtp_server.add_fault(Fault.reply(454, THROTTLE))
        send(message())
        clock.advance(minutes=1)
        worker.drain()
    finally:
        signals.post_send.disconnect(receiver)
    assert seen == [("EmailMessage", "queued"), ("OutboxMessage", "sent")]


# -- cleanup ------------------------------------------------------------------------------


def test_cleanup_outbox_deletes_old_history_but_never_queued_mail(settings, account, clock):
    outbox_mode(settings, "always")
    send(*(message(s) for s in ("queued", "sent", "cancelled", "failed", "recent")))
    old = clock() - dt.timedelta(days=40)
    OutboxMessage.objects.update(created_at=old)
    OutboxMessage.objects.filter(subject="sent").update(status="sent", sent_at=old)
    OutboxMessage.objects.filter(subject="cancelled").update(status="cancelled")
    OutboxMessage.objects.filter(subject="failed").update(status="failed")
    OutboxMessage.objects.filter(subject="recent").update(status="sent", sent_at=clock())
    DeliveryLog.objects.create(account_name="A", message_id="<x>", outcome="sent", created_at=old)

    out = StringIO()
    call_command("cleanup_outbox", "--dry-run", "--log-days", "7", stdout=out)
    assert out.getvalue().strip() == "Would delete 2 outbox message(s) and 1 delivery-log row(s)."
    assert OutboxMessage.objects.count() == 5

    call_command("cleanup_outbox", stdout=out)
    assert set(OutboxMessage.objects.values_list("subject", flat=True)) == {
        "queued",
        "failed",
        "recent",
    }
    clock.advance(seconds=1)
    call_command("cleanup_outbox", "--include-failed", "--days", "0", stdout=out)
    assert set(OutboxMessage.objects.values_list("subject", flat=True)) == {"queued"}
    assert DeliveryLog.objects.count() == 1  # no --log-days, no log pruning


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--days", "-1"], "--days must be a whole number of days (0 or more), not '-1'."),
        (["--log-days", "x"], "--log-days must be a whole number of days (0 or more), not 'x'."),
    ],
)
def test_cleanup_outbox_refuses_bad_arguments(args, error):
    with pytest.raises(CommandError) as caught:
        call_command("cleanup_outbox", *args)
    assert str(caught.value) == error


# -- what waiting cannot fix --------------------------------------------------------------


def test_a_message_too_big_for_every_account_raises_and_is_not_queued(mailer, smtp_server):
    from django_multismtp.exceptions import NoAccountAvailable

    SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, max_message_size=1000
    )
    big = message()
    big.attach("big.bin", b"x" * 5000, "application/octet-stream")
    with pytest.raises(NoAccountAvailable, match="exceeds its maximum of 1000"):
        send(big)
    assert not OutboxMessage.objects.exists()


def test_with_a_single_attempt_allowed_a_failure_raises(settings, account, smtp_server):
    outbox_mode(settings, "retry", OUTBOX_MAX_ATTEMPTS=1)
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Try later"))
    with pytest.raises(SendFailed, match="451"):
        send(message())
    assert not OutboxMessage.objects.exists()


def test_a_message_waiting_longer_than_max_age_fails(settings, account, smtp_server, clock):
    outbox_mode(
        settings,
        "always",
        OUTBOX_MAX_AGE=dt.timedelta(hours=6),
        OUTBOX_RETRY_BACKOFF=dt.timedelta(hours=1),
    )
    msg = message()
    msg.smtp_account = doomed = SmtpAccountFactory(name="deleted later")
    assert send(msg) == 1
    SmtpAccount.objects.filter(name="deleted later").delete()  # it can never be sent now
    row = OutboxMessage.objects.get()
    passes = 0
    while row.status == Status.QUEUED:
        clock.current = row.next_attempt_at
        worker.drain()
        row.refresh_from_db()
        passes += 1
    assert row.status == Status.FAILED
    assert (row.attempts, row.deferrals, passes) == (0, 8, 8)  # at 0, 1, ... 7 hours
    assert row.last_error.startswith("Gave up: not sent 7.0 hours after it was queued")
    assert f"'deleted later' (id {doomed.pk}) no longer exists" in row.last_error
    assert smtp_server.received == []


@pytest.mark.parametrize(
    ("limit", "wait"),
    [("limit_per_minute", dt.timedelta(minutes=1)), ("limit_per_day", dt.timedelta(days=1))],
)
def test_deferred_mail_waits_until_the_accounts_window_frees(
    mailer, smtp_server, clock, limit, wait
):
    from django_multismtp.limits import window_start

    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, **{limit: 1})
    send(message("first"), message("second"))
    row = OutboxMessage.objects.get()
    assert row.deferrals == 1
    seconds = int(wait.total_seconds())
    assert row.next_attempt_at == max(
        clock() + dt.timedelta(minutes=1), window_start(clock(), seconds) + wait
    )
    clock.current = row.next_attempt_at
    assert worker.drain().sent == 1


def test_a_failing_pre_send_receiver_defers_its_message_and_spares_the_batch(
    settings, account, smtp_server, clock
):
    from django_multismtp import signals

    outbox_mode(settings, "always")
    send(message("fine"), message("poison"))

    def receiver(sender, message, **kwargs):  # type: ignore[no-untyped-def]
        assert message.recipients() == ["to@example.test"]  # rows mimic EmailMessage
        if message.subject == "poison":
            raise KeyError("bug in a receiver")

    signals.pre_send.connect(receiver)
    try:
        result = worker.drain()
    finally:
        signals.pre_send.disconnect(receiver)
    assert (result.sent, result.retrying) == (1, 1)
    poison = OutboxMessage.objects.get(subject="poison")
    assert poison.status == Status.QUEUED
    assert "A pre_send receiver raised KeyError('bug in a receiver')" in poison.last_error
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["fine"]


# -- a worker keeps its connections and claims ahead ----------------------------------------


def test_a_drain_reuses_its_connection_across_batches_and_sends_each_row_once(
    settings, account, smtp_server, clock
):
    """Batches of 2 of 7 rows: one connection for the whole drain (it used to open one
    per batch), and the batch claimed while another is on the wire is never the one
    still being sent (each message arrives once)."""
    outbox_mode(settings, "always")
    assert send(*(message(f"m{i}") for i in range(7))) == 7
    result = worker.drain(batch_size=2)
    assert (result.sent, result.retrying, result.failed, result.lost_lease) == (7, 0, 0, 0)
    ids = received_ids(smtp_server)
    assert sorted(ids) == sorted(OutboxMessage.objects.values_list("message_id", flat=True))
    assert len(set(ids)) == 7
    assert smtp_server.connections == 1
    assert not OutboxMessage.objects.exclude(locked_by="").exists()


def test_a_looping_worker_closes_its_connections_when_idle(settings, account, smtp_server, clock):
    outbox_mode(settings, "always")
    ticks = iter(range(1000))  # each look at the monotonic clock: one second later
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) == 1:
            assert smtp_server.connections == 1
            send(message("after a pause"))

    send(message("first"))
    result = worker.drain(
        loop=True,
        sleep=sleep,
        stop=lambda: len(polls) >= 2,
        monotonic=lambda: float(next(ticks)),
    )
    assert result.sent == 2
    # Closed before the idle poll (the server saw QUIT), a new connection after it.
    assert smtp_server.connections == 2
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == [
        "first",
        "after a pause",
    ]


def test_rows_claimed_ahead_are_given_back_when_the_drain_stops(
    settings, account, smtp_server, clock
):
    outbox_mode(settings, "always")
    send(*(message(f"m{i}") for i in range(5)))
    batches: list[Any] = []
    result = worker.drain(batch_size=2, on_batch=batches.append, stop=lambda: len(batches) >= 1)
    assert result.sent == 2
    # The next two were claimed while the first two were sent, and released unsent.
    assert OutboxMessage.objects.filter(status=Status.QUEUED).count() == 3
    assert not OutboxMessage.objects.exclude(locked_by="").exists()
    assert OutboxMessage.objects.filter(claims=1).count() == 4
    assert worker.drain().sent == 3
    assert len(set(received_ids(smtp_server))) == 5


def test_queueing_writes_any_number_of_messages_with_the_same_queries(settings, account, clock):
    """send_messages() under "always": 10 and 1,000 messages, the same statements."""
    outbox_mode(settings, "always")
    send(message("warm-up"))
    counts = []
    for size in (10, 1000):
        batch = [message(f"q{i}") for i in range(size)]
        with CaptureQueriesContext(connection) as queries:
            assert send(*batch) == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert OutboxMessage.objects.filter(status=Status.QUEUED).count() == 1011


def test_a_row_sent_after_a_failed_pass_keeps_no_error(settings, account, smtp_server, clock):
    """The earlier pass's error stays in the delivery log, not on the sent row."""
    outbox_mode(settings, "always")
    send(message("retried"))
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Mailbox busy", on_message=1))
    call_command("send_queued_mail", stdout=StringIO(), stderr=StringIO())
    row = OutboxMessage.objects.get()
    assert row.status == "queued" and "451" in row.last_error
    clock.current = row.next_attempt_at
    call_command("send_queued_mail", stdout=StringIO(), stderr=StringIO())
    row.refresh_from_db()
    assert row.status == "sent"
    assert (row.last_error, row.last_error_code) == ("", None)
    assert DeliveryLog.objects.filter(reply_code=451).exists()
