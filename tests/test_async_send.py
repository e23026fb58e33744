"""asend_messages(): concurrent calls send concurrently.

The server waits 100 ms before it answers EHLO, MAIL and the end of DATA, so a call
spends about 300 ms waiting for it (the time a distant, busy server takes), far more
than its own work.
Ten calls at once must take about as long as one, not ten times as long: the bound is a
ratio of durations measured in the same run (no absolute time), generous enough for a
busy machine and far below the 10x of calls that wait for each other.

On PostgreSQL ten calls take under twice one call. SQLite lets one writer in at a time
and makes the others poll with growing sleeps (its busy handler), so the ten calls'
delivery-log writes, landing at the same moment, queue up there: the bound is 4x on
SQLite, still well below the 10x of serialised calls.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from django.core.mail import EmailMessage
from django.db import connection

from django_multismtp.backends import EmailBackend
from django_multismtp.hints import sending_as
from django_multismtp.models import DeliveryLog
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = [pytest.mark.django_db(transaction=True), direct_construction]

SERVER_WAIT = 0.1


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
    SmtpAccountFactory.for_server(smtp_server, name="slow", max_connections=1)
    for stage in ("EHLO", "MAIL", "DATA"):
        smtp_server.add_fault(Fault.stall(SERVER_WAIT, stage=stage, times=None))

    async def scenario() -> tuple[float, float]:
        await timed("warm-up")  # our event loop, imports, the database connection
        one = min([await timed("one a"), await timed("one b")])
        ten = await timed(*(f"ten {index}" for index in range(10)))
        return one, ten

    one, ten = asyncio.run(scenario())
    assert one >= 3 * SERVER_WAIT
    bound = 4 if connection.vendor == "sqlite" else 2
    assert ten < bound * one, f"ten concurrent calls took {ten:.3f} s, one call {one:.3f} s"
    assert len(smtp_server.received) == 13
    assert DeliveryLog.objects.filter(outcome="sent").count() == 13


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
