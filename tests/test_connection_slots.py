"""Connection slots: ``max_connections`` is one budget for every process and machine.

Real parts throughout: the slots are rows of the test database (SQLite here, PostgreSQL
with ``--ds=tests.settings_pg``), the servers are real SMTP servers in this process, and
the processes that compete for slots are real child processes. Leases run out when the
test moves the shared clock (``tests.clocks``), never after a wait.
"""

from __future__ import annotations

import datetime as dt
import signal
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_multismtp import slots, worker
from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import NoAccountAvailable
from django_multismtp.models import ConnectionSlot, DeliveryLog, OutboxMessage
from tests.clocks import set_time
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction, get_mailer
from tests.processes import start, start_together, stop, wait_until
from tests.smtp_servers import Fault

LEASE = dt.timedelta(minutes=2)


def messages(count: int, prefix: str = "m") -> list[EmailMessage]:
    return [
        EmailMessage(subject=f"{prefix}{i}", body="b", to=[f"to{i}@example.test"])
        for i in range(count)
    ]


def no_wait(settings: Any, **more: Any) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "CONNECTION_WAIT": 0, **more}


# -- the lease itself ---------------------------------------------------------------------


@pytest.mark.django_db
def test_two_holders_never_share_a_slot_and_an_expired_lease_is_free_again(clock):
    account = SmtpAccountFactory(name="shared", max_connections=2)
    first, second = slots.Holder(), slots.Holder()
    assert first.claim(account, 2, clock()).held == 2
    assert second.claim(account, 2, clock()).held == 0  # both are first's
    assert set(ConnectionSlot.objects.values_list("holder", flat=True)) == {first.name}

    clock.advance(seconds=LEASE.total_seconds() - 1)
    assert second.claim(account, 1, clock()).held == 0  # still first's lease
    clock.advance(seconds=2)
    # first's process died (it renews no more): its slots are anyone's now.
    assert second.claim(account, 2, clock()).held == 2
    assert first.renew(clock(), force=True) == {account.pk}  # it learns it lost them
    assert first.held == {}

    second.release()
    assert first.claim(account, 1, clock()).held == 1


@pytest.mark.django_db
def test_renewing_keeps_a_long_running_holders_slots(clock):
    account = SmtpAccountFactory(name="long", max_connections=1)
    holder, other = slots.Holder(), slots.Holder()
    assert holder.claim(account, 1, clock()).held == 1
    for _ in range(10):  # twenty minutes of sending, renewed as it goes
        clock.advance(minutes=2)
        assert holder.renew(clock(), force=True) == set()
        assert other.claim(account, 1, clock()).held == 0
    holder.release()
    assert other.claim(account, 1, clock()).held == 1


@pytest.mark.django_db
def test_lowering_max_connections_lowers_the_budget(clock):
    account = SmtpAccountFactory(name="shrunk", max_connections=3)
    assert slots.Holder().claim(account, 3, clock()).held == 3
    account.max_connections = 1
    ConnectionSlot.objects.update(holder="", expires_at=None)
    holder = slots.Holder()
    assert holder.claim(account, 3, clock()).held == 1  # slot rows 1 and 2 no longer count


@pytest.mark.django_db
def test_a_holder_of_every_slot_gives_a_waiter_its_share(clock):
    account = SmtpAccountFactory(name="shared", max_connections=4)
    first, second, third = slots.Holder(), slots.Holder(), slots.Holder()
    assert first.claim(account, 4, clock()).held == 4  # alone: all of them
    assert second.claim(account, 4, clock()).held == 0
    second.want(account.pk, clock())
    # first's next round: it keeps its half and names the slots to give back.
    claim = first.claim(account, 4, clock())
    assert (claim.held, claim.surplus) == (2, (2, 3))
    first.give_back(account.pk, claim.surplus)
    assert second.claim(account, 4, clock()).held == 2  # its share, not more
    assert first.claim(account, 4, clock()).held == 2  # nobody waits: no change
    third.want(account.pk, clock())
    for holder in (first, second):
        claim = holder.claim(account, 4, clock())
        assert claim.held == 1
        holder.give_back(account.pk, claim.surplus)
    assert third.claim(account, 4, clock()).held == 2  # the uneven split's leftover
    holders = list(ConnectionSlot.objects.values_list("holder", flat=True))
    assert sorted(holders.count(h.name) for h in (first, second, third)) == [1, 1, 2]


