"""Fault injection against the outbox: whatever a server does, no message is lost.

With the default outbox mode ("retry") a message must end in exactly one of two states:
delivered, or refused (for good, or for a reason only a person can fix, see
test_queue_policy.py) with the caller told. Everything in between (a dropped connection,
a stall, a 4xx, an implicit-TLS connection reset, a drop after AUTH, every account
throttling) must leave it in the outbox, once, with the failure recorded where a person
looks for it: the caller's status, the account, the delivery log and the outbox row.

Each fault is therefore followed from the send to the end: the state right after the
failure, then the server healed, the clock moved past the row's next attempt, one
``worker.drain()``, and the message counted on the server by its Message-ID (exactly once,
the same ID the caller got). Real servers on 127.0.0.1 (``tests/smtp_servers.py``), a real
database; time moves only through the ``clock`` fixture, and the only real waiting is the
1 s client timeout of the stall case.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp import conf, worker
from django_multismtp.clock import FrozenClock
from django_multismtp.exceptions import SendFailed
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from django_multismtp.outbox import Settlement
from django_multismtp.replies import HINTS
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer, use_mailers
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = pytest.mark.django_db

THROTTLE = "4.7.0 Throttling failure: Maximum sending rate exceeded"
#: Logs in as alice: the TLS servers of conftest require AUTH.
ALICE = {"auth_method": "auto", "username": "alice", "password": USERS["alice"]}
MINUTE = dt.timedelta(minutes=1)
Status = OutboxMessage.Status


# -- helpers ------------------------------------------------------------------------------


def message(subject: str = "Hello") -> EmailMessage:
    return EmailMessage(subject=subject, body=f"Body of {subject}\n", to=["to@example.test"])


def send(*messages: EmailMessage) -> int:
    return int(get_mailer().send_messages(list(messages)))


def received_ids(*servers: SMTPTestServer) -> list[str]:
    return [str(r.message()["Message-ID"]) for s in servers for r in s.received]


def log_rows(message_id: str | None = None) -> list[tuple[str, str, int | None, int]]:
    """``(account, outcome, reply code, attempt)`` of the delivery log, oldest first."""
    rows = DeliveryLog.objects.order_by("id")
    if message_id is not None:
        rows = rows.filter(message_id=message_id)
    return list(rows.values_list("account_name", "outcome", "reply_code", "attempt"))


def pause(account: SmtpAccount) -> tuple[int | None, dt.datetime | None, int]:
    """The account's recorded failure and pause, fresh from the database."""
    account.refresh_from_db()
    return account.last_error_code, account.rate_limited_until, account.consecutive_throttles


def heal_and_drain(clock: FrozenClock, due: dt.datetime, *servers: SMTPTestServer) -> Settlement:
    """No more faults; nothing goes before ``due``; then one drain just after it."""
    for server in servers:
        server.clear_faults()
    assert worker.drain().sent == 0  # the back-off holds
    clock.current = due + dt.timedelta(seconds=1)
    return worker.drain()


@pytest.fixture(autouse=True)
def _default_outbox_mode(settings: Any) -> None:
    """The matrix is about the default: nothing here sets MULTISMTP["OUTBOX"]."""
    assert "OUTBOX" not in settings.MULTISMTP
    assert conf.outbox_mode() == "retry"


@pytest.fixture
def pair(mailer, smtp_server, second_server, clock):  # type: ignore[no-untyped-def]
    """A (site default, tried first) and B (same purpose, A's failover)."""
    a = SmtpAccountFactory.for_server(
        smtp_server, name="A", is_site_default=True, priority=1, timeout=1
    )
    b = SmtpAccountFactory.for_server(second_server, name="B", priority=2, timeout=1)
    return a, b


# -- faults that must queue the message ---------------------------------------------------


