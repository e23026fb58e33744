"""The outbox's life cycle: queue, claim with a lease, settle, back off.

Delivery is at least once. A worker claims due rows by writing its id and a lease end
into them (``SELECT ... FOR UPDATE SKIP LOCKED`` on databases that have it, so workers
on many machines never wait for each other; one conditional ``UPDATE`` elsewhere), sends
them, and settles them with updates that only touch rows it still holds. It settles
them as their replies arrive, in small chunks, not when the batch is over (see
:mod:`django_multismtp.engine`). A worker that dies leaves the rest claimed until the
lease ends; the next claim of such a row marks it a *possible duplicate*, because the
dead worker may have sent it before dying: those are at most the messages in flight and
one unwritten chunk. The Message-ID never changes, so the receiving side can recognise
the copy.

No row is left claimed because of an error of ours: settling one row that raises makes
it a failed attempt with the error (:func:`settle`), and a batch that fails as a whole
gives its rows back with the attempt counted (:func:`give_back`), so
OUTBOX_MAX_ATTEMPTS and OUTBOX_MAX_AGE end every loop.
"""

from __future__ import annotations

import datetime as dt
import logging
import operator
import os
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connections, router, transaction
from django.db.models import Case, DateTimeField, F, Q, Value, When
from django.utils.module_loading import import_string

from . import clock, conf, limits, state
from .bulk import (
    array_placeholder,
    binary_cursor,
    bound_cursor,
    django_times,
    insert_rows,
    update_rows,
)
from .models import DeliveryLog, OutboxMessage
from .precompiled import from_rows
from .replies import Failure

if TYPE_CHECKING:
    from .outgoing import Outgoing

logger = logging.getLogger("django_multismtp.outbox")

Status = OutboxMessage.Status

#: Fields a settlement writes.
SETTLED_FIELDS = [
    "status",
    "attempts",
    "deferrals",
    "smtp_attempts",
    "next_attempt_at",
    "last_error",
    "last_error_code",
    "sent_at",
    "sent_by",
    "locked_by",
    "locked_until",
]
#: A row's settled fields as they are, to put back if settling it fails (one C call
#: instead of a dictionary built in Python for every row).
_settled_values = operator.attrgetter(*SETTLED_FIELDS)


