"""Sending limits: the cases mutation testing found no test for (``make mutate``).

What an account's owner sees: whether a reservation is granted and how much, what the
admin shows as used, and when a paused account may send again. The race on a fresh
window's counter row only happens on PostgreSQL (SQLite serialises writers before
they read), so that test is marked to run in the PostgreSQL pass.
"""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections, transaction

from django_multismtp import limits
from django_multismtp.models import UsageCounter
from tests.factories import SmtpAccountFactory

# 10:15:30 UTC: the minute ends at 10:16, the hour at 11:00, the day at midnight.
START = dt.datetime(2025, 6, 1, 10, 15, 30, tzinfo=dt.UTC)


# -- an account that has not sent yet ---------------------------------------------------


@pytest.mark.django_db
def test_an_account_that_has_not_sent_shows_nothing_used():
    account = SmtpAccountFactory(limit_per_minute=3, limit_per_hour=40)
    assert limits.usage(account, START) == {"minute": (0, 3), "hour": (0, 40)}


@pytest.mark.django_db
def test_an_account_that_has_not_sent_may_send_now():
    account = SmtpAccountFactory(limit_per_minute=3, limit_per_hour=40)
    assert limits.free_at(account, START) == START


@pytest.mark.django_db
def test_an_account_with_room_left_may_send_now():
    account = SmtpAccountFactory(limit_per_minute=3)
    limits.reserve(account, 2, START)
    assert limits.free_at(account, START) == START


# -- when a full account may send again ---------------------------------------------------


@pytest.mark.django_db
def test_a_full_minute_frees_the_account_at_the_next_minute():
    account = SmtpAccountFactory(limit_per_minute=3, limit_per_hour=40)
    assert limits.reserve(account, 5, START) == 3
    assert limits.free_at(account, START) == dt.datetime(2025, 6, 1, 10, 16, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_the_longest_full_window_decides():
    account = SmtpAccountFactory(limit_per_minute=3, limit_per_hour=3, limit_per_day=50)
    assert limits.reserve(account, 3, START) == 3
    # Minute and hour are both full: the minute's end would be too early.
    assert limits.free_at(account, START) == dt.datetime(2025, 6, 1, 11, 0, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_a_full_day_frees_the_account_at_midnight():
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_day=5)
    assert limits.reserve(account, 5, START) == 5
    assert limits.free_at(account, START) == dt.datetime(2025, 6, 2, tzinfo=dt.UTC)


@pytest.mark.django_db
def test_an_account_exactly_at_its_limit_is_full_and_one_below_is_not():
    account = SmtpAccountFactory(limit_per_minute=4)
    limits.reserve(account, 3, START)
    assert limits.free_at(account, START) == START
    limits.reserve(account, 1, START)
    assert limits.free_at(account, START) > START


# -- what a reservation is granted ------------------------------------------------------


@pytest.mark.django_db
def test_a_negative_request_is_granted_nothing_and_counts_nothing():
    account = SmtpAccountFactory(limit_per_minute=3)
    assert limits.reserve(account, -2, START) == 0
    assert limits.usage(account, START) == {"minute": (0, 3)}
    unlimited = SmtpAccountFactory()
    assert limits.reserve(unlimited, -2, START) == 0


@pytest.mark.django_db
def test_a_request_for_exactly_what_is_left_is_granted_whole():
    account = SmtpAccountFactory(limit_per_minute=10, limit_per_hour=12)
    assert limits.reserve(account, 9, START) == 9
    assert limits.reserve(account, 1, START) == 1
    assert limits.usage(account, START) == {"minute": (10, 10), "hour": (10, 12)}


@pytest.mark.django_db
def test_a_shorter_window_that_refuses_gives_back_what_the_longer_ones_took():
    # The day is checked after the minute: the minute allows 5, the day only 2 more.
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_hour=30, limit_per_day=6)
    assert limits.reserve(account, 4, START) == 4
    at_next_minute = START + dt.timedelta(minutes=1)
    assert limits.reserve(account, 5, at_next_minute) == 2
    assert limits.usage(account, at_next_minute) == {
        "minute": (2, 5),
        "hour": (6, 30),
        "day": (6, 6),
    }
    # The minute that ended keeps what it was charged.
    assert limits.usage(account, START) == {"minute": (4, 5), "hour": (6, 30), "day": (6, 6)}
    # Nothing left today: refused, and no window keeps a charge for it.
    assert limits.reserve(account, 1, at_next_minute) == 0
    assert limits.usage(account, at_next_minute) == {
        "minute": (2, 5),
        "hour": (6, 30),
        "day": (6, 6),
    }


