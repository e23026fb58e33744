"""The backend over the wire: real SMTP servers on 127.0.0.1, a real database.

Every test drives ``django_multismtp.backends.EmailBackend`` against aiosmtpd servers
(``tests/smtp_servers.py``) and asserts what the servers received, what the backend
returned or raised, and what it recorded (account state, delivery log). Time only moves
through the ``clock`` fixture; the only real waiting is a 1 s client timeout.
"""

from __future__ import annotations

import datetime as dt
import smtplib
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import MultiSMTPError, SendFailed
from django_multismtp.message import MultiSMTPMessage
from django_multismtp.models import DeliveryLog, SmtpAccount
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction, get_mailer
from tests.smtp_servers import Fault, SMTPTestServer, TLSFiles

pytestmark = [pytest.mark.django_db, direct_construction]

THROTTLE = "4.7.0 Throttling failure: Maximum sending rate exceeded"
GMAIL_DAILY = (
    "5.4.5 Daily user sending limit exceeded. For more information on Gmail sending "
    "limits go to https://support.google.com/a/answer/166852"
)


# -- helpers --------------------------------------------------------------------------------


def message(subject: str = "Hello", *, to: tuple[str, ...] = ("to@example.test",), **kw: Any):
    return EmailMessage(subject=subject, body=f"Body of {subject}", to=list(to), **kw)


def subjects(server: SMTPTestServer) -> list[str]:
    return [str(received.message()["Subject"]) for received in server.received]


def received_ids(*servers: SMTPTestServer) -> list[str]:
    return [str(r.message()["Message-ID"]) for s in servers for r in s.received]


def send(*messages: EmailMessage) -> int:
    return int(get_mailer().send_messages(list(messages)))


def log_rows(account: SmtpAccount | None = None) -> list[tuple[str, str]]:
    """``(account name, outcome)`` of every delivery log row, oldest first."""
    rows = DeliveryLog.objects.order_by("id")
    if account is not None:
        rows = rows.filter(account=account)
    return list(rows.values_list("account_name", "outcome"))


@pytest.fixture
def pair(mailer, smtp_server, second_server):  # type: ignore[no-untyped-def]
    """Account A (site default, tried first) and B (same purpose: A's failover)."""
    a = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, priority=1)
    b = SmtpAccountFactory.for_server(second_server, name="B", priority=2)
    return a, b


# -- security modes -------------------------------------------------------------------------


def test_starttls_required_logs_in_over_tls(mailer, starttls_server):
    SmtpAccountFactory.for_server(
        starttls_server, name="tls", auth_method="auto", username="alice", password="right-password"
    )
    assert send(message()) == 1
    (received,) = starttls_server.received
    assert received.tls is True
    assert received.login == "alice"


def test_implicit_tls(mailer, implicit_server):
    account = SmtpAccountFactory.for_server(
        implicit_server, name="smtps", auth_method="plain", username="bob", password="bob-password"
    )
    assert account.security == "tls"
    assert send(message()) == 1
    (received,) = implicit_server.received
    assert received.tls is True
    assert received.login == "bob"


def test_opportunistic_upgrades_when_starttls_is_offered(mailer, tls_files: TLSFiles):
    with SMTPTestServer(mode="starttls", tls=tls_files) as server:
        SmtpAccountFactory.for_server(server, name="opp", security="opportunistic")
        assert send(message()) == 1
        (received,) = server.received
    assert received.tls is True


def test_opportunistic_sends_in_clear_to_a_plain_server(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="opp", security="opportunistic")
    assert send(message()) == 1
    (received,) = smtp_server.received
    assert received.tls is False


def test_security_none_never_upgrades(mailer, tls_files: TLSFiles):
    # The server offers STARTTLS but does not require it: "none" must stay in clear.
    with SMTPTestServer(mode="starttls", tls=tls_files) as server:
        SmtpAccountFactory.for_server(server, name="clear", security="none")
        assert send(message()) == 1
        (received,) = server.received
    assert received.tls is False