@dataclass(frozen=True)
class Queued:
    """A fault after which the message waits in the outbox, and what it leaves behind."""

    fault: Fault
    outcome: str  # the delivery log's outcome (replies.Outcome)
    code: int | None  # the reply code, if the server gave one
    #: Part of the error the caller, the account and the row show (one of several, when
    #: the same fault may be noticed at different moments).
    error: str | tuple[str, ...]
    hint: str | None  # the replies.HINTS entry the account and the row show
    server: str = "smtp_server"  # the conftest fixture
    account: dict[str, Any] = field(default_factory=dict)
    #: The failure is about the account (recorded on it) rather than this message.
    account_level: bool = True
    #: A throttling reply: the account is paused (THROTTLE_BACKOFF, one minute).
    throttled: bool = False
    #: The server accepted the login before the fault (AUTH succeeded, then the drop).
    logged_in: bool = False


QUEUED = {
    # The server read the whole message, recorded nothing and hung up: the client cannot
    # tell whether it was delivered, so it must keep it.
    "disconnect-mid-data": Queued(
        Fault.disconnect(), "connection_failed", None, "Unexpected EOF received", "disconnected"
    ),
    # Past the account's 1 s timeout; the client hangs up, so the server records nothing.
    "stall-past-timeout": Queued(
        Fault.stall(2),
        "connection_failed",
        None,
        "Timed out waiting for server response",
        "timeout",
    ),
    "421-then-disconnect": Queued(
        Fault.reply_then_disconnect(421, "4.7.0 Try again later"),
        "throttled",
        421,
        "421 4.7.0 Try again later",
        "throttled",
        throttled=True,
    ),
    # A temporary problem with this message: the account stays clean.
    "451": Queued(
        Fault.reply(451, "4.3.0 Temporary local problem"),
        "transient",
        451,
        "451 4.3.0 Temporary local problem",
        "transient",
        account_level=False,
    ),
    "454-throttling": Queued(
        Fault.reply(454, THROTTLE), "throttled", 454, f"454 {THROTTLE}", "throttled", throttled=True
    ),
    # (220 to STARTTLS, then bytes that are not TLS, is a TLS failure: a person must fix
    # the security mode, so it raises instead; see tests/test_queue_policy.py.)
    # Implicit TLS aborted at the ClientHello: the client only sees the connection reset
    # (aiosmtplib's SMTPConnectError caused by ConnectionResetError), which replies.py
    # tells apart from a refused connection.
    "implicit-tls-aborted": Queued(
        Fault.break_tls(),
        "connection_failed",
        None,
        "Error connecting to 127.0.0.1",
        "reset",
        server="implicit_server",
        account=ALICE,
    ),
    "auth-then-drop": Queued(
        Fault.auth_then_drop(),
        "connection_failed",
        None,
        # The hang-up is seen as an end of file when it arrives while the client waits
        # for a reply, as a lost connection when it arrived during the hand-over from the
        # login to the mail transaction: the same fault, and the same hint.
        ("Unexpected EOF received", "Connection lost"),
        "disconnected",
        server="starttls_server",
        account=ALICE,
        logged_in=True,
    ),
}


def _shows(error: str | tuple[str, ...], text: str) -> bool:
    return any(part in text for part in ((error,) if isinstance(error, str) else error))


