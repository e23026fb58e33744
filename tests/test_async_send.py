"""asend_messages(): concurrent calls send concurrently.

The server waits 300 ms before it answers EHLO, MAIL and the end of DATA, so a call
spends 600 to 900 ms waiting for it (the time a distant, busy server takes), far more
than its own work (600 ms on a connection parked by an earlier call, see
``tests/test_parking.py``).

Concurrency is proved without a clock: the server sees all ten connections open at the
same moment (calls that waited for each other would never have more than one open), and
the later calls reuse them (parked between calls).
The durations are checked too, as a ratio measured in the same run (no absolute time):
ten calls at once take under three times one call (on a quiet machine about 1.2x on
PostgreSQL and under 2x on SQLite, whose single writer lock queues the ten log writes),
far below the 10x of calls that wait for each other. The margin is for a CI machine
running several test environments at once.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.core.mail import EmailMessage

from django_multismtp.backends import EmailBackend
from django_multismtp.hints import sending_as
from django_multismtp.models import DeliveryLog
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = [pytest.mark.django_db(transaction=True), direct_construction]

SERVER_WAIT = 0.3


def one_message(subject: str) -> list[EmailMessage]:
    return [EmailMessage(subject, "Body", to=["to@example.test"])]


async def timed(*subjects: str) -> float:
    """Send one message per subject, each through its own backend, all at once."""
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(EmailBackend().asend_messages(one_message(subject)) for subject in subjects)
    )
    elapsed = time.perf_counter() - started
    assert counts == [1] * len(subjects)
    return elapsed


def test_ten_concurrent_calls_take_about_as_long_as_one(smtp_server: SMTPTestServer) -> None:
    # max_connections is one budget for every backend and process (connection slots):
    # ten calls at once need ten connections allowed.
    SmtpAccountFactory.for_server(smtp_server, name="slow", max_connections=10)
    for stage in ("EHLO", "MAIL", "DATA"):
        smtp_server.add_fault(Fault.stall(SERVER_WAIT, stage=stage, times=None))

    async def scenario() -> tuple[float, float]:
        # Our event loop, imports, the database connections, and ten connections to
        # the server, opened at once and parked for the calls below (so one call and
        # ten compare like with like: each on a connection that is open already).
        await timed(*(f"warm-up {index}" for index in range(10)))
        assert smtp_server.peak_connections == 10
        one = min([await timed("one a"), await timed("one b")])
        ten = await timed(*(f"ten {index}" for index in range(10)))
        return one, ten

    one, ten = asyncio.run(scenario())
    assert smtp_server.connections == 10  # the warm-up's, reused by every later call
    assert one >= 2 * SERVER_WAIT  # MAIL and DATA (EHLO was the warm-up's)
    assert ten < 3 * one, f"ten concurrent calls took {ten:.3f} s, one call {one:.3f} s"
    assert len(smtp_server.received) == 22
    assert DeliveryLog.objects.filter(outcome="sent").count() == 22


def test_hints_of_the_calling_task_travel_with_it(
    smtp_server: SMTPTestServer, second_server: SMTPTestServer
) -> None:
    SmtpAccountFactory.for_server(smtp_server, name="first", is_site_default=True)
    SmtpAccountFactory.for_server(second_server, name="second")

    async def send_as(account: str | None, subject: str) -> int:
        if account is None:
            return int(await EmailBackend().asend_messages(one_message(subject)))
        with sending_as(account=account):
            return int(await EmailBackend().asend_messages(one_message(subject)))

    async def scenario() -> list[int]:
        return list(await asyncio.gather(send_as("second", "to second"), send_as(None, "to first")))

    assert asyncio.run(scenario()) == [1, 1]
    assert [str(r.message()["Subject"]) for r in smtp_server.received] == ["to first"]
    assert [str(r.message()["Subject"]) for r in second_server.received] == ["to second"]