@pytest.mark.django_db
def test_what_a_longer_window_refuses_is_given_back_to_this_account_only():
    other = SmtpAccountFactory(limit_per_minute=5, limit_per_day=50)
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_day=2)
    limits.reserve(other, 3, START)
    assert limits.reserve(account, 4, START) == 2
    assert limits.usage(other, START) == {"minute": (3, 5), "day": (3, 50)}
    assert limits.usage(account, START) == {"minute": (2, 5), "day": (2, 2)}


@pytest.mark.django_db
def test_what_a_longer_window_refuses_on_the_hour_is_given_back_once():
    # At 10:00:30 the minute and the hour windows start at the same instant.
    on_the_hour = dt.datetime(2025, 6, 1, 10, 0, 30, tzinfo=dt.UTC)
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_hour=30, limit_per_day=2)
    assert limits.reserve(account, 4, on_the_hour) == 2
    assert limits.usage(account, on_the_hour) == {"minute": (2, 5), "hour": (2, 30), "day": (2, 2)}


@pytest.mark.django_db
def test_yesterdays_counters_still_count_within_two_days():
    # A day window that started yesterday is not history yet for the hour of today.
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_day=8)
    limits.reserve(account, 5, START)
    limits.reserve(account, 1, START + dt.timedelta(days=1, hours=-1))
    assert limits.usage(account, START) == {"minute": (5, 5), "day": (5, 8)}


@pytest.mark.django_db
def test_releasing_more_than_was_reserved_gives_nothing_back():
    account = SmtpAccountFactory(limit_per_minute=5)
    limits.reserve(account, 2, START)
    limits.release(account, 3, START)
    assert limits.usage(account, START) == {"minute": (2, 5)}
    limits.release(account, 2, START)
    assert limits.usage(account, START) == {"minute": (0, 5)}


@pytest.mark.django_db
def test_releasing_one_slot_gives_one_back():
    account = SmtpAccountFactory(limit_per_minute=2)
    assert limits.reserve(account, 2, START) == 2
    limits.release(account, 1, START)
    assert limits.reserve(account, 2, START) == 1


@pytest.mark.django_db
def test_a_release_gives_back_to_its_own_account_only():
    first = SmtpAccountFactory(limit_per_minute=5)
    second = SmtpAccountFactory(limit_per_minute=5)
    limits.reserve(first, 3, START)
    limits.reserve(second, 3, START)
    limits.release(first, 2, START)
    assert limits.usage(first, START) == {"minute": (1, 5)}
    assert limits.usage(second, START) == {"minute": (3, 5)}


@pytest.mark.django_db
def test_a_release_on_the_hour_gives_back_once_per_window():
    # At 10:00:30 the minute and the hour windows start at the same instant.
    on_the_hour = dt.datetime(2025, 6, 1, 10, 0, 30, tzinfo=dt.UTC)
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_hour=20)
    limits.reserve(account, 4, on_the_hour)
    limits.release(account, 1, on_the_hour)
    assert limits.usage(account, on_the_hour) == {"minute": (3, 5), "hour": (3, 20)}


@pytest.mark.django_db
def test_a_release_leaves_ended_windows_alone():
    account = SmtpAccountFactory(limit_per_minute=5)
    limits.reserve(account, 4, START)
    next_minute = START + dt.timedelta(minutes=1)
    limits.reserve(account, 2, next_minute)
    limits.release(account, 1, next_minute)
    assert limits.usage(account, START) == {"minute": (4, 5)}
    assert limits.usage(account, next_minute) == {"minute": (1, 5)}


@pytest.mark.django_db
def test_an_unlimited_account_or_an_empty_request_costs_no_query(django_assert_num_queries):
    unlimited = SmtpAccountFactory()
    limited = SmtpAccountFactory(limit_per_minute=3)
    with django_assert_num_queries(0):
        assert limits.reserve(unlimited, 50, START) == 50
        assert limits.reserve(limited, 0, START) == 0


@pytest.mark.django_db
def test_counters_are_kept_two_days_not_longer():
    account = SmtpAccountFactory(limit_per_minute=5, limit_per_day=100)
    limits.reserve(account, 1, START)
    limits.reserve(account, 1, START + dt.timedelta(days=2, hours=1))
    # The first day's two counters are gone; the new minute and day remain.
    assert UsageCounter.objects.filter(account=account).count() == 2


@pytest.mark.django_db
def test_a_large_request_costs_a_few_queries_not_one_per_message(
    django_assert_max_num_queries,
):
    # The write lock is held for the whole reservation: it must not count down one by one.
    account = SmtpAccountFactory(limit_per_minute=10, limit_per_hour=20)
    with django_assert_max_num_queries(16):
        assert limits.reserve(account, 1000, START) == 10
    with django_assert_max_num_queries(16):
        assert limits.reserve(account, 1000, START + dt.timedelta(minutes=1)) == 10
    # A window that is partly used: what is left is computed, not counted down to.
    partly = SmtpAccountFactory(limit_per_minute=50)
    limits.reserve(partly, 5, START)
    with django_assert_max_num_queries(16):
        assert limits.reserve(partly, 1000, START) == 45


