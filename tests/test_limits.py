"""Sending limits: database counters shared by every process, and what the backend does
when an account runs out."""

from __future__ import annotations

import datetime as dt
import textwrap

import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.db import connection

from django_multismtp import limits
from django_multismtp.exceptions import NoAccountAvailable
from django_multismtp.models import DeliveryLog, UsageCounter
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.processes import start, start_together, stop

# 10:15:30 UTC: a minute and an hour window both have room to move forward in.
START = dt.datetime(2025, 6, 1, 10, 15, 30, tzinfo=dt.UTC)


@pytest.fixture
def at_start(clock):
    clock.current = START
    return clock


# -- reserve / release / usage -------------------------------------------------------------


@pytest.mark.django_db
def test_grants_up_to_the_limit_then_nothing(at_start):
    account = SmtpAccountFactory(limit_per_minute=3)
    assert [limits.reserve(account, 1, at_start()) for _ in range(5)] == [1, 1, 1, 0, 0]
    assert limits.usage(account, at_start()) == {"minute": (3, 3)}


@pytest.mark.django_db
def test_partial_grant(at_start):
    account = SmtpAccountFactory(limit_per_minute=10)
    assert limits.reserve(account, 7, at_start()) == 7
    assert limits.reserve(account, 5, at_start()) == 3
    assert limits.reserve(account, 5, at_start()) == 0
    assert limits.usage(account, at_start()) == {"minute": (10, 10)}


@pytest.mark.django_db
def test_more_than_the_limit_in_one_request_in_a_fresh_window(at_start):
    account = SmtpAccountFactory(limit_per_minute=4)
    assert limits.reserve(account, 9, at_start()) == 4


@pytest.mark.django_db
def test_no_limits_grant_everything_and_count_nothing(at_start):
    account = SmtpAccountFactory()
    assert limits.reserve(account, 1000, at_start()) == 1000
    assert limits.reserve(account, 0, at_start()) == 0
    assert limits.usage(account, at_start()) == {}
    assert not UsageCounter.objects.exists()


@pytest.mark.django_db
def test_every_configured_period_applies(at_start):
    account = SmtpAccountFactory(limit_per_minute=10, limit_per_hour=12)
    assert limits.reserve(account, 10, at_start()) == 10
    assert limits.reserve(account, 1, at_start()) == 0

    at_start.advance(minutes=1)
    assert limits.reserve(account, 10, at_start()) == 2
    # The minute window was charged only for what the hour allowed.
    assert limits.usage(account, at_start()) == {"minute": (2, 10), "hour": (12, 12)}
    assert limits.reserve(account, 1, at_start()) == 0
    assert limits.usage(account, at_start()) == {"minute": (2, 10), "hour": (12, 12)}


@pytest.mark.django_db
def test_a_new_window_starts_afresh(at_start):
    account = SmtpAccountFactory(limit_per_minute=2, limit_per_day=100)
    assert limits.reserve(account, 2, at_start()) == 2
    at_start.advance(seconds=29)  # 10:15:59, same minute
    assert limits.reserve(account, 1, at_start()) == 0
    at_start.advance(seconds=1)  # 10:16:00
    assert limits.reserve(account, 5, at_start()) == 2
    assert limits.usage(account, at_start()) == {"minute": (2, 2), "day": (4, 100)}


@pytest.mark.django_db
def test_release_gives_slots_back(at_start):
    account = SmtpAccountFactory(limit_per_minute=10, limit_per_hour=50)
    assert limits.reserve(account, 10, at_start()) == 10
    limits.release(account, 4, at_start())
    assert limits.usage(account, at_start()) == {"minute": (6, 10), "hour": (6, 50)}
    assert limits.reserve(account, 5, at_start()) == 4
    limits.release(account, 0, at_start())
    assert limits.usage(account, at_start()) == {"minute": (10, 10), "hour": (10, 50)}


@pytest.mark.django_db
def test_old_windows_are_forgotten(at_start):
    account = SmtpAccountFactory(limit_per_minute=5)
    limits.reserve(account, 1, at_start())
    at_start.advance(days=3)
    limits.reserve(account, 1, at_start())
    assert UsageCounter.objects.filter(account=account).count() == 1


@pytest.mark.django_db
def test_limits_are_per_account(at_start):
    first = SmtpAccountFactory(limit_per_minute=1)
    second = SmtpAccountFactory(limit_per_minute=1)
    assert limits.reserve(first, 1, at_start()) == 1
    assert limits.reserve(second, 1, at_start()) == 1
    assert limits.reserve(first, 1, at_start()) == 0


# -- the backend ---------------------------------------------------------------------------


