"""Record what happened: account state (last error/success, rate limited until) and the
delivery log, written once per batch rather than once per message."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connections, router, transaction
from django.db.models import F

from . import conf, precompiled, signals
from .bulk import bound_cursor, insert_rows, insert_statement
from .models import DeliveryLog, SmtpAccount
from .presets import PRESETS
from .replies import Failure, Outcome, hint_for_provider
from .safetext import safe_text

logger = logging.getLogger("django_multismtp")


def account_hint(account: SmtpAccount, failure: Failure) -> str:
    """The hint for ``failure`` on ``account``, in its provider's words when the account
    still uses its preset's server (a host changed by hand is another provider)."""
    preset = PRESETS.get(account.preset or "")
    if preset is None or (account.host or "").lower() != preset.host:
        return failure.hint
    return hint_for_provider(failure, preset.key)


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
        # (the fields clean them too: ReplyTextField, ReplyCodeField)
        "last_error": safe_text(f"{failure.summary()}\n{account_hint(account, failure)}".strip()),
        "last_error_code": failure.code if failure.code and 200 <= failure.code < 600 else None,
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
        account_hint(account, failure),
        # verify_smtp_accounts reports these itself and filters them out.
        extra={"multismtp_account_failure": True},
    )
    signals.account_state_changed.send_robust(
        sender=SmtpAccount,
        account=account,
        change=change,
        failure=failure,
        detail=failure.summary(),
    )


#: A success recorded this recently is not written again (:func:`record_successes`).
SUCCESS_RESOLUTION = dt.timedelta(seconds=1)


def record_successes(accounts: Iterable[SmtpAccount], now: dt.datetime) -> None:
    """One update for every account that sent something in this batch, except the ones
    whose row, as this batch read it, says so already: a success less than
    :data:`SUCCESS_RESOLUTION` ago, no error since and no throttle counted.

    A draining worker sends a batch every few tenths of a second, and writing the same
    account's last success for each was one statement in six of a batch (issue #17).
    What it costs: an account's *last success* may be up to a second old, and an error
    that another process records in that second stays the newest until this process
    sends through the account again (its next batch reads the error, and writes)."""
    accounts = [a for a in accounts if not _success_on_record(a, now)]
    recovered = [a for a in accounts if a.consecutive_throttles]
    ids = [a.pk for a in accounts]
    if not ids:
        return
    # Written out (precompiled.update): once per call, the ORM's UPDATE cost several
    # times its own run on a one-message send.
    precompiled.update(
        SmtpAccount,
        {"last_success_at": now, "consecutive_throttles": 0},
        f"{{id}} IN ({precompiled.placeholders(len(ids))})",
        ids,
    )
    for account in accounts:
        account.last_success_at = now
        account.consecutive_throttles = 0
    for account in recovered:
        signals.account_state_changed.send_robust(
            sender=SmtpAccount, account=account, change="recovered", failure=None, detail=""
        )


def _success_on_record(account: SmtpAccount, now: dt.datetime) -> bool:
    """Whether ``account``'s row says what :func:`record_successes` would write."""
    last = account.last_success_at
    if (
        last is None
        or account.consecutive_throttles
        or not (now - SUCCESS_RESOLUTION < last <= now)
    ):
        return False
    return account.last_error_at is None or account.last_error_at <= last


def record_failover(account: SmtpAccount, to: SmtpAccount | None, failure: Failure) -> None:
    signals.account_state_changed.send_robust(
        sender=SmtpAccount,
        account=account,
        change="failed_over",
        failure=failure,
        detail=f"message moved to {to.name if to else 'no other account'}",
    )


def hash_address(address: str) -> str:
    """A recipient as the log stores it in "hashed" mode: the same for the same address
    (case-insensitive), so the admin can search for it, but not readable."""
    digest = hashlib.sha256(address.strip().lower().encode()).hexdigest()
    return f"sha256:{digest[:24]}"


def log_details(message: Any, recipients: Iterable[str]) -> dict[str, str]:
    """The subject and recipients columns of a log row, as LOG_RECIPIENTS allows."""
    subject = " ".join(str(getattr(message, "subject", "") or "").split())[:255]
    mode = conf.log_recipients_mode()
    if mode == "plain":
        listed = ", ".join(recipients)
    elif mode == "hashed":
        listed = ", ".join(hash_address(r) for r in recipients)
    else:
        listed = ""
    return {"subject": subject, "recipients": listed[:10000]}


def write_log(
    entries: Sequence[DeliveryLog], *, along: tuple[str, list[Any]] | None = None
) -> int | None:
    """Insert the log rows with one statement, whatever their number (none when
    ``DELIVERY_LOG`` is off).

    ``along``: the SQL and parameters of another PostgreSQL statement (for
    :func:`bulk.bound_cursor`) to run in the same one, ``WITH logged AS (INSERT ...)
    <along>``: both or neither, in one round trip (the outbox's settlement of a chunk,
    see :func:`outbox.unguarded`). Its row count is returned."""
    wanted = list(entries) if entries and conf.get_setting("DELIVERY_LOG") else []
    if along is None:
        if wanted:
            insert_rows(DeliveryLog, wanted)
        return None
    sql, params = along
    if wanted:
        head, values = insert_statement(DeliveryLog, wanted)
        sql, params = f"WITH logged AS ({head}) {sql}", [*values, *params]
    with bound_cursor(connections[router.db_for_write(DeliveryLog)]) as cursor:
        cursor.execute(sql, params)
        return max(int(cursor.rowcount), 0)


def write_log_guarded(entries: Sequence[DeliveryLog]) -> None:
    """:func:`write_log`, and if the database refuses that, the rows one by one,
    dropping (and reporting) the ones it refuses: one bad row neither stops a worker's
    batch nor loses the others; a log row records what happened, it decides nothing."""
    if not entries:
        return
    alias = router.db_for_write(DeliveryLog)
    try:
        with transaction.atomic(using=alias):
            write_log(entries)
        return
    except Exception:
        if len(entries) <= 1:
            logger.exception("Writing %d delivery log rows failed", len(entries))
            return
    for entry in entries:
        try:
            with transaction.atomic(using=alias):
                write_log([entry])
        except Exception:
            logger.exception("Writing the delivery log row of %s failed", entry.message_id)