@pytest.mark.django_db
def test_waiters_that_arrive_together_each_get_their_share_in_one_round(clock):
    """Two waiters are two sharers, and the first one served leaves the other's mark:
    the holder gives back enough for both at its next round. (Counted as one, with every
    mark cleared by the first served, the second waited for more rounds, up to a second
    each, with its batch claimed and unsent.)"""
    account = SmtpAccountFactory(name="shared", max_connections=6)
    holder, first, second = slots.Holder(), slots.Holder(), slots.Holder()
    assert holder.claim(account, 6, clock()).held == 6
    for waiter in (first, second):
        assert waiter.claim(account, 6, clock()).held == 0
        waiter.want(account.pk, clock())
    claim = holder.claim(account, 6, clock())  # its next round
    assert (claim.held, claim.surplus) == (2, (2, 3, 4, 5))
    holder.give_back(account.pk, claim.surplus)
    assert first.claim(account, 6, clock()).held == 2  # its share, not the whole surplus
    assert second.claim(account, 6, clock()).held == 2
    assert not ConnectionSlot.objects.filter(wanted_at__isnull=False).exists()
    assert holder.claim(account, 6, clock()) == slots.Claim(2)  # nobody waits any more


@pytest.mark.django_db
def test_a_waiter_that_gives_up_or_releases_clears_only_its_own_mark(clock):
    account = SmtpAccountFactory(name="shared", max_connections=2)
    holder, leaving, staying = slots.Holder(), slots.Holder(), slots.Holder()
    assert holder.claim(account, 2, clock()).held == 2
    leaving.want(account.pk, clock())
    staying.want(account.pk, clock())
    staying.want(account.pk, clock())  # renewing its mark takes no second row
    assert ConnectionSlot.objects.filter(wanted_at__isnull=False).count() == 2
    leaving.release()
    assert ConnectionSlot.objects.filter(wanted_at__isnull=False).count() == 1
    claim = holder.claim(account, 2, clock())  # one waiter left: half for it
    assert (claim.held, claim.surplus) == (1, (1,))


@pytest.mark.django_db
def test_a_limited_holder_takes_no_more_than_its_limit_and_leaves_the_rest(clock):
    account = SmtpAccountFactory(name="large", max_connections=8)
    first, second = slots.Holder(limit=3), slots.Holder(limit=3)
    assert first.claim(account, 8, clock()).held == 3
    assert second.claim(account, 8, clock()).held == 3
    assert slots.Holder().claim(account, 8, clock()).held == 2  # the rest: free till now
    holders = list(ConnectionSlot.objects.values_list("holder", flat=True))
    assert (holders.count(first.name), holders.count(second.name)) == (3, 3)


@pytest.mark.django_db
def test_a_holder_limited_after_it_claimed_gives_back_what_is_beyond_its_limit(clock):
    account = SmtpAccountFactory(name="large", max_connections=6)
    holder = slots.Holder()
    assert holder.claim(account, 6, clock()).held == 6
    holder.limit = 2
    claim = holder.claim(account, 6, clock())
    assert (claim.held, claim.surplus) == (2, (2, 3, 4, 5))
    holder.give_back(account.pk, claim.surplus)
    holders = list(ConnectionSlot.objects.values_list("holder", flat=True))
    assert (holders.count(holder.name), holders.count("")) == (2, 4)


# -- the engine ---------------------------------------------------------------------------


@direct_construction
@pytest.mark.django_db
def test_a_busy_account_hands_its_messages_to_a_free_pool_member(
    settings, smtp_server, second_server, clock
):
    no_wait(settings, OUTBOX="off")
    busy = SmtpAccountFactory.for_server(smtp_server, name="busy", max_connections=1)
    SmtpAccountFactory.for_server(second_server, name="free", max_connections=2)
    other_process = slots.Holder()
    assert other_process.claim(busy, 1, clock()).held == 1

    assert EmailBackend().send_messages(messages(6)) == 6
    assert len(second_server.wait_for(6)) == 6
    assert smtp_server.connections == 0  # never over busy's budget
    deferred = DeliveryLog.objects.filter(outcome="deferred", account=busy)
    assert deferred.exists()
    assert all("in use by other processes" in row.reply_text for row in deferred)
    assert not ConnectionSlot.objects.filter(holder__gt="").exclude(holder=other_process.name)


