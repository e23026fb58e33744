"""Batches scale: connections per account up to max_connections, and database work per
batch that does not grow with the number of messages."""

from __future__ import annotations

import pytest
from django.core.mail import EmailMessage
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_multismtp.backends import EmailBackend
from django_multismtp.backends import test as test_backend
from django_multismtp.models import DeliveryLog
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction

pytestmark = direct_construction


def messages(count: int) -> list[EmailMessage]:
    return [
        EmailMessage(subject=f"m{i}", body="b", to=[f"to{i}@example.test"]) for i in range(count)
    ]


@pytest.mark.django_db
def test_an_account_uses_up_to_max_connections_at_once(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="bulk", is_site_default=True, max_connections=3)
    assert EmailBackend().send_messages(messages(9)) == 9
    received = smtp_server.wait_for(9)
    assert smtp_server.connections == 3
    assert sorted(m.rcpt_tos[0] for m in received) == sorted(
        f"to{i}@example.test" for i in range(9)
    )


@pytest.mark.django_db
def test_one_connection_keeps_the_callers_order(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="one", is_site_default=True)
    EmailBackend().send_messages(messages(5))
    received = smtp_server.wait_for(5)
    assert [m.rcpt_tos[0] for m in received] == [f"to{i}@example.test" for i in range(5)]
    assert smtp_server.connections == 1


@pytest.mark.django_db
def test_a_small_batch_opens_no_more_connections_than_messages(smtp_server):
    SmtpAccountFactory.for_server(smtp_server, name="bulk", is_site_default=True, max_connections=8)
    EmailBackend().send_messages(messages(2))
    smtp_server.wait_for(2)
    assert smtp_server.connections == 2


@pytest.mark.django_db
@pytest.mark.parametrize("backend_class", [test_backend.EmailBackend], ids=["selection+limits+log"])
def test_database_queries_per_batch_do_not_grow_with_the_batch(backend_class, clock):
    """The same number of queries for 10 and for 1,000 messages: accounts are loaded once,
    limits reserved per account, state and the delivery log written in bulk. (The clock
    is frozen: a minute boundary inside the batch would add a counter row.)"""
    SmtpAccountFactory(name="a", is_site_default=True, limit_per_minute=100_000)
    SmtpAccountFactory(name="b", limit_per_hour=100_000, from_email="b@example.test")

    def batch_of(size: int) -> list[EmailMessage]:
        batch = messages(size)
        for index, message in enumerate(batch):
            message.smtp_account = "a" if index % 2 else "b"
        return batch

    # A first batch creates the usage-counter rows of the current windows.
    backend_class().send_messages(batch_of(2))
    counts = []
    for size in (10, 1000):
        batch = batch_of(size)
        with CaptureQueriesContext(connection) as queries:
            assert backend_class().send_messages(batch) == size
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert DeliveryLog.objects.count() == 1012
    row = DeliveryLog.objects.filter(account__name="a").latest("id")
    assert row.outcome == "sent" and row.recipient_count == 1 and row.created_at is not None


