"""One message's failure never poisons the worker's batch (issue #12, item 8), and rows
are settled while the batch is still being sent (item 9).

Whatever raises while the worker handles one message (reading its row, working out its
envelope, rendering it, a pre_send receiver, classifying the server's reply, recording
account state, writing the delivery log, settling or storing the row), the other
messages of the batch are delivered exactly once, the bad one is settled (its attempt
counted, so OUTBOX_MAX_ATTEMPTS ends the loop) and no row stays claimed until the lease runs out.

Faults are injected through real seams: a pre_send receiver, or one of our own functions
monkeypatched to raise for the marked message. The SMTP server (``tests/smtp_servers.py``)
and the database are real; retries are driven by moving the ``clock`` fixture.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp import outbox, signals, state, transport, worker
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from django_multismtp.outgoing import Outgoing
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = pytest.mark.django_db

BATCH = 20
MAX_ATTEMPTS = 3
POISON = "poison@example.test"
#: The reply the server gives the marked message in the stages that need a failure to
#: happen (classifying it, recording it, logging it, settling it).
REFUSAL = "4.3.0 poisoned mailbox"
RECEIVER = "test_outbox_isolation"
Status = OutboxMessage.Status


class Injected(Exception):
    """The fault a test injects: never raised by the package itself."""


def marked(text: Any) -> bool:
    return "poison" in str(text)


# -- the stages ---------------------------------------------------------------------------


def refuse_the_marked_recipient(server: SMTPTestServer) -> None:
    server.add_fault(Fault.reply(451, REFUSAL, stage="RCPT", recipient=POISON, times=None))


def fault_in_reading(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    from_row = Outgoing.from_row.__func__  # type: ignore[attr-defined]

    def raising(cls: type[Outgoing], index: int, row: OutboxMessage, *rest: Any) -> Outgoing:
        if POISON in row.recipients():
            raise Injected("reading")
        return from_row(cls, index, row, *rest)  # type: ignore[no-any-return]

    monkeypatch.setattr(Outgoing, "from_row", classmethod(raising))
    return "Injected('reading')"


def fault_in_envelope(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    sender = Outgoing.sender

    def raising(self: Outgoing, account: Any) -> str:
        if POISON in self.envelope_recipients:
            raise Injected("envelope")
        return sender(self, account)

    monkeypatch.setattr(Outgoing, "sender", raising)
    return "Injected('envelope')"


def fault_in_render(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    render = Outgoing.render

    def raising(self: Outgoing, account: Any) -> bytes:
        if POISON in self.envelope_recipients:
            raise Injected("render")
        return render(self, account)

    monkeypatch.setattr(Outgoing, "render", raising)
    return "Injected('render')"


def fault_in_pre_send(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    def receiver(sender: Any, message: Any, **kwargs: Any) -> None:
        if POISON in message.recipients():
            raise Injected("pre_send")

    signals.pre_send.connect(receiver, weak=False, dispatch_uid=RECEIVER)
    return "Injected('pre_send')"


def fault_in_classify(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    refuse_the_marked_recipient(server)
    classify = transport.classify_exception

    def raising(exc: BaseException, **kwargs: Any) -> Any:
        if marked(exc) or any(marked(r) for r in getattr(exc, "recipients", ())):
            raise Injected("classify")
        return classify(exc, **kwargs)

    monkeypatch.setattr(transport, "classify_exception", raising)
    return "Injected('classify')"


def fault_in_record_state(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    refuse_the_marked_recipient(server)
    record_failover = state.record_failover

    def raising(account: Any, to: Any, failure: Any) -> None:
        if marked(failure.text):
            raise Injected("record state")
        record_failover(account, to, failure)

    monkeypatch.setattr(state, "record_failover", raising)
    return "Injected('record state')"


def fault_in_store(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    """The database refuses the row's update (as PostgreSQL refuses a NUL in its error
    text): the others are written, and this one without the text it refused."""
    refuse_the_marked_recipient(server)
    update_rows = outbox.update_rows

    def raising(model: Any, objects: Any, fields: Any, **kwargs: Any) -> int:
        if any(marked(row.last_error) for row in objects):
            raise Injected("store")
        return update_rows(model, objects, fields, **kwargs)

    monkeypatch.setattr(outbox, "update_rows", raising)
    return "Internal error while storing the outcome: Injected"


def fault_in_write_log(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    """The log insert fails for a row the database refuses (as PostgreSQL refuses a NUL
    in a reply text): the log is a record, so the message's own outcome stands."""
    refuse_the_marked_recipient(server)
    write_log = state.write_log

    def raising(entries: list[DeliveryLog], **kwargs: Any) -> Any:
        if any(marked(entry.reply_text) for entry in entries):
            raise Injected("write log")
        return write_log(entries, **kwargs)

    monkeypatch.setattr(state, "write_log", raising)
    return REFUSAL