def worker_id() -> str:
    """Host, process and a random part: unique per drain, readable in the admin."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def retry_delay(passes: int) -> dt.timedelta:
    """The wait after the ``passes``-th failed pass: doubling, capped."""
    base = conf.get_timedelta("OUTBOX_RETRY_BACKOFF")
    cap = conf.get_timedelta("OUTBOX_RETRY_BACKOFF_MAX")
    return min(base * (1 << min(max(passes - 1, 0), 30)), cap)


def next_attempt(
    item: Outgoing,
    attempts: int,
    now: dt.datetime,
    *,
    deferred: bool,
    free: dict[Any, dt.datetime] | None = None,
) -> dt.datetime:
    """When to try again.

    After a server failure: the back-off for the ``attempts``-th failed attempt.
    After a deferral (no account could take it): the first back-off step only, as
    waiting longer would not free an account sooner. Either way no earlier than the
    moment the first candidate account is free again (its rate limit and its own full
    limit windows over), so a backlog behind a limit of N a minute moves every minute.
    """
    when = now + retry_delay(1 if deferred else attempts)
    if item.choice is None:
        return when
    accounts = [
        a for a in (*item.choice.candidates, *(a for a, _why in item.choice.skipped)) if a.is_active
    ]
    if not accounts:
        return when
    free = free if free is not None else {}

    def free_time(account: Any) -> dt.datetime:
        if account.pk not in free:
            paused = account.rate_limited_until or now
            free[account.pk] = max(paused, limits.free_at(account, now))
        return free[account.pk]

    return max(when, min(free_time(a) for a in accounts))


def _age(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def error_text(failure: Failure | None) -> str:
    if failure is None:
        return ""
    return f"{failure.summary()}\n{failure.hint}".strip()[:2000]


def _hinted_account(item: Outgoing) -> tuple[Any, str]:
    """The primary key and name of the account the message's hint named (None, "" when
    none). The selection resolved the hint already (an unknown one raised before
    anything was queued), so the row stores the account it found, by key."""
    account = item.choice.account if item.choice is not None else None
    if account is None:
        if item.hints.account is not None:  # never queue it to be routed by other rules
            raise ValueError(f"The account hint of {item.message_id} was not resolved.")
        return None, ""
    return account.pk, account.name[:100]


def _subject(item: Outgoing) -> str:
    subject = getattr(item.message, "subject", "") or ""
    return " ".join(str(subject).split())[:255]


def enqueue(
    items: Sequence[Outgoing], *, mailer: str | None, now: dt.datetime, failed: bool
) -> list[OutboxMessage]:
    """Store ``items`` in the outbox with one statement; return the (unsaved-pk) rows.

    ``failed``: they were tried now and could not go out (their failure is recorded and
    the next attempt backs off); otherwise they are queued to be sent as soon as a
    worker is free.
    """
    rows = []
    free: dict[Any, dt.datetime] = {}
    for item in items:
        tried = item.attempts > 0
        hinted_pk, hinted_name = _hinted_account(item)
        row = OutboxMessage(
            message_id=item.message_id[:255],
            subject=_subject(item),
            from_email=item.from_email[:998],
            uses_default_from=item.uses_default_from,
            reply_to=", ".join(item.reply_to),
            envelope_recipients="\n".join(item.envelope_recipients),
            hinted_account_id=hinted_pk,
            account_hint=hinted_name,
            user_id=item.user_id,
            purpose=item.hints.purpose or "",
            mailer=mailer or "",
            status=Status.QUEUED,
            smtp_attempts=item.attempts,
            created_at=now,
            next_attempt_at=now,
        )
        if failed:
            row.attempts, row.deferrals = (1, 0) if tried else (0, 1)
            row.next_attempt_at = next_attempt(item, 1, now, deferred=not tried, free=free)
            row.last_error = error_text(item.failure)
            row.last_error_code = item.failure.code if item.failure else None
        data = item.render(None)
        row.data, row.size = data, len(data)
        rows.append(row)
    insert_rows(OutboxMessage, rows)
    schedule_wake()
    return rows


def schedule_wake() -> None:
    """Run OUTBOX_WAKE once the caller's transaction commits (the rows exist then)."""
    wake = conf.get_setting("OUTBOX_WAKE")
    if wake is None:
        return

    def run() -> None:
        try:
            function: Callable[[], Any] = import_string(wake) if isinstance(wake, str) else wake
            function()
        except Exception:  # the rows are safe; a worker's next poll sends them
            logger.exception("OUTBOX_WAKE %r failed; queued mail waits for the next drain", wake)

    transaction.on_commit(run, using=router.db_for_write(OutboxMessage))


def _due(now: dt.datetime) -> Q:
    return Q(status=Status.QUEUED, next_attempt_at__lte=now) & ~OutboxMessage.claimed(now)


def claim(
    limit: int, *, worker: str, now: dt.datetime, lease: dt.timedelta | None = None
) -> list[OutboxMessage]:
    """Claim up to ``limit`` due rows for ``worker`` until ``now + lease``."""
    lease = lease or conf.get_timedelta("OUTBOX_LEASE")
    alias = router.db_for_write(OutboxMessage)
    connection = connections[alias]
    due = _due(now)
    ordered = OutboxMessage.objects.using(alias).filter(due).order_by("next_attempt_at", "pk")
    changes = {
        "locked_by": Value(worker),
        "locked_until": Value(now + lease),
        "claims": F("claims") + 1,
        # Claimed before and never settled: the earlier worker may have sent it.
        "possible_duplicate": Case(
            When(~Q(locked_by=""), then=Value(True)), default=F("possible_duplicate")
        ),
    }
    if connection.vendor == "postgresql":
        return _claim_returning(alias, limit, worker=worker, now=now, until=now + lease)
    if connection.vendor == "sqlite":
        # No transaction around the read and the write: SQLite serialises writers, and a
        # transaction that read first could not take the write lock while another
        # process waits for it. The UPDATE re-checks that each row is still due and
        # unclaimed, so two workers never both take a row.
        ids = list(ordered.values_list("pk", flat=True)[:limit])
        if ids:
            OutboxMessage.objects.using(alias).filter(due, pk__in=ids).update(**changes)
    else:
        with transaction.atomic(using=alias):
            locked = ordered.select_for_update(
                skip_locked=connection.features.has_select_for_update_skip_locked
            )
            ids = list(locked.values_list("pk", flat=True)[:limit])
            if ids:
                OutboxMessage.objects.using(alias).filter(pk__in=ids).update(**changes)
    if not ids:
        return []
    # Only the rows this call claimed: the worker may hold others still (the batch on
    # the wire while it claims the next one), which must not be sent twice.
    return list(
        OutboxMessage.objects.using(alias)
        .filter(pk__in=ids, locked_by=worker, status=Status.QUEUED)
        .order_by("next_attempt_at", "pk")
    )


