"""Account pools: messages shared among equally eligible accounts (``POOL_POLICY``).

The routing is the real engine's, with the real limits in the database; most tests use
the test backend (real selection and limits, no network) because they send thousands
of messages; one sends over a real SMTP server.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from typing import Any

import pytest
from django.core import mail
from django.core.mail import EmailMessage

from django_multismtp import limits, pools
from django_multismtp.backends.test import EmailBackend as RecordingBackend
from django_multismtp.checks import check_settings
from django_multismtp.exceptions import MultiSMTPConfigurationError, NoAccountAvailable
from django_multismtp.models import DeliveryLog, SmtpAccount
from django_multismtp.selection import pool_size
from tests.factories import SmtpAccountFactory
from tests.mailers import direct_construction
from tests.smtp_servers import SMTPTestServer

pytestmark = pytest.mark.django_db

NOON = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def at_noon(clock: Any, outbox_off: None) -> None:
    """A frozen day (the pool's rotation is reset by conftest for every test)."""
    clock.current = NOON
    mail.outbox = []


_numbers = itertools.count()


def messages(count: int, **attributes: Any) -> list[EmailMessage]:
    """``count`` messages, numbered in the order they are made (see :func:`routed`)."""
    result = []
    for _ in range(count):
        index = next(_numbers)
        message = EmailMessage(f"Message {index}", "Body", to=[f"to{index}@example.test"])
        for name, value in attributes.items():
            setattr(message, name, value)
        result.append(message)
    return result


def send(batch: list[EmailMessage], **options: Any) -> int:
    return int(RecordingBackend(**options).send_messages(batch))


def routed() -> list[str]:
    """The account of each sent message, in the order the messages were made (the test
    backend records a round's messages account by account)."""
    ordered = sorted(mail.outbox, key=lambda message: int(message.subject.split()[-1]))
    return [message.multismtp_account for message in ordered]


def used(account: SmtpAccount) -> int:
    return limits.usage(account, NOON)["day"][0]


# -- spread -----------------------------------------------------------------------------


def test_spread_follows_the_remaining_quota_and_both_run_dry_together() -> None:
    small = SmtpAccountFactory(name="small", limit_per_day=500)
    large = SmtpAccountFactory(name="large", limit_per_day=2000)

    for _ in range(10):  # 1,000 messages as a site sends them: batches, no hints
        assert send(messages(100)) == 100
    assert Counter(routed()) == {"small": 200, "large": 800}

    # Until both are full, they stay at the same share of their quota: neither runs dry
    # while the other still has more than one batch's worth of room.
    for _ in range(15):
        assert send(messages(100)) == 100
        assert abs(used(small) / 500 - used(large) / 2000) <= 0.01
    assert (used(small), used(large)) == (500, 2000)
    with pytest.raises(NoAccountAvailable):
        send(messages(1))


def test_spread_interleaves_within_a_batch_and_across_single_sends() -> None:
    SmtpAccountFactory(name="a")
    SmtpAccountFactory(name="b")
    send(messages(4))
    for _ in range(4):  # one message per call, as send_mail() does
        send(messages(1))
    assert routed() == ["a", "b", "a", "b", "a", "b", "a", "b"]


def test_spread_counts_usage_of_other_processes() -> None:
    first = SmtpAccountFactory(name="first", limit_per_day=100)
    SmtpAccountFactory(name="second", limit_per_day=100)
    assert limits.reserve(first, 80, NOON) == 80  # another worker used most of it
    send(messages(60))
    assert Counter(routed()) == {"first": 10, "second": 50}


# -- round robin and fill first ---------------------------------------------------------


def test_round_robin_alternates(settings: Any) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "POOL_POLICY": "round_robin"}
    SmtpAccountFactory(name="a", limit_per_day=10)
    SmtpAccountFactory(name="b", limit_per_day=1000)
    SmtpAccountFactory(name="c", limit_per_day=1000)
    send(messages(4))
    send(messages(1))
    send(messages(1))
    assert routed() == ["a", "b", "c", "a", "b", "c"]


def test_fill_first_is_the_order_of_old(settings: Any) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "POOL_POLICY": {"system": "fill_first"}}
    SmtpAccountFactory(name="a", limit_per_day=3)
    SmtpAccountFactory(name="b")
    send(messages(5))
    assert routed() == ["a", "a", "a", "b", "b"]


def test_the_policy_is_per_purpose_with_a_default(settings: Any) -> None:
    settings.MULTISMTP = {
        **settings.MULTISMTP,
        "POOL_POLICY": {"campaigns": "round_robin", "*": "fill_first"},
    }
    SmtpAccountFactory(name="s1")
    SmtpAccountFactory(name="s2")
    SmtpAccountFactory(name="c1", purpose="campaigns")
    SmtpAccountFactory(name="c2", purpose="campaigns")
    send(messages(2))
    send(messages(2, smtp_purpose="campaigns"))
    assert routed() == ["s1", "s1", "c1", "c2"]