def test_certificate_verified_against_the_ca_file(mailer, implicit_server, tls_files):
    account = SmtpAccountFactory.for_server(
        implicit_server, name="ca", auth_method="plain", username="alice", password="right-password"
    )
    assert account.verify_certificates and account.ca_file == tls_files.cert_path
    assert send(message()) == 1
    assert len(implicit_server.received) == 1


@pytest.mark.usefixtures("outbox_off")
@pytest.mark.parametrize("fixture", ["implicit_server", "starttls_server"])
def test_unverifiable_certificate_fails_with_the_certificate_hint(mailer, request, fixture):
    server = request.getfixturevalue(fixture)
    account = SmtpAccountFactory.for_server(
        server,
        name="self-signed",
        ca_file="",
        auth_method="auto",
        username="alice",
        password="right-password",
    )
    with pytest.raises(SendFailed) as caught:
        send(message())
    assert caught.value.failure.outcome == "tls_failed"
    assert "certificate" in caught.value.hint and "CA file" in caught.value.hint
    assert server.received == []
    assert log_rows() == [("self-signed", "tls_failed")]
    account.refresh_from_db()
    assert "certificate" in account.last_error


def test_certificate_checks_off_accepts_a_self_signed_server(mailer, starttls_server):
    SmtpAccountFactory.for_server(
        starttls_server,
        name="trusting",
        ca_file="",
        verify_certificates=False,
        auth_method="auto",
        username="alice",
        password="right-password",
    )
    assert send(message()) == 1
    (received,) = starttls_server.received
    assert received.tls is True


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "mechanism"),
    [("plain", "PLAIN"), ("login", "LOGIN"), ("cram-md5", "CRAM-MD5"), ("auto", None)],
)
def test_each_auth_method_logs_in(mailer, starttls_server, method, mechanism):
    SmtpAccountFactory.for_server(
        starttls_server, name="auth", auth_method=method, username="bob", password=USERS["bob"]
    )
    assert send(message()) == 1
    (received,) = starttls_server.received
    assert received.login == "bob"
    # Exactly one successful login, with the mechanism that was asked for.
    assert [ok for _m, _login, ok in starttls_server.auth_attempts] == [True]
    used = starttls_server.auth_attempts[0][0]
    if mechanism is not None:
        assert used == mechanism
    else:
        assert used in ("PLAIN", "LOGIN", "CRAM-MD5")


@pytest.mark.usefixtures("outbox_off")
@pytest.mark.parametrize("method", ["plain", "login", "cram-md5", "auto"])
def test_wrong_password_is_auth_failed_with_the_app_password_hint(mailer, starttls_server, method):
    account = SmtpAccountFactory.for_server(
        starttls_server, name="bad-login", auth_method=method, username="alice", password="wrong"
    )
    with pytest.raises(SendFailed) as caught:
        send(message())
    error = caught.value
    assert isinstance(error, smtplib.SMTPException)
    assert error.smtp_code == 535
    assert error.failure.outcome == "auth_failed"
    assert "App Password" in error.hint
    assert "App Password" in str(error)
    assert starttls_server.received == []
    account.refresh_from_db()
    assert account.last_error_code == 535
    assert "App Password" in account.last_error
    assert account.last_error_at is not None
    assert account.rate_limited_until is None  # a wrong password is no reason to back off
    assert log_rows() == [("bad-login", "auth_failed")]
    assert DeliveryLog.objects.get().reply_code == 535


@pytest.mark.usefixtures("outbox_off")
def test_530_must_starttls_is_tls_failed_with_the_starttls_hint(mailer, tls_files):
    with SMTPTestServer(mode="starttls", tls=tls_files, require_starttls=True) as server:
        account = SmtpAccountFactory.for_server(server, name="clear", security="none")
        with pytest.raises(SendFailed) as caught:
            send(message())
        assert server.received == []
    error = caught.value
    assert error.failure.outcome == "tls_failed"
    assert error.smtp_code == 530
    assert "STARTTLS" in error.hint
    account.refresh_from_db()
    assert account.last_error_code == 530
    assert log_rows() == [("clear", "tls_failed")]


# -- throttling and failover ----------------------------------------------------------------