#: Set for the claim on PostgreSQL (see :func:`_claim_returning`).
CLAIM_PLANNER_SETTINGS = "SET LOCAL enable_sort = off"


def _claim_returning(
    alias: str, limit: int, *, worker: str, now: dt.datetime, until: dt.datetime
) -> list[OutboxMessage]:
    """PostgreSQL: the claim as one statement that locks, writes and returns the rows
    (``WITH ... FOR UPDATE SKIP LOCKED`` then ``UPDATE ... RETURNING``).

    The rows are found through the partial index of queued rows, in its order, so the
    scan stops after ``limit`` rows it could lock (``SKIP LOCKED``: rows another
    worker is claiming right now are passed over, never waited for or taken twice);
    the same conditions as :func:`_due`. Three statements (ids, update, rows) cost the
    database several times this one: the rows are read once, by the update.

    Sorting is switched off for the statement: the index is the only way to the rows
    in order without one. Otherwise a planner that believes few rows are queued (a
    table not analysed yet, or analysed when the queue was empty, before a campaign)
    reads and sorts every due row for each batch: measured, a 20,000-message drain's
    database CPU rose by half until autovacuum analysed the table."""
    connection = connections[alias]
    sql, params = claim_statement(connection, limit, worker=worker, now=now, until=until)
    nested = connection.in_atomic_block
    binary = binary_cursor(connection)
    with transaction.atomic(using=alias), binary or connection.cursor() as cursor:
        cursor.execute(CLAIM_PLANNER_SETTINGS)
        if binary is not None:  # the rows' values read in C (see bulk.binary_cursor)
            cursor.execute(sql, params)
            fetched = django_times(connection, cursor.fetchall(), _DATE_COLUMNS)
            rows = from_rows(OutboxMessage, alias, fetched)
        else:
            rows = list(OutboxMessage.objects.using(alias).raw(sql, params))
        if nested:  # SET LOCAL lasts until the caller's transaction ends
            cursor.execute("SET LOCAL enable_sort TO DEFAULT")
    rows.sort(key=lambda row: (row.next_attempt_at, row.pk))
    return rows


#: Where the claim's rows (every column, in the model's order) hold dates.
_DATE_COLUMNS = [
    index
    for index, field in enumerate(OutboxMessage._meta.concrete_fields)
    if isinstance(field, DateTimeField)
]


def _quoted_names(connection: Any) -> tuple[str, Callable[[str], str]]:
    """The outbox table's quoted name, and a function quoting its fields' column names,
    for the PostgreSQL statements written by hand."""
    quote = connection.ops.quote_name
    opts = OutboxMessage._meta

    def column(name: str) -> str:
        return str(quote(str(opts.get_field(name).column)))  # type: ignore[union-attr]

    return str(quote(opts.db_table)), column