def fault_in_log_refused(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    """The database itself refuses the marked message's log row (a negative duration
    breaks the column's CHECK constraint), so on PostgreSQL the statement aborts the
    transaction it runs in: the chunk's settlements must be written all the same."""
    from django_multismtp import engine

    log_row = engine._log_row

    def refused(item: Any, account: Any, **kwargs: Any) -> DeliveryLog:
        row = log_row(item, account, **kwargs)
        if marked(kwargs["text"]):
            row.duration_ms = -1
        return row

    refuse_the_marked_recipient(server)
    monkeypatch.setattr(engine, "_log_row", refused)
    return REFUSAL


def fault_in_store_refused(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    """The database itself refuses the marked row's settlement the first time in each
    pass (a negative count breaks the column's CHECK constraint), which on PostgreSQL
    aborts the transaction the chunk's log rows are in: the chunk is written again,
    every row settled in that pass and counted once (a row settled twice would give up
    before OUTBOX_MAX_ATTEMPTS passes)."""
    refuse_the_marked_recipient(server)
    outcome = outbox._outcome
    refused: set[tuple[Any, int]] = set()

    def refusing(item: Any, row: OutboxMessage, limits_: Any) -> None:
        first = (row.pk, row.attempts) not in refused
        outcome(item, row, limits_)
        if marked(row.last_error) and first:
            refused.add((row.pk, row.attempts - 1))
            row.deferrals = -1

    monkeypatch.setattr(outbox, "_outcome", refusing)
    return REFUSAL


def fault_in_settle(monkeypatch: pytest.MonkeyPatch, server: SMTPTestServer) -> str:
    refuse_the_marked_recipient(server)
    error_text = outbox.error_text

    def raising(failure: Any) -> str:
        if failure is not None and marked(failure.text):
            raise Injected("settle")
        return error_text(failure)

    monkeypatch.setattr(outbox, "error_text", raising)
    return "Injected('settle')"


STAGES: dict[str, Callable[[pytest.MonkeyPatch, SMTPTestServer], str]] = {
    "read-row": fault_in_reading,
    "envelope": fault_in_envelope,
    "render": fault_in_render,
    "pre_send": fault_in_pre_send,
    "classify": fault_in_classify,
    "record-state": fault_in_record_state,
    "write-log": fault_in_write_log,
    "log-refused": fault_in_log_refused,
    "settle": fault_in_settle,
    "store": fault_in_store,
    "store-refused": fault_in_store_refused,
}


# -- helpers ------------------------------------------------------------------------------


@pytest.fixture
def queued(settings: Any, mailer: None, smtp_server: SMTPTestServer, clock: Any) -> list[str]:
    """A batch of 20 in the outbox, the 8th to the marked recipient; their Message-IDs."""
    settings.MULTISMTP = {
        **settings.MULTISMTP,
        "OUTBOX": "always",
        "OUTBOX_MAX_ATTEMPTS": MAX_ATTEMPTS,
    }
    SmtpAccountFactory.for_server(smtp_server, name="A", is_site_default=True, max_connections=2)
    messages = [
        EmailMessage(subject=f"m{n}", body=f"Body {n}\n", to=["to@example.test"])
        for n in range(BATCH)
    ]
    messages[7].to = [POISON]
    assert get_mailer().send_messages(messages) == BATCH
    return [m.multismtp_status.message_id for m in messages]


@pytest.fixture(autouse=True)
def _receivers() -> Iterator[None]:
    yield
    signals.pre_send.disconnect(dispatch_uid=RECEIVER)


def claimed() -> list[str]:
    return list(OutboxMessage.objects.exclude(locked_by="").values_list("subject", flat=True))


def received(server: SMTPTestServer) -> Counter[str]:
    return Counter(str(r.message()["Message-ID"]) for r in server.received)


def drive_to_the_end(clock: Any, poison: OutboxMessage) -> list[outbox.Settlement]:
    """Drain, then move the clock to the marked row's next attempt, until it is settled
    for good; no row may stay claimed after any pass."""
    results = []
    for _ in range(MAX_ATTEMPTS + 2):
        results.append(worker.drain())
        assert claimed() == []
        poison.refresh_from_db()
        if poison.status != Status.QUEUED:
            return results
        assert poison.next_attempt_at > clock()  # backing off, not spinning
        clock.current = poison.next_attempt_at
    raise AssertionError(f"still queued after {len(results)} passes: {poison.last_error}")


# -- the tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES.values(), ids=STAGES.keys())
def test_a_fault_with_one_message_spares_the_rest_of_the_batch(
    monkeypatch, smtp_server, clock, queued, stage
):
    error = stage(monkeypatch, smtp_server)
    poison = OutboxMessage.objects.get(message_id=queued[7])
    others = queued[:7] + queued[8:]

    results = drive_to_the_end(clock, poison)

    assert sum(r.sent for r in results) == BATCH - 1
    assert results[0].sent == BATCH - 1  # the first pass, not a later retry
    assert received(smtp_server) == Counter(others)  # each exactly once, the bad one never
    assert set(
        OutboxMessage.objects.filter(message_id__in=others).values_list("status", flat=True)
    ) == {Status.SENT}
    assert len(results) == MAX_ATTEMPTS
    assert (poison.status, poison.attempts) == (Status.FAILED, MAX_ATTEMPTS)
    assert poison.last_error.startswith(f"Gave up after {MAX_ATTEMPTS} attempts.")
    assert error in poison.last_error
    assert sum(r.failed for r in results) == 1
    # The delivery log still has every message that went out.
    sent_log = DeliveryLog.objects.filter(outcome="sent").values_list("message_id", flat=True)
    assert Counter(sent_log) == Counter(others)


def test_a_whole_batch_failure_settles_its_rows_and_counts_the_attempt(
    monkeypatch, smtp_server, clock, queued
):
    """Nothing of the batch can be sent (loading the accounts fails): every row is given
    back at once with the error and a counted attempt, so the loop ends after
    OUTBOX_MAX_ATTEMPTS instead of each pass waiting out the lease."""
    from django_multismtp import engine

    def broken() -> Any:
        raise Injected("accounts")

    monkeypatch.setattr(engine, "load_accounts", broken)
    poison = OutboxMessage.objects.get(message_id=queued[7])
    results = drive_to_the_end(clock, poison)

    assert len(results) == MAX_ATTEMPTS
    assert sum(r.failed for r in results) == BATCH
    assert smtp_server.received == []
    rows = OutboxMessage.objects.all()
    assert {(r.status, r.attempts, r.smtp_attempts) for r in rows} == {
        (Status.FAILED, MAX_ATTEMPTS, 0)
    }
    assert all("Injected('accounts')" in r.last_error for r in rows)


def test_a_failed_log_write_still_settles_the_sent_rows_as_sent(
    monkeypatch, smtp_server, clock, queued
):
    """The log write of the whole batch fails (the database refuses it): the messages
    went out all the same, so their rows say so and nothing is sent twice."""

    def broken(entries: list[DeliveryLog], **kwargs: Any) -> None:
        raise Injected("log")

    monkeypatch.setattr(state, "write_log", broken)
    result = worker.drain()

    assert (result.sent, result.retrying, result.failed) == (BATCH, 0, 0)
    assert claimed() == []
    assert received(smtp_server) == Counter(queued)
    clock.advance(hours=1)
    assert worker.drain().sent == 0
    assert received(smtp_server) == Counter(queued)


@pytest.mark.django_db(transaction=True)
def test_a_settled_chunk_takes_no_savepoint(smtp_server, clock, queued):
    """Each chunk's log rows and settlement are written together with no savepoint: if
    the database refuses either, nothing of the chunk is written and it is written
    again with each part guarded (the "log-refused" and "store-refused" stages above).
    On PostgreSQL that is one statement, with no transaction around it (a worker runs
    in autocommit); elsewhere one transaction. Savepoints around each part were four
    more statements per chunk for the database, the transaction two more (issue #17)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from django_multismtp.engine import SettleEvery

    with CaptureQueriesContext(connection) as queries:
        result = worker.drain(every=SettleEvery(replies=5, seconds=None))

    assert (result.sent, result.retrying) == (BATCH, 0)
    statements = [str(query["sql"]) for query in queries.captured_queries]
    table = DeliveryLog._meta.db_table
    inserts = [i for i, sql in enumerate(statements) if f'INSERT INTO "{table}"' in sql]
    assert len(inserts) >= 2  # chunks of 5 replies or more, then the rest
    update = f'UPDATE "{OutboxMessage._meta.db_table}"'
    for i in inserts:
        around = statements[i - 1 : i + 3]
        assert not statements[i - 1].startswith("SAVEPOINT"), around
        if connection.vendor == "postgresql":
            assert statements[i].startswith(f'WITH logged AS (INSERT INTO "{table}"'), around
            assert update in statements[i], around
            assert statements[i - 1] != "BEGIN" and statements[i + 1] != "COMMIT", around
        else:
            assert update in statements[i + 1], around
            assert not statements[i + 2].startswith("RELEASE"), around
    assert DeliveryLog.objects.filter(outcome="sent").count() == BATCH


# -- settled as the replies arrive (item 9) -----------------------------------------------


def test_rows_are_settled_while_the_batch_is_still_being_sent(smtp_server, clock, queued):
    """The first chunk is written (and reported) while the server still holds a later
    message: a worker killed then would send again only what was not written."""
    from django_multismtp.engine import SettleEvery

    OutboxMessage.objects.update(next_attempt_at=clock())
    smtp_server.add_fault(Fault.stall(2, on_message=15))  # the 15th waits 2 s for its 250
    seen: list[tuple[int, int]] = []

    def receiver(sender: Any, message: Any, status: Any, **kwargs: Any) -> None:
        if not seen:  # the first report: the first chunk was just written
            sent = OutboxMessage.objects.filter(status=Status.SENT).count()
            seen.append((sent, len(smtp_server.received)))

    signals.post_send.connect(receiver, weak=False, dispatch_uid=RECEIVER)
    try:
        # One connection, so the messages go out in order and the 15th holds the rest.
        SmtpAccount.objects.update(max_connections=1)
        result = worker.drain(every=SettleEvery(replies=5, seconds=None))
    finally:
        signals.post_send.disconnect(dispatch_uid=RECEIVER)

    assert (result.sent, result.retrying) == (BATCH, 0)
    sent_then, received_then = seen[0]
    assert sent_then == 5  # one chunk, written before the batch was over
    assert received_then < 15
    assert claimed() == []