def test_throttle_fails_over_and_pauses_the_account(pair, smtp_server, second_server, clock):
    a, b = pair
    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=2))
    started = clock()

    assert send(message("m1"), message("m2"), message("m3")) == 3

    assert subjects(smtp_server) == ["m1"]
    # m2 failed on A and moved to B; m3 never went to A once A was throttled.
    assert subjects(second_server) == ["m2", "m3"]
    a.refresh_from_db()
    assert a.rate_limited_until == started + dt.timedelta(minutes=1)
    assert a.last_error_code == 454
    assert "Throttling" in a.last_error
    assert log_rows(a) == [("A", "sent"), ("A", "throttled")]
    assert log_rows(b) == [("B", "sent"), ("B", "sent")]

    # Next batch while A is still paused: A is not even connected to.
    connections = smtp_server.connections
    clock.advance(seconds=59)
    assert send(message("m4")) == 1
    assert subjects(second_server)[-1] == "m4"
    assert smtp_server.connections == connections
    assert subjects(smtp_server) == ["m1"]

    # Once the pause is over, A (the primary) is used again.
    clock.advance(seconds=2)
    assert send(message("m5")) == 1
    assert subjects(smtp_server) == ["m1", "m5"]
    assert subjects(second_server) == ["m2", "m3", "m4"]


def test_consecutive_throttles_double_the_backoff(pair, smtp_server, second_server, clock):
    a, _b = pair
    smtp_server.add_fault(Fault.reply(454, THROTTLE, times=3))

    expected = [1, 2, 4]
    for round_no, minutes in enumerate(expected, start=1):
        now = clock()
        assert send(message(f"r{round_no}")) == 1
        a.refresh_from_db()
        assert a.rate_limited_until == now + dt.timedelta(minutes=minutes)
        assert a.consecutive_throttles == round_no
        clock.advance(minutes=minutes, seconds=1)
    assert subjects(second_server) == ["r1", "r2", "r3"]

    # A success ends the streak: the next throttle backs off one minute again.
    assert send(message("ok")) == 1
    assert subjects(smtp_server) == ["ok"]
    a.refresh_from_db()
    assert a.consecutive_throttles == 0
    smtp_server.add_fault(Fault.reply(454, THROTTLE))
    now = clock()
    assert send(message("again")) == 1
    a.refresh_from_db()
    assert a.rate_limited_until == now + dt.timedelta(minutes=1)


def test_throttle_after_a_success_in_the_same_batch_still_counts(
    pair, smtp_server, second_server, clock
):
    """A batch that sent some mail through A and was then throttled ends throttled: the
    earlier success must not reset the streak, or the back-off would never grow."""
    a, _b = pair
    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=2))
    assert send(message("m1"), message("m2")) == 2
    a.refresh_from_db()
    assert a.consecutive_throttles == 1
    clock.advance(minutes=1, seconds=1)

    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=4))
    now = clock()
    assert send(message("m3"), message("m4")) == 2
    assert subjects(smtp_server) == ["m1", "m3"]
    a.refresh_from_db()
    assert a.rate_limited_until == now + dt.timedelta(minutes=2)


def test_throttle_is_recorded_when_the_account_also_hit_its_own_limit(
    mailer, smtp_server, second_server, clock
):
    """A reaches its per-minute limit while planning the batch and its server throttles
    the one message it was granted: the throttle must still pause A."""
    a = SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, priority=1, limit_per_minute=1
    )
    SmtpAccountFactory.for_server(second_server, name="B", priority=2)
    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=1))
    now = clock()
    assert send(message("m1"), message("m2")) == 2
    assert subjects(second_server) == ["m1", "m2"]
    a.refresh_from_db()
    assert a.rate_limited_until == now + dt.timedelta(minutes=1)
    assert a.last_error_code == 454