def claim_statement(
    connection: Any, limit: int, *, worker: str, now: dt.datetime, until: dt.datetime
) -> tuple[str, list[Any]]:
    """The SQL and parameters of the PostgreSQL claim (also for tests to ``EXPLAIN``)."""
    table, column = _quoted_names(connection)
    quote = connection.ops.quote_name
    columns = ", ".join(
        f"{table}.{quote(str(f.column))}" for f in OutboxMessage._meta.concrete_fields
    )
    status, next_at, until_col = column("status"), column("next_attempt_at"), column("locked_until")
    locked_by, pk = column("locked_by"), column("id")
    # Only quoted names of our own model and the status constant are formatted in (a
    # literal, so the planner knows the partial index applies); values are parameters.
    queued = str(Status.QUEUED)
    assert queued.isalpha()
    sql = (
        # MATERIALIZED: the locking SELECT runs once, whatever plan the UPDATE gets. As
        # a subquery (``WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)``) the
        # planner may run it more than once and claim more than ``limit`` rows.
        f"WITH due AS MATERIALIZED (SELECT {pk} FROM {table} "  # noqa: S608
        f"WHERE {status} = '{queued}' AND {next_at} <= %s "
        f"AND ({until_col} IS NULL OR {until_col} <= %s) "
        f"ORDER BY {next_at}, {pk} LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"UPDATE {table} SET {locked_by} = %s, {until_col} = %s, "
        f"{column('claims')} = {table}.{column('claims')} + 1, "
        # Claimed before and never settled: the earlier worker may have sent it.
        f"{column('possible_duplicate')} = "
        f"({table}.{column('possible_duplicate')} OR {table}.{locked_by} <> '') "
        f"FROM due WHERE {table}.{pk} = due.{pk} RETURNING {columns}"
    )
    return sql, [now, now, limit, worker, until]


