"""asend_messages(): concurrent calls send concurrently.

Concurrency is proved without a clock. The server holds every session at one stage until
ten of them are there together (a ``Fault.gather``), which only calls running at the same
time can do: calls that waited for each other would leave the first one alone there, and
the server refuses it. The speed itself (ten calls against one, the event loop's lag) is
measured by ``benchmarks/asyncsend.py``, as a ratio, never asserted here.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.mail import EmailMessage

from django_multismtp.backends import EmailBackend
from django_multismtp.hints import sending_as
from django_multismtp.models import DeliveryLog
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = [pytest.mark.django_db(transaction=True), direct_construction]


def one_message(subject: str) -> list[EmailMessage]:
    return [EmailMessage(subject, "Body", to=["to@example.test"])]


async def send_at_once(*subjects: str) -> None:
    """Send one message per subject, each through its own backend, all at once."""
    counts = await asyncio.gather(
        *(EmailBackend().asend_messages(one_message(subject)) for subject in subjects)
    )
    assert counts == [1] * len(subjects)


def test_ten_concurrent_calls_are_on_the_wire_together(smtp_server: SMTPTestServer) -> None:
    # max_connections is one budget for every backend and process (connection slots):
    # ten calls at once need ten connections allowed.
    SmtpAccountFactory.for_server(smtp_server, name="slow", max_connections=10)

    async def scenario() -> None:
        # Ten calls open ten connections together, and park them for the next calls.
        smtp_server.add_fault(Fault.gather(10, stage="EHLO"))
        await send_at_once(*(f"first {index}" for index in range(10)))
        # Ten more, on the parked connections, are in their transactions together.
        smtp_server.add_fault(Fault.gather(10, stage="MAIL"))
        await send_at_once(*(f"second {index}" for index in range(10)))

    asyncio.run(scenario())
    assert smtp_server.peak_connections == 10
    assert smtp_server.connections == 10  # the first calls', reused by the second ones
    assert len(smtp_server.received) == 20
    assert DeliveryLog.objects.filter(outcome="sent").count() == 20


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
