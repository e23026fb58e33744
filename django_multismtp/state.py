"""Record what happened: account state (last error/success, rate limited until) and the
delivery log, written once per batch rather than once per message."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.db import connections, router, transaction
from django.db.models import F

from . import conf, signals
from .models import DeliveryLog, SmtpAccount
from .replies import Failure, Outcome

if TYPE_CHECKING:
    pass

logger = logging.getLogger("django_multismtp")


def throttle_backoff(account: SmtpAccount, failure: Failure) -> dt.timedelta:
    """Back-off after a throttling reply: a day for daily quotas, else doubling."""
    if failure.daily_quota:
        return conf.get_timedelta("DAILY_QUOTA_BACKOFF")
    base = conf.get_timedelta("THROTTLE_BACKOFF")
    cap = conf.get_timedelta("THROTTLE_BACKOFF_MAX")
    return min(base * (1 << min(account.consecutive_throttles, 16)), cap)


def record_failure(account: SmtpAccount, failure: Failure, now: dt.datetime) -> None:
    """Store the last error; for throttling replies, pause the account."""
    updates: dict[str, object] = {
        "last_error": f"{failure.summary()}\n{failure.hint}".strip()[:2000],
        "last_error_code": failure.code,
        "last_error_at": now,
    }
    change = "failed"
    if failure.outcome == Outcome.THROTTLED:
        until = now + throttle_backoff(account, failure)
        updates["rate_limited_until"] = until
        updates["consecutive_throttles"] = F("consecutive_throttles") + 1
        account.rate_limited_until = until
        account.consecutive_throttles += 1
        change = "rate_limited"
    SmtpAccount.objects.filter(pk=account.pk).update(**updates)
    for name in ("last_error", "last_error_code", "last_error_at"):
        setattr(account, name, updates[name])
    logger.warning(
        "SMTP account %r: %s (%s). %s",
        account.name,
        failure.outcome,
        failure.summary(),
        failure.hint,
    )
    signals.account_state_changed.send_robust(
        sender=SmtpAccount,
        account=account,
        change=change,
        failure=failure,
        detail=failure.summary(),
    )


def record_successes(accounts: Iterable[SmtpAccount], now: dt.datetime) -> None:
    """One update for every account that sent something in this batch."""
    recovered = [a for a in accounts if a.consecutive_throttles]
    ids = [a.pk for a in accounts]
    if not ids:
        return
    SmtpAccount.objects.filter(pk__in=ids).update(last_success_at=now, consecutive_throttles=0)
    for account in accounts:
        account.last_success_at = now
        account.consecutive_throttles = 0
    for account in recovered:
        signals.account_state_changed.send_robust(
            sender=SmtpAccount, account=account, change="recovered", failure=None, detail=""
        )


def record_failover(account: SmtpAccount, to: SmtpAccount | None, failure: Failure) -> None:
    signals.account_state_changed.send_robust(
        sender=SmtpAccount,
        account=account,
        change="failed_over",
        failure=failure,
        detail=f"message moved to {to.name if to else 'no other account'}",
    )


def write_log(entries: list[DeliveryLog]) -> None:
    """Insert the batch's log rows with one prepared statement, whatever the batch size.

    ``bulk_create`` splits rows by the backend's parameter cap (Django 5.2 assumes 999 for
    SQLite: 13 INSERTs for 1,000 rows); ``executemany`` keeps one statement per batch on
    every version, and psycopg 3 pipelines it into one round trip.
    """
    if not entries or not conf.get_setting("DELIVERY_LOG"):
        return
    connection = connections[router.db_for_write(DeliveryLog)]
    fields = [f for f in DeliveryLog._meta.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    # Only quoted table and column names of our own model are formatted in: no user data.
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608
        quote(DeliveryLog._meta.db_table),
        ", ".join(quote(str(f.column)) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    rows = [
        [f.get_db_prep_save(getattr(entry, f.attname), connection) for f in fields]
        for entry in entries
    ]
    # One transaction: outside one, SQLite would commit (and sync) after every row.
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, rows)