@dataclass
class Settlement:
    """What one pass did to its rows, for the worker's report."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    cancelled: int = 0
    #: Rows this worker no longer held when settling (its lease ran out).
    lost_lease: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, other: Settlement) -> None:
        for name in ("sent", "retrying", "failed", "cancelled", "lost_lease"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.extend(other.errors)


@dataclass
class _Limits:
    """When to give up, read once per settlement."""

    now: dt.datetime
    max_attempts: int = 0
    expired_before: dt.datetime | None = None
    free: dict[Any, dt.datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.max_attempts = int(conf.get_setting("OUTBOX_MAX_ATTEMPTS"))
        max_age = conf.get_setting("OUTBOX_MAX_AGE")
        if max_age is not None:
            self.expired_before = self.now - conf.as_timedelta(max_age)

    def give_up(self, row: OutboxMessage, counted: bool) -> bool:
        """Fail ``row`` (prefixing the reason to its error) if its time is up."""
        if counted and row.attempts >= self.max_attempts:
            row.status = Status.FAILED
            row.last_error = f"Gave up after {row.attempts} attempts. {row.last_error}"
        elif self.expired_before is not None and row.created_at < self.expired_before:
            row.status = Status.FAILED
            row.last_error = (
                f"Gave up: not sent {_age(self.now - row.created_at)} after it was queued "
                f"(OUTBOX_MAX_AGE). {row.last_error}"
            )
        else:
            return False
        return True


#: Set by :func:`unguarded`.
_unguarded: ContextVar[bool] = ContextVar("multismtp_settle_unguarded", default=False)


@contextmanager
def unguarded() -> Iterator[None]:
    """Within this block :func:`settle` writes its log rows and outcomes with no
    savepoint, both or neither (one statement where it can, see :func:`_store`), and if
    the database refuses them it raises, its rows as they were before the call and
    nothing counted. For a caller that then calls :func:`settle` again outside this
    block (the engine, for each chunk it settles): a savepoint taken for every chunk
    just in case cost two statements per chunk for the database, and the transaction
    around the two writes two more (issue #17)."""
    token = _unguarded.set(True)
    try:
        yield
    finally:
        _unguarded.reset(token)


def settle(
    items: Iterable[Outgoing],
    *,
    worker: str,
    now: dt.datetime,
    log: Sequence[DeliveryLog] = (),
) -> Settlement:
    """Write each claimed row's outcome, touching only rows ``worker`` still holds, and
    the delivery ``log`` rows of the same messages: both in the caller's transaction.

    A fixed number of queries, whatever the number of items. If working out one row's
    outcome raises, that row alone becomes a failed attempt with the error; if the
    database refuses the log rows, they are written one by one and the ones it refuses
    are dropped (and logged: a log row records what happened, it decides nothing); if
    it refuses the outcomes, the rows are written one by one, and a row it still
    refuses is given back (:func:`give_back`). (Within :func:`unguarded`, a refusal
    raises instead, for the caller to settle again.)"""
    result = Settlement()
    rows = []
    befores = []
    limits_ = _Limits(now)
    for item in items:
        row = item.row
        assert row is not None
        before = _settled_values(row)
        befores.append(before)
        try:
            _outcome(item, row, limits_)
        except Exception as exc:
            logger.exception("Settling outbox row %s failed", row.message_id)
            for name, value in zip(SETTLED_FIELDS, before, strict=True):
                setattr(row, name, value)
            _faulted(item, row, limits_, "settling it", exc)
        _count(row, item, result)
        rows.append(row)
    if _unguarded.get():
        try:
            updated = _store(rows, worker=worker, guarded=False, log=log)
        except BaseException:  # settled again by the caller, from the same state
            for row, before in zip(rows, befores, strict=True):
                for name, value in zip(SETTLED_FIELDS, before, strict=True):
                    setattr(row, name, value)
            raise
    else:
        state.write_log_guarded(log)
        updated = _store(rows, worker=worker)
    result.lost_lease = len(rows) - updated
    if result.lost_lease:
        logger.warning(
            "%d outbox rows were cancelled or claimed by another worker before %s settled "
            "them (if claimed: raise OUTBOX_LEASE above the time a batch takes).",
            result.lost_lease,
            worker,
        )
    return result


def _outcome(item: Outgoing, row: OutboxMessage, limits_: _Limits) -> None:
    """Set the fields of ``row`` that say what became of ``item`` in this pass."""
    now = limits_.now
    row.locked_by, row.locked_until = "", None
    reached_server = item.attempts > row.smtp_attempts
    row.smtp_attempts = item.attempts
    if item.cancelled:
        row.status = Status.CANCELLED
        return
    if item.sent_by is not None or item.sent_by_fallback:
        row.status, row.sent_at, row.sent_by = Status.SENT, now, item.sent_by
        # An earlier pass's error no longer applies (the delivery log keeps it).
        row.last_error, row.last_error_code = "", None
        return
    failure = item.failure
    row.last_error = error_text(failure)
    row.last_error_code = failure.code if failure else None
    # Our own fault counts like a server's failure: a message that always makes our code
    # raise must end after OUTBOX_MAX_ATTEMPTS, not come back for ever.
    counted = reached_server or item.faulted
    if counted:
        row.attempts += 1
    else:
        row.deferrals += 1
    if failure is not None and not failure.retryable:
        row.status = Status.FAILED
    elif not limits_.give_up(row, counted):
        row.next_attempt_at = next_attempt(
            item, row.attempts, now, deferred=not counted, free=limits_.free
        )
    if row.status == Status.FAILED:
        row.last_error = row.last_error.strip()[:2000]


def _faulted(
    item: Outgoing | None, row: OutboxMessage, limits_: _Limits, doing: str, exc: BaseException
) -> None:
    """The outcome of a row whose settlement raised: simple enough not to raise again.
    A message the server accepted stays sent; any other is a failed attempt."""
    now = limits_.now
    row.locked_by, row.locked_until = "", None
    if item is not None and item.attempts > row.smtp_attempts:
        row.smtp_attempts = item.attempts
    if item is not None and (item.sent_by is not None or item.sent_by_fallback):
        row.status, row.sent_at, row.sent_by = Status.SENT, now, item.sent_by
        return
    row.attempts += 1
    row.last_error = f"Internal error while {doing}: {exc!r}"[:2000]
    row.last_error_code = None
    if not limits_.give_up(row, True):
        row.next_attempt_at = now + retry_delay(row.attempts)
    row.last_error = row.last_error[:2000]


def _count(row: OutboxMessage, item: Outgoing | None, result: Settlement) -> None:
    if row.status == Status.SENT:
        result.sent += 1
    elif row.status == Status.CANCELLED:
        result.cancelled += 1
    elif row.status == Status.FAILED:
        result.failed += 1
        summary = item.failure.summary() if item and item.failure else row.last_error
        result.errors.append(f"{row.message_id}: {summary}")
    else:
        result.retrying += 1


def _store(
    rows: list[OutboxMessage],
    *,
    worker: str,
    guarded: bool = True,
    log: Sequence[DeliveryLog] = (),
) -> int:
    """Write settled rows that ``worker`` still holds; return how many it held.

    ``guarded``: in a savepoint, and if the database refuses, one by one; otherwise the
    rows and the ``log`` rows together (one statement when every row is plainly sent on
    PostgreSQL, else one transaction), and a refusal raises (see :func:`unguarded`)."""
    held = ("locked_by", "=", worker)
    sent = [row for row in rows if row.status == Status.SENT]
    others = [row for row in rows if row.status != Status.SENT]

    alias = router.db_for_write(OutboxMessage)
    compact = connections[alias].vendor == "postgresql"

    def write(sent: list[OutboxMessage], others: list[OutboxMessage]) -> int:
        with transaction.atomic(using=alias, savepoint=guarded):
            plain = [row for row in sent if _plainly_sent(row)] if compact else []
            if plain:
                sent = [row for row in sent if not _plainly_sent(row)]
            # A row cancelled while it was being sent was sent all the same: say so; but a
            # cancelled row must not come back to the queue.
            return (
                _store_sent(alias, plain, worker=worker)
                + update_rows(OutboxMessage, sent, SETTLED_FIELDS, where=[held])
                + update_rows(
                    OutboxMessage,
                    others,
                    SETTLED_FIELDS,
                    where=[held, ("status", "<>", Status.CANCELLED)],
                )
            )

    if not guarded:
        return _store_unguarded(alias, rows, log, worker=worker, write=write)
    if not rows:
        return 0
    try:
        return write(sent, others)
    except Exception:
        logger.exception("Settling %d outbox rows at once failed; settling one by one", len(rows))
    updated = 0
    for row in rows:
        try:
            updated += write([row], []) if row.status == Status.SENT else write([], [row])
        except Exception as exc:
            logger.exception("Settling outbox row %s failed", row.message_id)
            if row.status == Status.SENT:  # keep it sent: only the row's details are lost
                row.sent_by = None
            else:  # the error text may be what it refused: keep the outcome, not the text
                gave_up = row.last_error.split(". ", 1)[0] + ". "
                row.last_error = (gave_up if row.last_error.startswith("Gave up") else "") + (
                    f"Internal error while storing the outcome: {type(exc).__name__}"
                )
                row.last_error_code = None
            try:
                updated += write([row], []) if row.status == Status.SENT else write([], [row])
            except Exception:
                logger.exception("Outbox row %s stays claimed until its lease ends", row.pk)
    return updated


def _store_unguarded(
    alias: str,
    rows: list[OutboxMessage],
    log: Sequence[DeliveryLog],
    *,
    worker: str,
    write: Callable[[list[OutboxMessage], list[OutboxMessage]], int],
) -> int:
    """The unguarded write of :func:`_store`: ``rows`` and ``log`` both or neither.

    On PostgreSQL, when every row is plainly sent (a chunk of a drain, nearly always),
    one statement writes both (``WITH logged AS (INSERT ...) UPDATE ...``): atomic by
    itself, so with no transaction around it where the caller has none, the round trips
    of a chunk go from four (BEGIN, INSERT, UPDATE, COMMIT) to one. Otherwise one
    transaction (a savepoint inside the caller's)."""
    connection = connections[alias]
    together = router.db_for_write(DeliveryLog) == alias
    if connection.vendor == "postgresql" and together and all(map(_plainly_sent, rows)):
        sql, params = _sent_statement(alias, rows, worker=worker)
        nested = connection.in_atomic_block
        with transaction.atomic(using=alias) if nested else nullcontext():
            return state.write_log(log, along=(sql, params)) or 0
    if not together:  # the log commits on its own database first
        state.write_log(log)
    with transaction.atomic(using=alias):
        if together:
            state.write_log(log)
        return write(
            [row for row in rows if row.status == Status.SENT],
            [row for row in rows if row.status != Status.SENT],
        )


def _plainly_sent(row: OutboxMessage) -> bool:
    """Settled as sent with nothing else to say: most rows, written by :func:`_store_sent`."""
    return (
        row.status == Status.SENT
        and row.last_error == ""
        and row.last_error_code is None
        and row.locked_by == ""
        and row.locked_until is None
    )


def _store_sent(alias: str, rows: list[OutboxMessage], *, worker: str) -> int:
    """PostgreSQL: write rows :func:`_plainly_sent` that ``worker`` still holds; return
    how many it held."""
    if not rows:
        return 0
    sql, params = _sent_statement(alias, rows, worker=worker)
    with bound_cursor(connections[alias]) as cursor:
        cursor.execute(sql, params)
        return max(int(cursor.rowcount), 0)


def _sent_statement(alias: str, rows: list[OutboxMessage], *, worker: str) -> tuple[str, list[Any]]:
    """The SQL and parameters of :func:`_store_sent` (for :func:`bulk.bound_cursor`).

    What :func:`update_rows` would write, with the values every such row shares as
    constants: four short arrays instead of one per settled field, so the statement
    the database parses for every chunk is a fraction of the size (parsing and
    planning were about a quarter of its CPU per message). An empty ``rows`` updates
    nothing."""
    connection = connections[alias]
    table, column = _quoted_names(connection)

    values: list[list[Any]] = [
        [row.pk for row in rows],
        [row.sent_at for row in rows],
        [row.sent_by_id for row in rows],
        [row.smtp_attempts for row in rows],
    ]
    sent = str(Status.SENT)
    assert sent.isalpha()
    mark = array_placeholder(connection)
    # Only quoted names of our own model, the status constant and the placeholder of the
    # arrays are formatted in.
    sql = (
        f"UPDATE {table} SET {column('status')} = '{sent}', "  # noqa: S608
        f"{column('sent_at')} = v.sent_at, {column('sent_by')} = v.sent_by, "
        f"{column('smtp_attempts')} = v.attempts, {column('last_error')} = '', "
        f"{column('last_error_code')} = NULL, {column('locked_by')} = '', "
        f"{column('locked_until')} = NULL "
        f"FROM unnest({mark}::bigint[], {mark}::timestamptz[], {mark}::bigint[], "
        f"{mark}::integer[]) "
        f"AS v(pk, sent_at, sent_by, attempts) "
        f"WHERE {table}.{column('id')} = v.pk AND {table}.{column('locked_by')} = %s"
    )
    return sql, [*values, worker]


def give_back(
    rows: Iterable[OutboxMessage],
    *,
    worker: str,
    now: dt.datetime,
    error: BaseException,
    doing: str = "sending the batch",
) -> Settlement:
    """Settle claimed rows that a whole batch failed on: each is a failed attempt with
    the error (failed for good after OUTBOX_MAX_ATTEMPTS or OUTBOX_MAX_AGE) instead of
    waiting out the lease. Rows already settled, or no longer held, are left alone."""
    result = Settlement()
    limits_ = _Limits(now)
    held = [row for row in rows if row.locked_by == worker and row.status == Status.QUEUED]
    for row in held:
        _faulted(None, row, limits_, doing, error)
        _count(row, None, result)
    updated = _store(held, worker=worker)
    result.lost_lease = len(held) - updated
    return result


def release(rows: Iterable[OutboxMessage], *, worker: str) -> None:
    """Give claimed rows back untouched (a worker stopping before sending them)."""
    ids = [row.pk for row in rows]
    if ids:
        OutboxMessage.objects.filter(pk__in=ids, locked_by=worker).update(
            locked_by="", locked_until=None
        )


def retry_now(queryset: Any, now: dt.datetime | None = None) -> int:
    """Make queued or failed rows due now (the admin's *retry now*)."""
    now = now or clock.now()
    return int(
        queryset.filter(status__in=[Status.QUEUED, Status.FAILED]).update(
            status=Status.QUEUED, next_attempt_at=now
        )
    )


def cancel(queryset: Any) -> int:
    """Cancel rows that have not been sent. A row a worker is sending right now may
    still go out; its settlement then records it as sent (see :func:`settle`)."""
    return int(
        queryset.filter(status__in=[Status.QUEUED, Status.FAILED]).update(status=Status.CANCELLED)
    )