@pytest.mark.parametrize("case", QUEUED.values(), ids=QUEUED.keys())
def test_a_failed_send_is_queued_and_delivered_exactly_once(request, mailer, clock, case):
    server: SMTPTestServer = request.getfixturevalue(case.server)
    account = SmtpAccountFactory.for_server(
        server, name="A", is_site_default=True, timeout=1, **case.account
    )
    server.add_fault(case.fault)
    msg = message()

    # The caller: accepted for later delivery (counted as sent), with the reason.
    assert send(msg) == 1
    status = msg.multismtp_status
    assert (status.outcome, status.queued, status.attempts) == ("queued", True, 1)
    assert _shows(case.error, status.error)
    assert server.received == []
    assert server.auth_attempts == ([("CRAM-MD5", "alice", True)] if case.logged_in else [])

    # The account: only failures about the account are recorded on it; throttling
    # replies pause it for THROTTLE_BACKOFF.
    if case.account_level:
        paused_until = clock() + MINUTE if case.throttled else None
        assert pause(account) == (case.code, paused_until, int(case.throttled))
        assert _shows(case.error, account.last_error)
        assert case.hint is None or HINTS[case.hint] in account.last_error
    else:
        assert pause(account) == (None, None, 0)
        assert account.last_error == ""

    # The log: one attempt, as it ended.
    assert log_rows() == [("A", case.outcome, case.code, 1)]

    # The outbox: one row, one failed pass, due after the first back-off (one minute,
    # which is also exactly when a throttled account's pause ends).
    row = OutboxMessage.objects.get()
    assert row.message_id == status.message_id
    assert (row.status, row.attempts, row.deferrals, row.smtp_attempts) == (Status.QUEUED, 1, 0, 1)
    assert _shows(case.error, row.last_error)
    assert case.hint is None or HINTS[case.hint] in row.last_error
    assert row.last_error_code == case.code
    assert row.next_attempt_at == clock() + MINUTE
    if case.throttled:
        assert row.next_attempt_at == account.rate_limited_until

    result = heal_and_drain(clock, row.next_attempt_at, server)

    assert (result.sent, result.retrying, result.failed) == (1, 0, 0)
    assert received_ids(server) == [status.message_id]  # once, with the same Message-ID
    if case.account:
        assert server.received[0].login == "alice"
    row.refresh_from_db()
    assert (row.status, row.sent_by, row.smtp_attempts) == (Status.SENT, account, 2)
    assert log_rows() == [("A", case.outcome, case.code, 1), ("A", "sent", 250, 2)]
    assert pause(account)[2] == 0  # a success ends the throttle streak


# -- permanent refusals: raised (or reported), never queued --------------------------------

PERMANENT = {
    "550-rcpt": (Fault.reply(550, "5.1.1 User unknown", stage="RCPT"), "5.1.1 User unknown"),
    "554-data": (Fault.reply(554, "5.7.1 Message rejected as spam"), "5.7.1 Message rejected"),
}


@pytest.mark.parametrize("fail_silently", [False, True], ids=["raises", "fail-silently"])
@pytest.mark.parametrize(("fault", "error"), PERMANENT.values(), ids=PERMANENT.keys())
def test_a_permanent_refusal_is_reported_logged_and_never_queued(
    settings, smtp_server, clock, fault, error, fail_silently
):
    use_mailers(settings, default={"OPTIONS": {"fail_silently": fail_silently}})
    account = SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True)
    smtp_server.add_fault(fault)
    msg = message()

    if fail_silently:
        assert send(msg) == 0
    else:
        with pytest.raises(SendFailed) as caught:
            send(msg)
        assert caught.value.failure is not None
        assert (caught.value.failure.outcome, caught.value.failure.code) == (
            "permanent",
            fault.code,
        )
        assert error in str(caught.value)
    status = msg.multismtp_status
    assert (status.outcome, status.queued, status.attempts) == ("permanent", False, 1)
    assert error in status.error

    assert not OutboxMessage.objects.exists()
    assert log_rows() == [("A", "permanent", fault.code, 1)]
    # About the message, not the account: nothing recorded on it, no pause.
    assert pause(account) == (None, None, 0)
    assert account.last_error == ""

    # Nothing comes back later either: the caller was told, and that is final.
    smtp_server.clear_faults()
    clock.advance(hours=1)
    assert worker.drain().sent == 0
    assert smtp_server.received == []


# -- failover -----------------------------------------------------------------------------


def test_a_throttled_account_fails_over_at_once_and_nothing_is_queued(
    pair, smtp_server, second_server, clock
):
    a, b = pair
    smtp_server.add_fault(Fault.reply(454, THROTTLE))
    msg = message()

    assert send(msg) == 1
    status = msg.multismtp_status
    assert (status.outcome, status.account, status.attempts, status.queued) == (
        "sent",
        "B",
        2,
        False,
    )
    assert not OutboxMessage.objects.exists()
    assert pause(a) == (454, clock() + MINUTE, 1)
    assert pause(b) == (None, None, 0)
    assert log_rows() == [("A", "throttled", 454, 1), ("B", "sent", 250, 2)]

    clock.advance(hours=1)
    assert worker.drain().sent == 0
    assert received_ids(smtp_server, second_server) == [status.message_id]