@direct_construction
@pytest.mark.django_db
def test_with_no_free_slot_anywhere_the_message_is_queued_as_busy(settings, smtp_server, clock):
    no_wait(settings)  # OUTBOX "retry", the default
    account = SmtpAccountFactory.for_server(smtp_server, name="only", is_site_default=True)
    other_process = slots.Holder()
    other_process.claim(account, 1, clock())

    backend = EmailBackend()
    message = messages(1)[0]
    assert backend.send_messages([message]) == 1  # accepted by the outbox
    assert message.multismtp_status.outcome == "queued"
    row = OutboxMessage.objects.get()
    assert (row.deferrals, row.attempts) == (1, 0)  # busy: a deferral, not a failure
    assert "in use by other processes" in row.last_error
    assert smtp_server.connections == 0

    other_process.release()
    clock.advance(minutes=5)  # past the retry back-off
    result = worker.drain()
    assert (result.sent, result.failed) == (1, 0)
    assert len(smtp_server.wait_for(1)) == 1
    assert not ConnectionSlot.objects.filter(holder__gt="").exists()  # given back


@direct_construction
@pytest.mark.django_db
def test_with_the_outbox_off_a_busy_account_raises_and_sends_nothing(settings, smtp_server, clock):
    no_wait(settings, OUTBOX="off")
    account = SmtpAccountFactory.for_server(smtp_server, name="only", is_site_default=True)
    slots.Holder().claim(account, 1, clock())
    with pytest.raises(NoAccountAvailable, match="in use by other processes"):
        EmailBackend().send_messages(messages(1))
    assert smtp_server.connections == 0


@direct_construction
@pytest.mark.django_db
def test_slots_are_held_while_open_and_given_back_on_close(smtp_server, clock):
    account = SmtpAccountFactory.for_server(
        smtp_server, name="bulk", is_site_default=True, max_connections=3
    )
    backend = EmailBackend()
    backend.open()
    backend.send_messages(messages(9))
    held = ConnectionSlot.objects.filter(account=account, holder=backend.engine.pool.slots.name)
    assert held.count() == 3 == smtp_server.connections
    backend.close()
    assert not held.exists()
    assert not ConnectionSlot.objects.filter(holder__gt="").exists()


@direct_construction
@pytest.mark.django_db
def test_an_open_backend_closes_the_connections_beyond_its_share_for_a_waiter(smtp_server, clock):
    account = SmtpAccountFactory.for_server(
        smtp_server, name="bulk", is_site_default=True, max_connections=4
    )
    backend = EmailBackend()
    backend.open()
    try:
        backend.send_messages(messages(8))
        smtp_server.wait_for(8)
        assert backend.engine.pool.slots.count(account.pk) == 4 == smtp_server.connections
        waiter = slots.Holder()
        waiter.want(account.pk, clock())
        backend.send_messages(messages(8))  # its next batch: half of the budget
        smtp_server.wait_for(16)
        assert backend.engine.pool.slots.count(account.pk) == 2
        assert waiter.claim(account, 4, clock()).held == 2
        assert smtp_server.connections == 4  # the two kept were reused
    finally:
        backend.close()


@direct_construction
@pytest.mark.django_db
def test_a_worker_with_connections_opens_no_more_than_that_of_a_large_budget(
    settings, smtp_server, clock
):
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}
    account = SmtpAccountFactory.for_server(
        smtp_server, name="large", is_site_default=True, max_connections=6
    )
    EmailBackend().send_messages(messages(24))
    others = slots.Holder()  # another worker's share, still free to take afterwards
    result = worker.drain(batch_size=12, connections=2)
    assert (result.sent, result.failed) == (24, 0)
    assert len(smtp_server.wait_for(24)) == 24
    assert smtp_server.connections == 2  # of 6, reused from batch to batch
    assert others.claim(account, 6, clock()).held == 6  # given back at the end
    with pytest.raises(ValueError, match="connections must be at least 1"):
        worker.drain(connections=0)