@pytest.mark.django_db
def test_a_worker_settles_200_rows_with_the_queries_of_10(settings, mailer, smtp_server, clock):
    """The worker writes outcomes as replies arrive, in chunks; each chunk costs the
    same queries whatever its size, so with the same chunking a batch of 200 costs what
    a batch of 10 does, and smaller chunks add a fixed cost per chunk."""
    from django_multismtp import worker
    from django_multismtp.engine import SettleEvery
    from django_multismtp.models import OutboxMessage

    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}
    SmtpAccountFactory.for_server(
        smtp_server, name="bulk", is_site_default=True, max_connections=2, limit_per_minute=10**6
    )

    def drain_queries(size: int, every: SettleEvery) -> int:
        """Queries of one drain, the delivery log's own inserts apart: a write takes
        every log row recorded so far, so how many writes find some depends on how the
        replies fall between them. At most one insert per write, though. (On
        PostgreSQL a write's insert and settlement are one statement, ``WITH logged AS
        (INSERT ...) UPDATE ...``: counted as the settlement it always is.)"""
        assert EmailBackend().send_messages(messages(size)) == size
        with CaptureQueriesContext(connection) as queries:
            result = worker.drain(batch_size=size, every=every)
        assert (result.sent, result.retrying, result.failed) == (size, 0, 0)
        # (Django records an executemany as "<n> times: INSERT ...")
        inserting = [
            str(q["sql"])
            for q in queries
            if f'INSERT INTO "{DeliveryLog._meta.db_table}"' in q["sql"]
        ]
        writes = -(-size // every.replies) if every.replies else 1
        assert 1 <= len(inserting) <= writes, (len(inserting), writes)
        return len(queries) - sum(not sql.startswith("WITH logged AS") for sql in inserting)

    at_the_end = SettleEvery(replies=None, seconds=None)
    drain_queries(2, at_the_end)  # creates the usage-counter rows of the current windows
    assert drain_queries(10, at_the_end) == drain_queries(200, at_the_end)

    # 200 rows in chunks of 10 (20 writes) and of 20 (10 writes): a fixed cost per write.
    by_tens = drain_queries(200, SettleEvery(replies=10, seconds=None))
    by_twenties = drain_queries(200, SettleEvery(replies=20, seconds=None))
    per_write, remainder = divmod(by_tens - by_twenties, 10)
    assert remainder == 0 and 0 < per_write <= 8, (by_tens, by_twenties)
    assert by_twenties - drain_queries(200, at_the_end) == 9 * per_write
    assert not OutboxMessage.objects.exclude(status="sent").exists()
    assert DeliveryLog.objects.filter(outcome="sent").count() == 812


@pytest.mark.django_db
def test_a_batch_costs_the_same_queries_for_every_slice(settings, smtp_server, clock):
    """send_messages() works through a batch slice by slice (SEND_SLICE): the first slice
    takes the connection slots and the counters, every further one costs the same."""
    settings.MULTISMTP = {**settings.MULTISMTP, "SEND_SLICE": 5}
    SmtpAccountFactory.for_server(
        smtp_server, name="bulk", is_site_default=True, max_connections=2, limit_per_hour=10**6
    )
    EmailBackend().send_messages(messages(2))  # slot rows and usage counters exist

    def queries(slices: int) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert EmailBackend().send_messages(messages(5 * slices)) == 5 * slices
        return len(captured)

    one, two, four = queries(1), queries(2), queries(4)
    per_slice = two - one
    assert 0 < per_slice <= 10, (one, two, four)
    assert four - two == 2 * per_slice, (one, two, four)
    assert DeliveryLog.objects.filter(outcome="sent").count() == 2 + 5 + 10 + 20


@pytest.mark.django_db
def test_a_slice_keeps_no_bookkeeping_of_the_slices_before_it(settings, smtp_server):
    """Flat memory, without timing or measuring bytes: while any message is about to be
    sent, only its own slice's per-message records (Outgoing) are alive."""
    import gc

    from django_multismtp import signals
    from django_multismtp.outgoing import Outgoing

    settings.MULTISMTP = {**settings.MULTISMTP, "SEND_SLICE": 4}
    SmtpAccountFactory.for_server(smtp_server, name="bulk", is_site_default=True)
    alive: list[int] = []

    def count(**kwargs: object) -> None:
        gc.collect()
        alive.append(sum(isinstance(o, Outgoing) for o in gc.get_objects()))

    signals.pre_send.connect(count, dispatch_uid="count-outgoing")
    # What lives now (the test run's modules and objects) is left out of the 20 full
    # collections below, which otherwise took seconds: only what the send makes is
    # collected and counted.
    gc.collect()
    gc.freeze()
    try:
        assert EmailBackend().send_messages(messages(20)) == 20
    finally:
        gc.unfreeze()
        signals.pre_send.disconnect(dispatch_uid="count-outgoing")
    assert len(alive) == 20
    assert max(alive) == 4, alive  # one slice, never the 20 of the batch
