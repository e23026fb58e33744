"""The turns of ``asend_messages()`` calls (``django_multismtp.gate``).

Only one call runs its Python at a time, so the caller's event loop competes for the GIL
with one thread instead of ten; a call gives its turn up while it waits, so waits still
overlap (``tests/test_async_send.py`` proves that: the server sees ten connections at
once). No clock: each test looks at who holds the turn at a given point.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp import gate, signals
from django_multismtp.backends import EmailBackend
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import SMTPTestServer


def turn_is_free() -> bool:
    if gate._turns.acquire(blocking=False):
        gate._turns.release()
        return True
    return False


def test_a_turn_is_held_by_one_thread_and_given_up_while_waiting() -> None:
    seen: dict[str, bool] = {}
    with gate.turn():
        seen["held"] = not turn_is_free()
        with gate.turn():  # a nested turn is the same turn
            seen["nested"] = not turn_is_free()
        other = threading.Thread(target=lambda: seen.update(other=turn_is_free()))
        other.start()
        other.join()
        with gate.waiting():
            seen["waiting"] = turn_is_free()
        seen["back"] = not turn_is_free()
    seen["after"] = turn_is_free()
    assert seen == {
        "held": True,
        "nested": True,
        "other": False,
        "waiting": True,
        "back": True,
        "after": True,
    }


def test_waiting_without_a_turn_takes_none() -> None:
    with gate.waiting():
        assert turn_is_free()
    assert turn_is_free()


@pytest.mark.django_db(transaction=True)
@direct_construction
def test_an_async_call_runs_in_its_turn_and_a_plain_send_takes_none(
    smtp_server: SMTPTestServer,
) -> None:
    SmtpAccountFactory.for_server(smtp_server, name="a", is_site_default=True)
    during: list[tuple[str, bool]] = []

    def look(sender: Any, message: EmailMessage, **kwargs: Any) -> None:
        during.append((message.subject, turn_is_free()))

    signals.pre_send.connect(look)
    try:
        message = EmailMessage("async", "Body", to=["to@example.test"])
        assert asyncio.run(EmailBackend().asend_messages([message])) == 1
        assert EmailBackend().send_messages([EmailMessage("sync", "Body", to=["to@x.test"])]) == 1
    finally:
        signals.pre_send.disconnect(look)

    assert during == [("async", False), ("sync", True)]
    assert turn_is_free()  # given back after the call
    assert len(smtp_server.received) == 2