def test_gmail_daily_limit_pauses_for_a_day(pair, smtp_server, second_server, clock):
    a, _b = pair
    smtp_server.add_fault(Fault.reply(550, GMAIL_DAILY, on_message=1))
    now = clock()
    assert send(message("quota")) == 1
    assert subjects(second_server) == ["quota"]
    a.refresh_from_db()
    assert a.rate_limited_until == now + dt.timedelta(hours=24)
    assert "daily" in a.last_error.lower()
    assert log_rows(a) == [("A", "throttled")]

    clock.advance(hours=23)
    assert send(message("still paused")) == 1
    assert subjects(second_server) == ["quota", "still paused"]
    assert smtp_server.received == []


def test_421_and_disconnect_is_a_throttle_with_failover(pair, smtp_server, second_server, clock):
    a, _b = pair
    smtp_server.add_fault(
        Fault.reply_then_disconnect(421, "4.7.0 Try again later, closing connection", on_message=1)
    )
    now = clock()
    assert send(message("one"), message("two")) == 2
    assert smtp_server.received == []
    assert subjects(second_server) == ["one", "two"]
    a.refresh_from_db()
    assert a.rate_limited_until == now + dt.timedelta(minutes=1)
    assert a.last_error_code == 421
    assert log_rows(a) == [("A", "throttled")]


def test_transient_451_fails_over_without_pausing(pair, smtp_server, second_server):
    a, _b = pair
    smtp_server.add_fault(Fault.reply(451, "4.3.0 Local error in processing", on_message=1))
    assert send(message("m1"), message("m2")) == 2
    # m1 moved to B; A stays usable for the rest of the batch (the failure was m1's).
    assert subjects(second_server) == ["m1"]
    assert subjects(smtp_server) == ["m2"]
    a.refresh_from_db()
    assert a.rate_limited_until is None
    assert log_rows() == [("A", "transient"), ("A", "sent"), ("B", "sent")]


def test_permanent_550_for_every_recipient_is_not_retried(pair, smtp_server, second_server):
    smtp_server.add_fault(Fault.reply(550, "5.1.1 User unknown", stage="RCPT"))
    msg = message("bounce", to=("nobody@example.test", "nobody2@example.test"))
    with pytest.raises(SendFailed) as caught:
        send(msg)
    assert caught.value.failure.outcome == "permanent"
    assert caught.value.smtp_code == 550
    assert caught.value.sent_count == 0
    assert smtp_server.received == [] and second_server.received == []
    assert second_server.connections == 0
    assert log_rows() == [("A", "permanent")]
    assert msg.multismtp_status.outcome == "permanent"
    a, _b = pair
    a.refresh_from_db()
    assert a.rate_limited_until is None


def test_partial_recipient_refusal_counts_as_sent(pair, smtp_server, second_server):
    smtp_server.add_fault(
        Fault.reply(550, "5.1.1 No such user", stage="RCPT", recipient="gone@example.test")
    )
    msg = message("partial", to=("gone@example.test", "here@example.test"))
    assert send(msg) == 1
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["here@example.test"]
    assert second_server.received == []
    assert msg.multismtp_status.outcome == "sent"
    assert log_rows() == [("A", "sent")]


# -- connection failures lose nothing -------------------------------------------------------


def assert_nothing_lost(
    messages: list[EmailMessage], servers: list[SMTPTestServer], error: MultiSMTPError | None
) -> None:
    """Every message is received exactly once somewhere or reported as failed."""
    all_ids = {m.multismtp_status.message_id for m in messages}
    delivered = received_ids(*servers)
    failed = [message_id for message_id, _failure in (error.failures if error else [])]
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert set(delivered).isdisjoint(failed)
    assert set(delivered) | set(failed) == all_ids
    assert len(delivered) + len(failed) == len(messages)


def test_disconnect_mid_data_fails_over(pair, smtp_server, second_server):
    a, _b = pair
    smtp_server.add_fault(Fault.disconnect(on_message=2))
    batch = [message(f"m{i}") for i in range(1, 5)]
    assert send(*batch) == 4
    assert subjects(smtp_server) == ["m1"]
    assert subjects(second_server) == ["m2", "m3", "m4"]
    assert [m.multismtp_status.account for m in batch] == ["A", "B", "B", "B"]
    assert log_rows(a) == [("A", "sent"), ("A", "connection_failed")]
    assert_nothing_lost(batch, [smtp_server, second_server], None)