def test_when_every_account_throttles_the_message_is_queued_once_until_the_first_pause_ends(
    pair, smtp_server, second_server, clock
):
    a, b = pair
    # Earlier throttles lengthen the next pause (doubling): A's becomes 8 minutes, B's 4.
    SmtpAccount.objects.filter(pk=a.pk).update(consecutive_throttles=3)
    SmtpAccount.objects.filter(pk=b.pk).update(consecutive_throttles=2)
    for server in (smtp_server, second_server):
        server.add_fault(Fault.reply(454, THROTTLE))
    msg = message()

    assert send(msg) == 1
    status = msg.multismtp_status
    assert (status.outcome, status.queued, status.attempts) == ("queued", True, 2)
    assert pause(a) == (454, clock() + 8 * MINUTE, 4)
    assert pause(b) == (454, clock() + 4 * MINUTE, 3)
    assert log_rows() == [("A", "throttled", 454, 1), ("B", "throttled", 454, 2)]
    row = OutboxMessage.objects.get()  # once, though two accounts refused it
    assert (row.status, row.attempts, row.deferrals, row.smtp_attempts) == (Status.QUEUED, 1, 0, 2)
    assert row.last_error_code == 454 and THROTTLE in row.last_error
    # Not after the back-off (1 minute) nor the last pause (8): when B may send again.
    assert row.next_attempt_at == b.rate_limited_until

    result = heal_and_drain(clock, row.next_attempt_at, smtp_server, second_server)

    assert (result.sent, result.retrying) == (1, 0)
    assert smtp_server.received == []  # A is still paused
    assert received_ids(second_server) == [status.message_id]
    row.refresh_from_db()
    assert (row.status, row.sent_by) == (Status.SENT, b)
    assert log_rows()[-1] == ("B", "sent", 250, 3)


# -- a batch ------------------------------------------------------------------------------


def test_a_disconnect_inside_a_batch_loses_none_of_it(mailer, smtp_server, clock):
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, timeout=1)
    smtp_server.add_fault(Fault.disconnect(on_message=5))
    messages = [message(f"m{n}") for n in range(1, 21)]

    assert send(*messages) == 20  # sent or accepted for later
    outcomes = [m.multismtp_status.outcome for m in messages]
    assert outcomes == ["sent"] * 4 + ["queued"] * 16
    ids = [m.multismtp_status.message_id for m in messages]
    assert len(set(ids)) == 20
    assert received_ids(smtp_server) == ids[:4]

    # Message 5 reached the server; 6-20 were never tried (the account was out for the
    # rest of the batch) and wait as deferrals, with the failure that stopped them.
    rows = {row.message_id: row for row in OutboxMessage.objects.all()}
    assert sorted(rows) == sorted(ids[4:])
    assert (rows[ids[4]].attempts, rows[ids[4]].deferrals) == (1, 0)
    assert {(r.attempts, r.deferrals) for mid, r in rows.items() if mid != ids[4]} == {(0, 1)}
    assert all(HINTS["disconnected"] in r.last_error for r in rows.values())
    assert {r.status for r in rows.values()} == {Status.QUEUED}
    assert log_rows() == [("A", "sent", 250, 1)] * 4 + [("A", "connection_failed", None, 1)]

    due = max(r.next_attempt_at for r in rows.values())
    assert due == clock() + MINUTE
    result = heal_and_drain(clock, due, smtp_server)

    assert (result.sent, result.retrying, result.failed) == (16, 0, 0)
    arrived = Counter(received_ids(smtp_server))
    assert set(arrived) == set(ids)
    assert set(arrived.values()) == {1}  # every message exactly once: none lost, none twice
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {Status.SENT}
    assert log_rows(ids[4]) == [("A", "connection_failed", None, 1), ("A", "sent", 250, 2)]