def messages(count: int) -> list[mail.EmailMessage]:
    return [
        mail.EmailMessage(f"Message {n}", "Body", "sender@example.test", [f"to{n}@example.test"])
        for n in range(count)
    ]


def subjects(server) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(received.message()["Subject"] for received in server.received)


@pytest.mark.django_db
def test_backend_moves_what_exceeds_the_limit_to_another_account(
    mailer, at_start, smtp_server, second_server
):
    limited = SmtpAccountFactory.for_server(
        smtp_server, name="limited", from_email="sender@example.test", limit_per_minute=2
    )
    spare = SmtpAccountFactory.for_server(
        second_server, name="spare", allowed_senders="example.test", priority=200
    )
    batch = messages(5)
    assert get_mailer().send_messages(batch) == 5

    smtp_server.wait_for(2)
    second_server.wait_for(3)
    assert subjects(smtp_server) == ["Message 0", "Message 1"]
    assert subjects(second_server) == ["Message 2", "Message 3", "Message 4"]
    assert [m.multismtp_status.account for m in batch] == ["limited"] * 2 + ["spare"] * 3

    assert DeliveryLog.objects.filter(account=limited, outcome="sent").count() == 2
    assert DeliveryLog.objects.filter(account=spare, outcome="sent").count() == 3
    # The three the limit turned away are in the log as deferred on "limited", with the
    # moment it is free again (the end of its full minute), before they went to "spare".
    deferred = DeliveryLog.objects.exclude(outcome="sent")
    assert [(row.account_id, row.outcome) for row in deferred] == [(limited.pk, "deferred")] * 3
    free = limits.free_at(limited, at_start()).isoformat(timespec="seconds")
    assert all(f"free again at {free}" in row.reply_text for row in deferred)
    assert {row.message_id for row in deferred} == {
        m.multismtp_status.message_id for m in batch[2:]
    }
    assert limits.usage(limited, at_start()) == {"minute": (2, 2)}

    # The next minute the limited account has room again.
    at_start.advance(minutes=1)
    assert get_mailer().send_messages(messages(1)) == 1
    assert len(smtp_server.wait_for(3)) == 3


@pytest.mark.usefixtures("outbox_off")
@pytest.mark.django_db
def test_backend_raises_when_no_account_may_send_the_rest(mailer, at_start, smtp_server):
    limited = SmtpAccountFactory.for_server(
        smtp_server, name="limited", from_email="sender@example.test", limit_per_minute=2
    )
    # Shares the site's mail, but may not send as sender@example.test.
    SmtpAccountFactory(name="other", is_site_default=True, port=9)
    batch = messages(5)
    with pytest.raises(NoAccountAvailable) as excinfo:
        get_mailer().send_messages(batch)

    error = excinfo.value
    assert error.sent_count == 2
    assert len(error.failures) == 3
    assert "limited" in str(error) and "sending limit" in str(error)
    assert len(smtp_server.wait_for(2)) == 2
    assert subjects(smtp_server) == ["Message 0", "Message 1"]
    # Every message has a status: nothing was silently dropped.
    outcomes = [(m.multismtp_status.account, m.multismtp_status.outcome) for m in batch]
    assert outcomes == [("limited", "sent")] * 2 + [(None, "throttled")] * 3
    assert DeliveryLog.objects.filter(account=limited, outcome="sent").count() == 2
    assert limits.usage(limited, at_start()) == {"minute": (2, 2)}


# -- several processes ---------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import datetime as dt
    import os
    import sys

    settings_module, db_name, account_pk, when = sys.argv[1:5]
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = db_name
    import django

    django.setup()
    from django_multismtp import clock, limits
    from django_multismtp.models import SmtpAccount

    moment = dt.datetime.fromisoformat(when)
    account = SmtpAccount.objects.get(pk=int(account_pk))
    # Start together: report ready, then wait for the parent's go.
    print("ready", flush=True)
    sys.stdin.readline()
    granted = 0
    with clock.use_clock(lambda: moment):
        for _ in range(30):
            granted += limits.reserve(account, 1, clock.now())
    print(granted)
    """
)


@pytest.mark.django_db(transaction=True)
def test_limit_holds_across_processes():
    account = SmtpAccountFactory(limit_per_minute=25)
    args = [
        "-c",
        CHILD,
        django_settings.SETTINGS_MODULE,
        str(connection.settings_dict["NAME"]),
        str(account.pk),
        START.isoformat(),
    ]
    children = [start(args, stdin=True) for _ in range(2)]
    try:
        start_together(children)
        results = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            results.append(int(out.strip()))
    finally:
        stop(*children)

    assert sum(results) == 25
    assert limits.usage(account, START) == {"minute": (25, 25)}