def test_stall_past_the_timeout_fails_over(mailer, smtp_server, second_server):
    a = SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, priority=1, timeout=1
    )
    SmtpAccountFactory.for_server(second_server, name="B", priority=2, timeout=1)
    smtp_server.add_fault(Fault.stall(3, on_message=2))
    batch = [message(f"m{i}") for i in range(1, 4)]
    assert send(*batch) == 3
    assert subjects(smtp_server) == ["m1"]
    assert subjects(second_server) == ["m2", "m3"]
    a.refresh_from_db()
    assert "did not answer in time" in a.last_error
    assert log_rows(a) == [("A", "sent"), ("A", "connection_failed")]
    assert_nothing_lost(batch, [smtp_server, second_server], None)


@pytest.mark.usefixtures("outbox_off")
def test_when_every_account_fails_the_rest_is_reported(pair, smtp_server, second_server):
    """A drops message 2, B drops its second message: 2 delivered, 2 reported, 0 lost."""
    smtp_server.add_fault(Fault.disconnect(on_message=2))
    second_server.add_fault(Fault.disconnect(on_message=2))
    batch = [message(f"m{i}") for i in range(1, 5)]
    with pytest.raises(SendFailed) as caught:
        send(*batch)
    error = caught.value
    assert subjects(smtp_server) == ["m1"]
    assert subjects(second_server) == ["m2"]
    assert error.sent_count == 2
    assert len(error.failures) == 2
    assert [m.multismtp_status.outcome == "sent" for m in batch] == [True, True, False, False]
    assert_nothing_lost(batch, [smtp_server, second_server], error)


def test_message_id_is_kept_across_failover(pair, smtp_server, second_server):
    smtp_server.add_fault(Fault.reply(454, THROTTLE, on_message=1))
    msg = message("same id")
    assert send(msg) == 1
    rows = list(DeliveryLog.objects.order_by("attempt"))
    assert [(r.account_name, r.outcome, r.attempt) for r in rows] == [
        ("A", "throttled", 1),
        ("B", "sent", 2),
    ]
    assert rows[0].message_id == rows[1].message_id
    (received,) = second_server.received
    assert received.message()["Message-ID"] == rows[0].message_id
    assert msg.multismtp_status.message_id == rows[0].message_id
    assert msg.multismtp_status.attempts == 2
    # The caller's message is left as it was.
    assert "Message-ID" not in msg.extra_headers


def test_a_message_id_set_by_the_caller_is_used(pair, smtp_server):
    msg = message("own id", headers={"Message-ID": "<mine@example.test>"})
    assert send(msg) == 1
    (received,) = smtp_server.received
    assert received.message()["Message-ID"] == "<mine@example.test>"
    assert DeliveryLog.objects.get().message_id == "<mine@example.test>"


# -- addresses and headers ------------------------------------------------------------------


def test_bcc_goes_in_the_envelope_only(pair, smtp_server):
    msg = message(
        "bcc", to=("to@example.test",), cc=["cc@example.test"], bcc=["hidden@example.test"]
    )
    assert send(msg) == 1
    (received,) = smtp_server.received
    assert sorted(received.rcpt_tos) == [
        "cc@example.test",
        "hidden@example.test",
        "to@example.test",
    ]
    parsed = received.message()
    assert parsed["Bcc"] is None
    assert b"hidden@example.test" not in received.data
    assert parsed["Cc"] == "cc@example.test"


def test_idna_domains_are_punycoded_in_the_envelope(pair, smtp_server):
    assert send(message("idna", to=("user@exämple.test",))) == 1
    (received,) = smtp_server.received
    assert received.rcpt_tos == ["user@xn--exmple-cua.test"]
    assert "exämple".encode("idna") == b"xn--exmple-cua"