# -- two workers on a fresh window (PostgreSQL) -----------------------------------------


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", [pid])
        row = cursor.fetchone()
    return row is not None and row[0] == "Lock"


@pytest.mark.postgresql
@pytest.mark.django_db(transaction=True)
def test_two_workers_opening_the_same_window_both_get_their_share():
    """The first worker has created the window's counter row but not committed; the
    second finds no row, inserts its own and waits on the first. When the first
    commits, the second must take its share of the row the first made, not fail."""
    account = SmtpAccountFactory(limit_per_minute=5)
    first_done = threading.Event()
    second: dict[str, object] = {}

    def second_worker() -> None:
        try:
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                second["pid"] = cursor.fetchone()[0]
            second["granted"] = limits.reserve(account, 2, START)
        except Exception as exc:  # reported by the test below
            second["error"] = exc
        finally:
            connections.close_all()
            first_done.set()

    with transaction.atomic():
        assert limits.reserve(account, 2, START) == 2
        worker = threading.Thread(target=second_worker)
        worker.start()
        deadline = time.monotonic() + 30
        # Commit only once the second worker waits for this transaction's row.
        while not ("pid" in second and _waiting_on_a_lock(int(second["pid"]))):
            assert time.monotonic() < deadline, "the second worker never waited"
            assert not first_done.is_set(), f"the second worker did not wait: {second}"
            time.sleep(0.01)
    worker.join(timeout=30)
    assert second == {"pid": second["pid"], "granted": 2}
    assert limits.usage(account, START) == {"minute": (4, 5)}


# -- what is left to share: how a pool weighs its members -------------------------------


@pytest.mark.django_db
def test_what_is_left_is_the_tightest_windows_room_for_every_account_in_one_query(
    django_assert_num_queries,
):
    """A pool with the spread policy gives each member messages in proportion to what
    is left in its tightest window; an account without limits has no bound (None)."""
    tight_minute = SmtpAccountFactory(name="tight", limit_per_minute=10, limit_per_hour=15)
    tight_hour = SmtpAccountFactory(name="hourly", limit_per_minute=10, limit_per_hour=12)
    fresh = SmtpAccountFactory(name="fresh", limit_per_day=500)
    over = SmtpAccountFactory(name="over", limit_per_hour=4)
    unlimited = SmtpAccountFactory(name="free")
    assert limits.reserve(tight_minute, 7, START) == 7  # minute 3 left, hour 8: 3
    assert limits.reserve(tight_hour, 6, START) == 6  # minute 4 left, hour 6: 4
    assert limits.reserve(over, 4, START) == 4
    UsageCounter.objects.filter(account=over).update(count=9)  # more than the limit
    accounts = [tight_minute, tight_hour, fresh, over, unlimited]
    with django_assert_num_queries(1):
        left = limits.remaining(accounts, START)
    assert left == {
        tight_minute.pk: 3,
        tight_hour.pk: 4,
        fresh.pk: 500,
        over.pk: 0,  # never below nothing
        unlimited.pk: None,
    }


@pytest.mark.django_db
def test_what_was_sent_in_an_earlier_window_is_not_counted_against_this_one():
    account = SmtpAccountFactory(limit_per_minute=10, limit_per_hour=100)
    assert limits.reserve(account, 6, START) == 6
    next_minute = START + dt.timedelta(minutes=1)
    assert limits.remaining([account], next_minute) == {account.pk: 10}  # hour: 94 left
    next_hour = START + dt.timedelta(hours=1)
    assert limits.reserve(account, 9, next_minute) == 9
    assert limits.remaining([account], next_minute) == {account.pk: 1}
    assert limits.remaining([account], next_hour) == {account.pk: 10}


@pytest.mark.django_db
def test_accounts_without_limits_cost_no_query(django_assert_num_queries):
    accounts = [SmtpAccountFactory(name="a"), SmtpAccountFactory(name="b")]
    with django_assert_num_queries(0):
        assert limits.remaining(accounts, START) == {accounts[0].pk: None, accounts[1].pk: None}
    assert limits.remaining([], START) == {}


@pytest.mark.django_db
def test_one_accounts_usage_is_not_another_accounts():
    busy = SmtpAccountFactory(name="busy", limit_per_minute=5)
    idle = SmtpAccountFactory(name="idle", limit_per_minute=5)
    assert limits.reserve(busy, 5, START) == 5
    assert limits.remaining([busy, idle], START) == {busy.pk: 0, idle.pk: 5}
