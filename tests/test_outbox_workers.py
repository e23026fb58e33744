"""Many processes at once: workers that die, and web processes sharing one limit.

These are the outbox's promises under concurrency, proven with real processes against
one database and one counting SMTP server in this process:

* several ``send_queued_mail`` workers drain a few thousand messages while one of them
  is killed with SIGKILL in the middle of a batch: every message arrives at least
  once, and the duplicates are bounded by what was in flight (its connections plus one
  unwritten settle chunk), not by its batch, because a worker settles rows as their
  replies arrive; each possible duplicate is recorded;
* four processes send through one account limited to L per minute: at most L go out
  in the window and every other message is in the outbox.

Time is a file all processes read (``tests.clocks``), so the dead worker's lease runs
out when the test says so, not after a wait.
"""

from __future__ import annotations

import datetime as dt
import signal
from collections import Counter

import pytest
from django.db import connection

from django_multismtp import worker
from django_multismtp.engine import SETTLE_EVERY
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from tests.clocks import set_time
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.processes import start, start_together, stop
from tests.smtp_servers import Fault, SMTPTestServer
from tests.test_outbox import message

MESSAGES = 2000
BATCH = 100
SURVIVORS = 3
CONNECTIONS = 2


def ids_received(server: SMTPTestServer) -> Counter[str]:
    return Counter(str(r.message()["Message-ID"]) for r in server.received)


def claimed_by(pid: int) -> set[str]:
    rows = OutboxMessage.objects.filter(status="queued", locked_by__contains=f":{pid}:")
    return set(rows.values_list("message_id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_batch_loses_nothing(settings, mailer, smtp_server, shared_clock):
    if connection.vendor != "postgresql":
        pytest.skip("several workers on one database: the PostgreSQL run covers it")
    clock_file, now = shared_clock
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}
    SmtpAccountFactory.for_server(
        smtp_server, name="bulk", is_site_default=True, max_connections=CONNECTIONS, timeout=120
    )
    assert get_mailer().send_messages([message(f"m{i}") for i in range(MESSAGES)]) == MESSAGES
    queued_ids = set(OutboxMessage.objects.values_list("message_id", flat=True))
    assert len(queued_ids) == MESSAGES

    # The victim starts alone; the server holds its third message for 60 s, so it is
    # certainly in the middle of its first batch: its other connection sends on, the
    # stalled one holds the rest of its share.
    smtp_server.add_fault(Fault.stall(60, on_message=3))
    command = ["-m", "django", "send_queued_mail", "--batch", str(BATCH)]
    victim = start(command)
    survivors = []
    try:
        smtp_server.wait_for(2, timeout=60)
        assert claimed_by(victim.pid)
        # The victim holds the account's connection slots (max_connections is one budget
        # for every process) and will never give them back: room for the survivors.
        SmtpAccount.objects.filter(name="bulk").update(
            max_connections=CONNECTIONS * (1 + SURVIVORS)
        )
        survivors = [start(command) for _ in range(SURVIVORS)]
        smtp_server.wait_for(300, timeout=120)  # the others are draining too
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        # Killed holding part of its batch: what it sent, it had settled as the replies
        # came, so of the rows it still held (to be sent again) at most those in flight
        # and one unwritten chunk had reached the server.
        held = claimed_by(victim.pid)
        sent_before = set(ids_received(smtp_server))
        assert 0 < len(held) < BATCH
        at_risk = held & sent_before
        assert len(at_risk) <= CONNECTIONS + (SETTLE_EVERY.replies or BATCH)
        for survivor in survivors:
            out, err = survivor.communicate(timeout=300)
            assert survivor.returncode == 0, err
    finally:
        stop(victim, *survivors)

    # The survivors stopped with the victim's rows still leased; nothing else waits.
    assert (
        set(OutboxMessage.objects.exclude(status="sent").values_list("message_id", flat=True))
        == held
    )
    set_time(clock_file, now + dt.timedelta(minutes=10, seconds=1))  # the lease is over
    result = worker.drain()
    assert (result.sent, result.failed) == (len(held), 0)

    received = ids_received(smtp_server)
    assert set(received) == queued_ids  # every message arrived
    duplicates = {mid: n - 1 for mid, n in received.items() if n > 1}
    # Sent twice: exactly the held rows that had reached the server, each once more.
    assert duplicates == dict.fromkeys(at_risk, 1)
    assert sum(duplicates.values()) <= CONNECTIONS + (SETTLE_EVERY.replies or BATCH)
    flagged = set(
        OutboxMessage.objects.filter(possible_duplicate=True).values_list("message_id", flat=True)
    )
    assert flagged == held
    assert set(duplicates) <= flagged  # every duplicate send is on record
    noted = DeliveryLog.objects.filter(
        outcome="sent", reply_text__contains="possible duplicate"
    ).values_list("message_id", flat=True)
    assert set(noted) == flagged
    assert OutboxMessage.objects.filter(status="sent").count() == MESSAGES


LIMIT = 30
PROCESSES = 4
EACH = 20


@pytest.mark.django_db(transaction=True)
def test_four_processes_share_one_accounts_limit_and_queue_the_rest(smtp_server, shared_clock):
    SmtpAccountFactory.for_server(
        smtp_server, name="limited", is_site_default=True, limit_per_minute=LIMIT
    )
    children = [
        start(["-m", "tests.child_send", f"p{n}", str(EACH)], stdin=True) for n in range(PROCESSES)
    ]
    try:
        start_together(children)
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outputs.extend(line.split() for line in out.splitlines())
    finally:
        stop(*children)

    outcomes = {subject: outcome for subject, outcome in outputs}
    assert len(outcomes) == PROCESSES * EACH
    sent = {str(r.message()["Subject"]) for r in smtp_server.received}
    queued = set(OutboxMessage.objects.values_list("subject", flat=True))
    assert len(smtp_server.received) == len(sent) == LIMIT  # at most L, and L were free
    assert sent | queued == set(outcomes)  # nothing lost
    assert not sent & queued
    assert {s for s, o in outcomes.items() if o == "sent"} == sent
    assert {s for s, o in outcomes.items() if o == "queued"} == queued
    assert all(row.deferrals == 1 and row.attempts == 0 for row in OutboxMessage.objects.all())