def test_non_ascii_names_subject_and_body_survive(pair, smtp_server):
    msg = EmailMessage(
        subject="Grüße aus Köln ✓",
        body="Schöne Grüße, Jürgen — ☃",
        from_email="Zoë Ørsted <zoe@example.test>",
        to=["Jürgen Müller <jm@example.test>"],
    )
    assert send(msg) == 1
    (received,) = smtp_server.received
    parsed = received.message()
    assert parsed["Subject"] == "Grüße aus Köln ✓"
    (to,) = parsed["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Jürgen Müller", "jm@example.test")
    (sender,) = parsed["From"].addresses
    assert sender.display_name == "Zoë Ørsted"
    assert parsed.get_content().strip() == "Schöne Grüße, Jürgen — ☃"
    assert received.mail_from == "zoe@example.test"
    assert received.rcpt_tos == ["jm@example.test"]


@pytest.mark.parametrize(
    "bad",
    ["victim@example.test\r\nBcc: evil@example.test", "victim@example.test\nX-Injected: 1"],
)
def test_header_injection_in_an_address_raises_even_when_failing_silently(mailer, smtp_server, bad):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    backend = EmailBackend(fail_silently=True)
    with pytest.raises(ValueError):
        backend.send_messages([message("inject", to=(bad,))])
    assert smtp_server.received == []
    assert smtp_server.connections == 0


def test_default_from_becomes_the_accounts_sender(mailer, smtp_server):
    SmtpAccountFactory.for_server(
        smtp_server,
        name="A",
        is_site_default=True,
        from_email="mailer@site.test",
        from_name="Site Mailer",
        reply_to="help@site.test",
    )
    # No from_email: Django uses DEFAULT_FROM_EMAIL (webmaster@site.test).
    assert send(message("default from")) == 1
    (received,) = smtp_server.received
    parsed = received.message()
    assert received.mail_from == "mailer@site.test"
    (sender,) = parsed["From"].addresses
    assert (sender.display_name, sender.addr_spec) == ("Site Mailer", "mailer@site.test")
    assert parsed["Reply-To"] == "help@site.test"
    assert b"webmaster@site.test" not in received.data


def test_explicit_from_and_reply_to_are_kept(mailer, smtp_server):
    SmtpAccountFactory.for_server(
        smtp_server,
        name="A",
        is_site_default=True,
        from_email="mailer@site.test",
        from_name="Site Mailer",
        reply_to="help@site.test",
    )
    own = message(
        "own from",
        from_email="Someone Else <someone@example.test>",
        reply_to=["replies@example.test"],
    )
    assert send(own, message("reply-to added", from_email="other@example.test")) == 2
    first, second = smtp_server.received
    parsed = first.message()
    assert first.mail_from == "someone@example.test"
    assert parsed["From"].addresses[0].addr_spec == "someone@example.test"
    assert parsed["Reply-To"] == "replies@example.test"
    assert b"help@site.test" not in first.data
    # An explicit From without a Reply-To gets the account's reply-to.
    assert second.mail_from == "other@example.test"
    assert second.message()["Reply-To"] == "help@site.test"


def test_hint_headers_never_reach_the_wire(mailer, smtp_server, second_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="billing", purpose="billing")
    msgs = [
        message("by purpose", headers={"X-MultiSMTP-Purpose": "billing"}),
        message("by account", headers={"x-multismtp-account": "billing", "X-Other": "kept"}),
        message("by name", headers={"X-MULTISMTP-ACCOUNT": "A"}),
    ]
    assert send(*msgs) == 3
    assert subjects(second_server) == ["by purpose", "by account"]
    assert subjects(smtp_server) == ["by name"]
    for received in smtp_server.received + second_server.received:
        assert b"x-multismtp" not in received.data.lower()
    assert second_server.received[1].message()["X-Other"] == "kept"
    # The caller's headers are not modified.
    assert msgs[0].extra_headers == {"X-MultiSMTP-Purpose": "billing"}


# -- connections ----------------------------------------------------------------------------


def test_an_open_backend_reuses_its_connection(pair, smtp_server):
    with get_mailer() as connection:
        assert connection.send_messages([message("one")]) == 1
        assert connection.send_messages([message("two"), message("three")]) == 2
    assert subjects(smtp_server) == ["one", "two", "three"]
    assert smtp_server.connections == 1