def test_the_hint_and_the_mailer_option_override_the_setting(settings: Any) -> None:
    SmtpAccountFactory(name="a")
    SmtpAccountFactory(name="b")
    send(messages(2, smtp_pool="fill_first"))
    send(messages(2), pool="fill_first")
    send(messages(2))
    assert routed() == ["a", "a", "a", "a", "a", "b"]


def test_unknown_policies_are_refused_clearly(settings: Any) -> None:
    SmtpAccountFactory(name="a")
    SmtpAccountFactory(name="b")
    with pytest.raises(MultiSMTPConfigurationError, match="pool hint"):
        send(messages(1, smtp_pool="sideways"))
    with pytest.raises(MultiSMTPConfigurationError, match="Unknown pool policy 'evenly'"):
        RecordingBackend(pool="evenly")
    settings.MULTISMTP = {**settings.MULTISMTP, "POOL_POLICY": {"system": "random"}}
    with pytest.raises(MultiSMTPConfigurationError, match="'random' for the purpose 'system'"):
        send(messages(1))
    assert [e.id for e in check_settings() if e.id == "django_multismtp.E007"] == [
        "django_multismtp.E007"
    ]
    assert mail.outbox == []


# -- who is in a pool --------------------------------------------------------------------


def test_a_member_that_may_not_send_the_from_never_gets_the_message() -> None:
    SmtpAccountFactory(name="allowed", allowed_senders="news@shop.test", limit_per_day=3)
    SmtpAccountFactory(name="other")  # same purpose and priority, another From
    SmtpAccountFactory(name="also", allowed_senders="@shop.test", limit_per_day=3)
    send(messages(6, from_email="news@shop.test"))
    assert Counter(routed()) == {"allowed": 3, "also": 3}
    # Once both allowed accounts are full, failover never reaches the other one.
    mail.outbox = []
    with pytest.raises(NoAccountAvailable):
        send(messages(1, from_email="news@shop.test"))
    assert mail.outbox == []


def test_priority_site_default_and_purpose_split_pools() -> None:
    SmtpAccountFactory(name="default", is_site_default=True)
    SmtpAccountFactory(name="high", priority=10)
    SmtpAccountFactory(name="p1", priority=20)
    SmtpAccountFactory(name="p2", priority=20)
    send(messages(3))
    assert routed() == ["default"] * 3  # the site default is preferred, not pooled
    SmtpAccount.objects.filter(name="default").update(is_active=False)
    mail.outbox = []
    send(messages(3))
    assert routed() == ["high"] * 3  # a better priority is not pooled with worse ones


def test_pool_size_of_the_selection() -> None:
    accounts = [
        SmtpAccount(pk=1, name="a", priority=1, purpose="system"),
        SmtpAccount(pk=2, name="b", priority=1, purpose="system"),
        SmtpAccount(pk=3, name="c", priority=2, purpose="system"),
    ]
    primary = {1, 2, 3}
    assert pool_size(accounts, primary) == 2
    assert pool_size(accounts, {1}) == 1  # the others are failover, not the step's
    assert pool_size(accounts, primary, lambda a: a.pk != 2) == 1
    assert pool_size(accounts, primary, lambda a: a.pk != 1) == 1
    assert pool_size([], primary) == 0


def test_an_explicit_account_hint_is_never_pooled() -> None:
    SmtpAccountFactory(name="a")
    SmtpAccountFactory(name="b")
    send(messages(3, smtp_account="b"))
    assert routed() == ["b"] * 3


# -- over the wire -------------------------------------------------------------------------


@direct_construction
def test_a_pool_over_a_real_server_logs_each_account(smtp_server: SMTPTestServer) -> None:
    from django_multismtp.backends import EmailBackend

    SmtpAccountFactory.for_server(smtp_server, name="one", limit_per_day=100)
    SmtpAccountFactory.for_server(smtp_server, name="two", limit_per_day=300)
    assert EmailBackend().send_messages(messages(8)) == 8
    assert len(smtp_server.received) == 8
    names = Counter(DeliveryLog.objects.values_list("account_name", flat=True))
    assert names == {"one": 2, "two": 6}


def test_assign_is_deterministic_and_remembers_the_rotation() -> None:
    weights = {1: 500, 2: 1600}
    first = pools.assign("spread", [1, 2], 21, weights)
    assert first[:7] == [2, 2, 1, 2, 2, 2, 1]
    assert (first.count(1), first.count(2)) == (5, 16)
    assert pools.assign("round_robin", [1, 2, 3], 2) == [1, 2]
    assert pools.assign("round_robin", [1, 2, 3], 2) == [3, 1]  # carries on
    assert pools.assign("fill_first", [1, 2, 3], 3) == [1, 1, 1]
    # No room left anywhere: the rest is dealt in turn (each reservation then fails).
    assert pools.assign("spread", [1, 2], 4, {1: 1, 2: 0}) == [1, 1, 2, 1]
    pools.reset()
    assert pools.assign("spread", [1, 2], 21, weights) == first