@direct_construction
@pytest.mark.django_db
def test_queries_per_batch_do_not_grow_with_the_messages_per_account(
    smtp_server, second_server, clock
):
    """Slots are claimed per account and round: 1 or 50 messages per account cost the
    same statements."""
    SmtpAccountFactory.for_server(
        smtp_server, name="a", is_site_default=True, max_connections=3, limit_per_hour=10**6
    )
    SmtpAccountFactory.for_server(
        second_server, name="b", from_email="b@example.test", max_connections=2
    )

    def batch(per_account: int) -> list[EmailMessage]:
        result = messages(2 * per_account)
        for index, message in enumerate(result):
            message.smtp_account = "a" if index % 2 else "b"
        return result

    EmailBackend().send_messages(batch(1))  # creates slot rows and usage counters
    counts = []
    for per_account in (1, 50):
        with CaptureQueriesContext(connection) as queries:
            assert EmailBackend().send_messages(batch(per_account)) == 2 * per_account
        counts.append(len(queries))
        slot_queries = [q for q in queries if "connectionslot" in q["sql"].lower()]
        assert len(slot_queries) == 5  # a read and a claim per account, one release
    assert counts[0] == counts[1], counts


# -- real processes -----------------------------------------------------------------------


EACH = 30


@pytest.mark.django_db(transaction=True)
def test_two_processes_together_open_no_more_than_max_connections(mailer, smtp_server):
    SmtpAccountFactory.for_server(
        smtp_server, name="shared", is_site_default=True, max_connections=2
    )
    # The first message each connection sends waits a moment at the server, so both
    # processes are certainly sending (or waiting for a slot) at the same time: alone,
    # each would open both connections, four in all.
    smtp_server.add_fault(Fault.stall(0.3, times=2))
    children = [start(["-m", "tests.child_send", f"p{n}", str(EACH)], stdin=True) for n in (0, 1)]
    try:
        start_together(children)
        outcomes = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            outcomes.extend(line.split()[1] for line in out.splitlines())
    finally:
        stop(*children)
    assert outcomes == ["sent"] * (2 * EACH)
    received = smtp_server.wait_for(2 * EACH)
    assert sorted(str(r.message()["Subject"]) for r in received) == sorted(
        f"p{n}-{i}" for n in (0, 1) for i in range(EACH)
    )
    assert smtp_server.peak_connections == 2  # used, and never exceeded
    assert smtp_server.connections >= 2
    assert not ConnectionSlot.objects.filter(holder__gt="").exists()  # all given back


@pytest.mark.django_db(transaction=True)
def test_a_killed_process_loses_its_slot_when_the_lease_ends(
    settings, mailer, smtp_server, shared_clock
):
    clock_file, now = shared_clock
    no_wait(settings)
    account = SmtpAccountFactory.for_server(
        smtp_server, name="one", is_site_default=True, max_connections=1, timeout=120
    )
    smtp_server.add_fault(Fault.stall(60, on_message=1))  # the victim hangs mid-message
    victim = start(["-m", "tests.child_send", "victim", "1"], stdin=True)
    try:
        start_together([victim])
        wait_until(
            lambda: ConnectionSlot.objects.filter(holder__contains=f":{victim.pid}:").exists(),
            what="the victim holding the slot",
        )
        wait_until(lambda: smtp_server.connections == 1, what="the victim connecting")
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        stop(victim)
    smtp_server.clear_faults()

    # The dead process still holds the slot: nobody opens a second connection.
    first = messages(1, "while-held")
    assert get_mailer().send_messages(first) == 1
    assert first[0].multismtp_status.outcome == "queued"
    assert smtp_server.connections == 1
    assert ConnectionSlot.objects.get(account=account).holder.split(":")[1] == str(victim.pid)

    set_time(clock_file, now + LEASE + dt.timedelta(seconds=1))  # the lease ran out
    second = messages(1, "after-lease")
    assert get_mailer().send_messages(second) == 1
    assert second[0].multismtp_status.outcome == "sent"
    set_time(clock_file, now + dt.timedelta(minutes=10))  # the queued one is due
    result = worker.drain()
    assert (result.sent, result.failed) == (1, 0)
    subjects = {str(r.message()["Subject"]) for r in smtp_server.wait_for(2)}
    assert {"while-held0", "after-lease0"} <= subjects
    assert not ConnectionSlot.objects.filter(holder__gt="").exists()


def test_slots_need_the_database_only_when_held() -> None:
    """A pool that holds nothing gives nothing back: closing a backend that never sent
    touches no database (Django closes backends in places without one)."""
    holder = slots.Holder()
    holder.release()
    assert holder.renew(timezone.now(), force=True) == set()