def test_a_closed_backend_connects_per_call(pair, smtp_server):
    backend = get_mailer()
    backend.send_messages([message("one")])
    backend.send_messages([message("two")])
    assert smtp_server.connections == 2


def test_max_messages_per_connection(mailer, smtp_server):
    SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, max_messages_per_connection=2
    )
    assert send(*(message(f"m{i}") for i in range(5))) == 5
    assert subjects(smtp_server) == [f"m{i}" for i in range(5)]
    assert smtp_server.connections == 3


def test_accounts_send_in_parallel_keeping_order(mailer, smtp_server, second_server):
    SmtpAccountFactory.for_server(smtp_server, name="left", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="right")
    batch = [
        MultiSMTPMessage(subject=f"{side}{i}", body="x", to=["to@example.test"], smtp_account=side)
        for i in range(4)
        for side in ("left", "right")
    ]
    assert send(*batch) == 8
    assert subjects(smtp_server) == ["left0", "left1", "left2", "left3"]
    assert subjects(second_server) == ["right0", "right1", "right2", "right3"]
    assert smtp_server.connections == 1 and second_server.connections == 1
    assert [m.multismtp_status.account for m in batch] == ["left", "right"] * 4


def test_a_long_batch_over_several_connections_keeps_order_per_connection(mailer, smtp_server):
    # More messages than the render window holds (feed.AHEAD per connection): the
    # calling thread renders while the connections send, each in the caller's order.
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, max_connections=3)
    batch = [message(f"m{i:02d}") for i in range(40)]
    assert send(*batch) == 40
    got = subjects(smtp_server)
    assert sorted(got) == sorted(f"m{i:02d}" for i in range(40))
    for lane in range(3):  # messages are dealt to the connections in turn
        dealt = [f"m{i:02d}" for i in range(lane, 40, 3)]
        assert [s for s in got if s in dealt] == dealt
    assert smtp_server.connections == 3


def test_a_message_that_cannot_be_rendered_raises_and_the_backend_goes_on(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    backend = EmailBackend()
    backend.open()
    try:
        bad = message("bad")
        bad.extra_headers["X-Bad"] = "one\nInjected: two"  # refused when rendered
        # BadHeaderError (a ValueError) on 5.2; Django 6 raises ValueError itself.
        with pytest.raises(ValueError, match="newline|linefeed"):
            backend.send_messages([message(f"ok{i}") for i in range(10)] + [bad])
        assert backend.send_messages([message("after")]) == 1
    finally:
        backend.close()
    assert "bad" not in subjects(smtp_server)
    assert subjects(smtp_server)[-1] == "after"


def test_send_mail_uses_the_backend(pair, smtp_server):
    assert mail.send_mail("Plain API", "Body", None, ["to@example.test"]) == 1
    assert subjects(smtp_server) == ["Plain API"]


@pytest.mark.django_db
def test_refused_recipients_are_recorded_in_the_status_and_the_log(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="main", is_site_default=True)
    smtp_server.add_fault(
        Fault.reply(550, "5.1.1 No such user", stage="RCPT", recipient="gone@example.test")
    )
    message = EmailMessage(subject="s", body="b", to=["ok@example.test", "gone@example.test"])
    assert get_mailer().send_messages([message]) == 1
    assert message.multismtp_status.refused == {"gone@example.test": "550 5.1.1 No such user"}
    row = DeliveryLog.objects.get()
    assert row.outcome == "sent"
    assert "refused 1: gone@example.test: 550 5.1.1 No such user" in row.reply_text


@pytest.mark.usefixtures("outbox_off")
@pytest.mark.django_db
def test_never_tried_messages_report_the_failure_of_their_account(mailer, smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="main", is_site_default=True)
    smtp_server.add_fault(Fault.disconnect(stage="EHLO", times=None))
    messages = [EmailMessage(subject=f"m{i}", body="b", to=["to@example.test"]) for i in range(3)]
    with pytest.raises(SendFailed) as caught:
        get_mailer().send_messages(messages)
    outcomes = {failure.outcome for _, failure in caught.value.failures}
    assert outcomes == {"connection_failed"}
    assert caught.value.account == "main"
