"""Backends parked between asend_messages() calls (django_multismtp.parking).

A backend an async call opened stays open for the next call of an equal backend: the
server sees one connection for several calls, and the connection slot stays held while
parked. Idle ones are closed after KEEP_OPEN_IDLE seconds (the time is passed in, no
sleeping), and a send of this process that finds no free slot closes the parked
backends that hold one instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp import parking
from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import MultiSMTPConfigurationError
from django_multismtp.hints import sending_as
from django_multismtp.models import ConnectionSlot, DeliveryLog, SmtpAccount
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import Fault, SMTPTestServer

pytestmark = [pytest.mark.django_db(transaction=True), direct_construction]

park = parking.park


def message(subject: str) -> list[EmailMessage]:
    return [EmailMessage(subject, "Body", to=["to@example.test"])]


def asend(backend: EmailBackend, subject: str) -> int:
    return int(asyncio.run(backend.asend_messages(message(subject))))


def slots_held() -> int:
    return ConnectionSlot.objects.exclude(holder="").count()


def test_calls_reuse_one_connection_and_slot_until_idle(smtp_server: SMTPTestServer) -> None:
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)

    assert [asend(EmailBackend(), f"call {n}") for n in range(3)] == [1, 1, 1]

    assert smtp_server.connections == 1
    assert len(smtp_server.received) == 3
    assert len(park) == 1
    assert slots_held() == 1  # the parked connection keeps its slot
    now = time.monotonic()
    assert park.close_idle(now + parking.KEEP_OPEN_IDLE - 1) == 0  # not idle long enough
    assert park.close_idle(now + parking.KEEP_OPEN_IDLE + 1) == 1
    assert len(park) == 0
    assert slots_held() == 0
    assert asend(EmailBackend(), "after") == 1
    assert smtp_server.connections == 2  # a new one once the parked one was closed


def test_a_backend_the_caller_opened_is_not_parked(smtp_server: SMTPTestServer) -> None:
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)
    backend = EmailBackend()
    backend.open()
    try:
        assert asend(backend, "mine") == 1
        assert len(park) == 0
        assert backend._is_open
    finally:
        backend.close()
    assert slots_held() == 0


def test_only_equal_backends_share(smtp_server: SMTPTestServer) -> None:
    # Room for every backend's connection (with one slot, each would close the
    # parked one holding it: see the last tests).
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True, max_connections=4)
    SmtpAccountFactory.for_server(smtp_server, name="b", priority=200)

    assert asend(EmailBackend(), "default") == 1
    assert asend(EmailBackend(fail_silently=True), "silent") == 1  # another key
    assert asend(EmailBackend(account="b"), "hinted") == 1  # another key
    assert asend(EmailBackend(), "default again") == 1  # borrows the first

    assert smtp_server.connections == 3
    assert len(park) == 3
    unsaved = EmailBackend(account=SmtpAccount(name="unsaved"))
    assert parking.key_of(unsaved) is None  # never shared


def test_a_send_that_raises_closes_its_backend(smtp_server: SMTPTestServer) -> None:
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)

    async def hinted() -> int:
        with sending_as(account="no-such-account"):
            return int(await EmailBackend().asend_messages(message("bad hint")))

    with pytest.raises(MultiSMTPConfigurationError):
        asyncio.run(hinted())
    assert len(park) == 0
    assert slots_held() == 0


def test_a_send_needing_the_slot_of_a_parked_backend_closes_it(
    smtp_server: SMTPTestServer, settings: Any
) -> None:
    # One connection allowed, held by the parked backend: a plain send (another key)
    # would wait CONNECTION_WAIT (none here) and give up; it closes the parked one.
    settings.MULTISMTP = {**settings.MULTISMTP, "CONNECTION_WAIT": "0s"}
    SmtpAccountFactory.for_server(smtp_server, name="one", max_connections=1)
    assert asend(EmailBackend(account="one"), "parked") == 1
    assert len(park) == 1 and slots_held() == 1

    assert EmailBackend(account="one").send_messages(message("plain")) == 1

    assert len(park) == 0
    assert [r.message()["Subject"] for r in smtp_server.received] == ["parked", "plain"]
    assert DeliveryLog.objects.filter(outcome="sent").count() == 2
    assert slots_held() == 0


def test_a_backend_given_back_while_a_send_waits_for_its_slot_is_closed(
    smtp_server: SMTPTestServer,
) -> None:
    account = SmtpAccountFactory.for_server(smtp_server, name="one", max_connections=1)
    backend = EmailBackend(account="one")
    assert asend(backend, "first") == 1
    key = parking.key_of(backend)
    borrowed = park.borrow(key)
    assert borrowed is backend and borrowed._is_open

    with park.make_room(account.pk) as closed:  # as a send that found no free slot
        assert closed == 0  # nothing parked: it is borrowed
        park.put(key, borrowed)
        assert len(park) == 0  # closed instead of parked
        assert not borrowed._is_open
        assert slots_held() == 0
    park.put(key, EmailBackend(account="one"))  # nobody waits now: parked (closed ones
    assert park.borrow(key) is None  # are never lent)


def test_more_concurrent_calls_than_connections_all_go_out(smtp_server: SMTPTestServer) -> None:
    # Two connections for five calls at once: the calls beyond two wait for a slot, and
    # a backend given back while they wait is closed (its slot freed), not parked.
    SmtpAccountFactory.for_server(smtp_server, name="two", is_site_default=True, max_connections=2)
    smtp_server.add_fault(Fault.stall(0.2, stage="DATA", times=None))

    async def five() -> list[int]:
        return list(
            await asyncio.gather(
                *(EmailBackend().asend_messages(message(f"call {n}")) for n in range(5))
            )
        )

    assert asyncio.run(five()) == [1, 1, 1, 1, 1]
    assert smtp_server.peak_connections <= 2
    assert len(smtp_server.received) == 5
    assert DeliveryLog.objects.filter(outcome="sent").count() == 5
    assert len(park) <= 2


def test_a_parked_connection_the_server_closed_loses_no_message(
    smtp_server: SMTPTestServer,
) -> None:
    # A server that hangs up on an idle connection: the next call finds its borrowed
    # connection dead at its first command (MAIL), before any of the message was sent.
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)
    smtp_server.add_fault(Fault.disconnect(on_message=2, stage="MAIL"))

    assert asend(EmailBackend(), "first") == 1
    assert asend(EmailBackend(), "second") == 1  # sent again on a new connection

    assert [r.message()["Subject"] for r in smtp_server.received] == ["first", "second"]
    assert smtp_server.connections == 2
    assert DeliveryLog.objects.filter(outcome="sent").count() == 2


def test_a_connection_lost_after_the_content_went_out_is_not_sent_again(
    smtp_server: SMTPTestServer,
) -> None:
    # The server hangs up after the second message's content, without a reply: it may
    # have delivered it, so it is not sent again at once (the outbox keeps it, marked
    # as possibly sent already), unlike a connection found dead before the content.
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)
    smtp_server.add_fault(Fault.disconnect(on_message=2, stage="DATA"))

    assert asend(EmailBackend(), "first") == 1
    asend(EmailBackend(), "second")

    assert smtp_server.connections == 1
    assert [r.message()["Subject"] for r in smtp_server.received] == ["first"]
    assert DeliveryLog.objects.filter(subject="second", outcome="sent").count() == 0
