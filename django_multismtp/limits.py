"""Sending limits enforced across processes and machines with atomic database updates.

Each configured limit (per second, minute, hour, day) has one counter row per account
and fixed time window. A reservation is a conditional ``UPDATE ... SET count = count + n
WHERE count + n <= limit``: the database serialises concurrent writers, so two workers
can never both take the last slot, on SQLite and on PostgreSQL alike. Reservations for
messages that were not attempted after all are given back with :func:`release`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F, Q

from .models import UsageCounter

if TYPE_CHECKING:
    from .models import SmtpAccount

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def window_start(now: dt.datetime, seconds: int) -> dt.datetime:
    elapsed = int((now - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=elapsed - elapsed % seconds)


def reserve(account: SmtpAccount, wanted: int, now: dt.datetime) -> int:
    """Reserve up to ``wanted`` sends on ``account`` now; return how many were granted."""
    limits = account.limits()
    if not limits or wanted <= 0:
        return max(wanted, 0)
    with transaction.atomic():
        granted = wanted
        applied: list[tuple[str, dt.datetime, int]] = []
        for period, seconds, limit in limits:
            start = window_start(now, seconds)
            rows = UsageCounter.objects.filter(account=account, period=period, window_start=start)
            # Write before reading: on SQLite a transaction that has read cannot take the
            # write lock while another process waits for it ("database is locked" at once,
            # the busy timeout notwithstanding); one that starts with a write just waits.
            while granted > 0:
                if rows.filter(count__lte=limit - granted).update(count=F("count") + granted):
                    break
                used = rows.values_list("count", flat=True).first()
                if used is None:
                    UsageCounter.objects.bulk_create(
                        [UsageCounter(account=account, period=period, window_start=start, count=0)],
                        ignore_conflicts=True,
                    )
                    continue
                granted = min(granted - 1, limit - used)
            if granted <= 0:
                granted = 0
            # Earlier windows were charged for more than this one allows: give it back.
            for prev_period, prev_start, prev_granted in applied:
                if prev_granted > granted:
                    UsageCounter.objects.filter(
                        account=account, period=prev_period, window_start=prev_start
                    ).update(count=F("count") - (prev_granted - granted))
            applied = [(p, s, granted) for p, s, _ in applied]
            if granted == 0:
                return 0
            applied.append((period, start, granted))
        _forget_old_windows(account, now)
        return granted


def release(account: SmtpAccount, count: int, now: dt.datetime) -> None:
    """Give back ``count`` reservations made in the current windows."""
    if count <= 0:
        return
    for period, seconds, _limit in account.limits():
        UsageCounter.objects.filter(
            account=account,
            period=period,
            window_start=window_start(now, seconds),
            count__gte=count,
        ).update(count=F("count") - count)


def usage(account: SmtpAccount, now: dt.datetime) -> dict[str, tuple[int, int]]:
    """``{period: (used, limit)}`` for the current windows (admin, commands)."""
    result = {}
    for period, seconds, limit in account.limits():
        used = (
            UsageCounter.objects.filter(
                account=account, period=period, window_start=window_start(now, seconds)
            )
            .values_list("count", flat=True)
            .first()
        )
        result[period] = (used or 0, limit)
    return result


def remaining(accounts: Iterable[SmtpAccount], now: dt.datetime) -> dict[Any, int | None]:
    """``{pk: sends left in the account's tightest current window}`` (None: no limits),
    in one query for all of them: how the engine weighs the members of a pool."""
    result: dict[Any, int | None] = {}
    windows: dict[Any, list[tuple[str, dt.datetime, int]]] = {}
    wanted = Q()
    for account in accounts:
        configured = account.limits()
        if not configured:
            result[account.pk] = None
            continue
        windows[account.pk] = []
        for period, seconds, limit in configured:
            start = window_start(now, seconds)
            windows[account.pk].append((period, start, limit))
            wanted |= Q(account_id=account.pk, period=period, window_start=start)
    if not windows:
        return result
    used = {
        (account_id, period, start): count
        for account_id, period, start, count in UsageCounter.objects.filter(wanted).values_list(
            "account_id", "period", "window_start", "count"
        )
    }
    for pk, account_windows in windows.items():
        tightest = min(
            limit - used.get((pk, period, start), 0) for period, start, limit in account_windows
        )
        result[pk] = max(0, tightest)
    return result


def free_at(account: SmtpAccount, now: dt.datetime) -> dt.datetime:
    """When ``account`` may send again as far as its own limits go: the end of the
    longest window that is full now (``now`` when none is)."""
    when = now
    seconds = {period: length for period, length, _limit in account.limits()}
    for period, (used, limit) in usage(account, now).items():
        if used >= limit:
            end = window_start(now, seconds[period]) + dt.timedelta(seconds=seconds[period])
            when = max(when, end)
    return when


def _forget_old_windows(account: SmtpAccount, now: dt.datetime) -> None:
    """Counters older than the longest window are history; drop them."""
    UsageCounter.objects.filter(
        account=account, window_start__lt=now - dt.timedelta(days=2)
    ).delete()
