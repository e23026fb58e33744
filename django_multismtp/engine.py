"""The delivery engine: choose an account per message, honour limits, send, fail over.

The Django-facing backend (:mod:`django_multismtp.backends.smtp`) speaks Django's
contract (options, ``open``/``close``, ``fail_silently``); the outbox worker
(:mod:`django_multismtp.worker`) sends claimed rows. Both hand their messages to an
:class:`Engine`, so a queued message goes through exactly the same selection, limits,
failover and delivery log as a direct send.

One batch is processed in rounds. Each round, in the calling thread, picks the next
candidate account for every pending message and reserves the account's limits in the
database; then the SMTP work of the round runs on the private event loop (up to
``max_connections`` connections per account, accounts in parallel); then, back in the
calling thread, the results are recorded and messages that failed on one account move
to the next. Database work therefore stays in synchronous code and grows with the
number of rounds, not with the number of messages.

Mail from the outbox is settled as its replies arrive, not when the batch ends: the
calling thread records each reply the loop hands back (see :mod:`feed`) and writes the
finished rows and their log entries every :data:`SETTLE_EVERY` (a few replies or a few
milliseconds, whichever comes first; a fixed number of queries each time). A worker
killed mid-batch has therefore written the outcome of all but the messages in flight
and the last unwritten chunk; only those can be sent twice.

One message never poisons a worker's batch: whatever our own code raises while
rendering, sending, classifying or recording one message makes that message a failed
attempt with the error (:attr:`Outgoing.faulted`), and the batch goes on. A direct
send still raises, as Django's backends do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from django.contrib.auth import get_user_model
from django.core.mail.utils import DNS_NAME
from django.db import router, transaction
from django.utils.translation import gettext as _

from . import (
    clock,
    conf,
    limits,
    outbox,
    parking,
    pools,
    precompiled,
    selection,
    signals,
    slots,
    state,
)
from .eventloop import smtp_loop
from .exceptions import (
    CancelSend,
    MultiSMTPConfigurationError,
    MultiSMTPError,
    NoAccountAvailable,
    SendFailed,
    UnknownAccount,
    send_error,
)
from .feed import AHEAD, Feed, Lane
from .hints import Hints, context_hints, message_hints
from .message import SendStatus
from .models import DeliveryLog, OAuthConnection, OutboxMessage, SmtpAccount
from .models.delivery import DEFERRED
from .oauth import tokens as oauth_tokens
from .outgoing import Attempt, Outgoing
from .replies import Failure, Outcome
from .transport import BEARER_METHODS, Delivery, ServerConfig, Session

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

#: The name logged for the mailer's own server, used when no account matches.
FALLBACK = "fallback"
#: The outcome of a message kept in the outbox for later delivery.
QUEUED = "queued"
#: Failures only a person can fix: waiting in the outbox does not help them, so in
#: "retry" mode they raise at once unless OUTBOX_QUEUE_CONFIG_ERRORS is set. Throttling,
#: 4xx replies, connection trouble (refused, reset, timeouts) and protocol errors stay
#: queueable.
NEEDS_A_PERSON = frozenset({Outcome.AUTH_FAILED, Outcome.TLS_FAILED, Outcome.CONFIG_ERROR})

logger = logging.getLogger("django_multismtp.engine")


@dataclasses.dataclass(frozen=True)
class SettleEvery:
    """How often a worker writes the outcomes of its batch while it sends: once
    ``replies`` messages are finished, or ``seconds`` after the last write, whichever
    comes first (None: never on that account; the end of the batch always writes).

    After a crash, the messages that can go out twice are those in flight plus at most
    one unwritten chunk; each write costs the same few queries whatever its size. 50
    and 0.1 s since issue #17: with 20, a drain's database CPU was a quarter higher
    (four statements per chunk, each parsed and planned anew), for 30 messages fewer
    at risk of a second copy after a crash (the receiver can tell them by Message-ID)."""

    replies: int | None = 50
    seconds: float | None = 0.1


SETTLE_EVERY = SettleEvery()

#: Receives finished queued items and their log rows, and writes both (the worker:
#: outbox.settle).
Settle = Callable[[list[Outgoing], list[DeliveryLog]], Any]


def internal_failure(doing: str, exc: BaseException) -> Failure:
    """Our own code raised while ``doing`` something with one message: a failure of
    that message only (retryable, not the account's), the error kept for the admin."""
    return Failure(
        Outcome.TRANSIENT,
        None,
        _("Internal error while %(doing)s: %(error)s") % {"doing": doing, "error": repr(exc)},
        _("A bug or a database problem, not the server's reply; see the worker's log."),
    )


@dataclasses.dataclass(eq=False)
class _Batch:
    """One batch's bookkeeping, shared by its rounds and the replies as they arrive."""

    settle: Settle | None
    every: SettleEvery
    #: Accounts not to use again in this batch -> the failure that excluded them
    #: (None when only their own sending limit was reached).
    excluded: dict[Any, Failure | None] = dataclasses.field(default_factory=dict)
    succeeded: dict[Any, SmtpAccount] = dataclasses.field(default_factory=dict)
    log: list[DeliveryLog] = dataclasses.field(default_factory=list)
    #: Finished items not yet written, and every item handed to ``finished`` so far.
    finished: list[Outgoing] = dataclasses.field(default_factory=list)
    handed: set[int] = dataclasses.field(default_factory=set)
    written_at: float = dataclasses.field(default_factory=time.monotonic)
    #: Run once in the calling thread while the batch is on the wire (see
    #: :meth:`Engine.send_queued`); None once it ran.
    meanwhile: Callable[[], Any] | None = None
    #: Attempts of the round on the wire not replied to yet, and how few of them
    #: there may be when ``meanwhile`` runs.
    in_round: int = 0
    tail: int = 0

    def replied(self, count: int) -> None:
        """``count`` more replies of the round: run ``meanwhile`` once only its tail is
        left on the wire."""
        self.in_round -= count
        if self.meanwhile is not None and count and self.in_round <= self.tail:
            meanwhile, self.meanwhile = self.meanwhile, None
            meanwhile()

    def finish(self, items: Iterable[Outgoing]) -> None:
        if self.settle is None:
            return  # nobody writes them as they finish: keep no reference to them
        for item in items:
            if id(item) not in self.handed:
                self.handed.add(id(item))
                self.finished.append(item)

    def due(self) -> int | None:
        """How many finished items to write now (0: only log rows), or None."""
        if self.settle is None or not (self.finished or self.log):
            return None
        replies, seconds = self.every.replies, self.every.seconds
        if replies is not None and len(self.finished) >= replies:
            return max(replies, 1)
        if seconds is not None and time.monotonic() - self.written_at >= seconds:
            return len(self.finished)
        return None


class Mailer(Protocol):
    """What the engine reads from the backend that owns it, at the time it sends
    (Django lets callers change ``fail_silently`` after construction)."""

    alias: str | None
    hints: Hints
    fail_silently: bool

    @property
    def fallback(self) -> ServerConfig | None:
        """The mailer's own server, built from its current attributes (None: none)."""


class ConnectionPool:
    """Open connections per server, up to its ``max_connections``, reused until
    :meth:`close` (the backend's ``close()``).

    ``shared`` (the default): a connection to an account is opened only with one of
    the account's connection slots held (:mod:`slots`), so every process together
    stays within its ``max_connections``; the slots are given back on :meth:`close`,
    after the connections are."""

    def __init__(self, *, shared: bool = True) -> None:
        self._sessions: dict[ServerConfig, list[Session]] = {}
        #: Each account's current server settings (an edited account: the old ones close).
        self._configs: dict[Any, ServerConfig] = {}
        self.slots = slots.Holder() if shared else None

    def claim(self, account: SmtpAccount, wanted: int, *, wait: bool) -> int:
        """Hold up to ``wanted`` connection slots of ``account`` (waiting up to
        ``CONNECTION_WAIT`` for one if ``wait``); return how many are held. Slots above
        this pool's share, while another process waits, are given back here (their
        connections closed first)."""
        if self.slots is None:
            return wanted
        held = self._take(account, wanted)
        if held:
            return held
        # None free: backends parked between async calls in this process may hold them
        # (parking.py); they are closed for this send, which then claims again.
        with parking.park.make_room(account.pk) as closed:
            if closed:
                held = self._take(account, wanted)
            if not held and wait:
                held = self.slots.wait_for(account, wanted, slots.wait_length(), self._give_back)
        return held

    def _take(self, account: SmtpAccount, wanted: int) -> int:
        """One claim of ``account``'s slots, its surplus given back; how many are held."""
        assert self.slots is not None
        claim = self.slots.claim(account, wanted, clock.now())
        if claim.surplus:
            self._give_back(account.pk, claim)
        return claim.held

    def _give_back(self, account: Any, claim: slots.Claim) -> None:
        config = self._configs.get(account)
        pool = self._sessions.get(config, []) if config is not None else []
        if len(pool) > claim.held:
            self._drop(pool[claim.held :])
            del pool[claim.held :]
        assert self.slots is not None
        self.slots.give_back(account, claim.surplus)

    def renew(self, now: Any) -> None:
        """Keep the leases of the slots held (a statement once a third of the lease
        has passed, none otherwise)."""
        if self.slots is not None:
            self.slots.renew(now)

    def sessions(self, config: ServerConfig, size: int, account: Any = None) -> list[Session]:
        """Up to ``size`` sessions to ``config``; for an ``account`` (its pk) no more
        than the slots held (none when none is: the caller's attempts then wait)."""
        if account is not None:
            previous = self._configs.get(account)
            if previous is not None and previous != config:
                self._drop(self._sessions.pop(previous, []))
            self._configs[account] = config
            if self.slots is not None:
                cap = self.slots.count(account)
                pool = self._sessions.setdefault(config, [])
                if len(pool) > cap:  # a lease was lost: close what it no longer covers
                    self._drop(pool[cap:])
                    del pool[cap:]
                if cap == 0:
                    return []
                size = min(size, cap)
        pool = self._sessions.setdefault(config, [])
        while len(pool) < max(size, 1):
            pool.append(Session(config))
        return pool[: max(size, 1)]

    def _drop(self, sessions: list[Session]) -> None:
        if sessions:
            smtp_loop.run(_close_sessions(sessions))

    def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        self._configs = {}
        try:
            if sessions:
                smtp_loop.run(_close_sessions([s for pool in sessions.values() for s in pool]))
        finally:
            if self.slots is not None:  # only once the connections are closed
                self.slots.release()


class Engine:
    """Send batches for one mailer: the backend's hints, fallback server and
    ``fail_silently`` apply; its connections are reused while it is open."""

    #: Whether connections take connection slots (the test backend's engine opens none).
    shares_connections = True

    def __init__(self, owner: Mailer) -> None:
        self.owner = owner
        self.pool = ConnectionPool(shared=self.shares_connections)
        self._batch: _Batch | None = None
        #: Set by a round that moved messages off busy accounts without sending any.
        self._moved = False

    @property
    def alias(self) -> str | None:
        return self.owner.alias

    @property
    def hints(self) -> Hints:
        return self.owner.hints

    @property
    def fallback(self) -> ServerConfig | None:
        return self.owner.fallback

    @property
    def fail_silently(self) -> bool:
        return self.owner.fail_silently

    # -- one batch --------------------------------------------------------------------
    def send(self, messages: Sequence[EmailMessage]) -> int:
        """Send (or queue) one batch; return the number sent or accepted by the outbox.

        The batch is worked through in slices of ``SEND_SLICE`` messages: each slice is
        prepared, sent, logged, queued where it must wait and reported (status,
        ``post_send``) before the next one is read, and its bookkeeping (routing, log
        rows, per-message state) is dropped then. Memory therefore stays flat however
        long the batch, and the database work is the same for every slice. What a slice
        learns about the accounts (one failed, one is full) carries on to the next, as
        within one slice. Failures are raised once the whole batch is through; an error
        raised for one message (a bad hint, an invalid address), as Django's backend
        does, stops the batch there, after the slices before it went out."""
        accounts = load_accounts()
        mode = conf.outbox_mode()
        size = conf.send_slice()
        batch = _Batch(None, SETTLE_EVERY)
        sent = 0
        failed: list[Outgoing] = []
        for start in range(0, len(messages), size):
            items = self._prepare(messages[start : start + size], accounts, clock.now(), start)
            queued = self._send_slice(items, mode, batch)
            count, failures = self._report_slice(items, queued=queued)
            sent += count
            failed.extend(failures)
            del items, queued  # the slice's bookkeeping goes; the failures stay
        return self._finish(failed, sent)

    def _send_slice(self, items: list[Outgoing], mode: str, batch: _Batch) -> set[Outgoing]:
        """Send (or queue) one slice; return the items the outbox accepted."""
        now = clock.now()
        if mode == "always":
            self._refuse_unroutable(items)
            outbox.enqueue(items, mailer=self.alias, now=now, failed=False)
            return set(items)
        self._deliver(items, now, batch)
        if mode == "retry":
            waiting = [item for item in items if _may_wait(item)]
            if waiting:
                outbox.enqueue(waiting, mailer=self.alias, now=clock.now(), failed=True)
                return set(waiting)
        return set()

    def send_queued(
        self,
        rows: Sequence[Any],
        *,
        settle: Settle | None = None,
        every: SettleEvery | None = None,
        meanwhile: Callable[[], Any] | None = None,
    ) -> list[Outgoing]:
        """Send claimed outbox rows by the same rules as a direct send; return the
        items with their outcomes.

        With ``settle``, finished items are handed to it as their replies arrive (every
        ``every``, default :data:`SETTLE_EVERY`), each chunk in one transaction with its
        delivery log rows, then reported (``post_send``). Without it the caller settles
        and reports the returned items itself.

        Whatever our own code raises for the batch as a whole (loading the accounts,
        say), every message not finished yet becomes a failed attempt with the error;
        only ``settle`` itself failing (the database gone) is raised.

        ``meanwhile`` runs once in this thread when only the tail of a round is left on
        the wire (the worker claims its next batch there, so the connections do not wait
        for it, and the rows it claims are held unsent as briefly as possible)."""
        items: list[Outgoing] = []
        batch = _Batch(settle, every or SETTLE_EVERY, meanwhile=meanwhile)
        try:
            now = clock.now()
            accounts = load_accounts()
            shared: dict[Any, Any] = {}
            for index, row in enumerate(rows):
                items.append(self._queued_item(index, row, accounts, now, shared))
            self._deliver([item for item in items if not item.done], now, batch)
        except Exception as exc:
            logger.exception("Sending a batch of %d queued messages failed", len(rows))
            built = len(items)
            items.extend(_stub(index, row) for index, row in enumerate(rows) if index >= built)
            for item in items:
                if not (item.done or _accepted(item)):
                    self._fault(item, _("sending the batch"), exc)
        batch.finish(items)
        self._write(batch)
        return items

    def _queued_item(
        self,
        index: int,
        row: Any,
        accounts: list[SmtpAccount],
        now: Any,
        shared: dict[Any, Any] | None = None,
    ) -> Outgoing:
        """An outbox row made ready to send; a row our code cannot read or route is a
        fault of that row alone."""
        try:
            item = Outgoing.from_row(index, row, shared)
        except Exception as exc:
            item = _stub(index, row)
            self._fault(item, _("reading it from the outbox"), exc)
            return item
        try:
            item.choice = self._choose(item, accounts, now)
        except UnknownAccount as exc:
            item.done = True
            item.failure = Failure(
                Outcome.CONFIG_ERROR,
                None,
                str(exc),
                _("Recreate the account, or cancel the message in the outbox."),
            )
        except Exception as exc:
            self._fault(item, _("choosing its account"), exc)
        return item

    def _prepare(
        self,
        messages: Sequence[EmailMessage],
        accounts: list[SmtpAccount],
        now: Any,
        offset: int = 0,
    ) -> list[Outgoing]:
        base_hints = context_hints().over(self.hints)
        users: dict[Any, int | None] = {}
        # Sizes matter only to accounts with a maximum: otherwise render nothing up front.
        measure = any(account.max_message_size for account in accounts)
        items = []
        for index, message in enumerate(messages):
            if not message.recipients():
                continue
            hints = message_hints(message).over(base_hints)
            user_id = self._user_id(hints.user, users)
            item = Outgoing.prepare(offset + index, message, hints, user_id, measure=measure)
            item.choice = self._choose(item, accounts, now)
            items.append(item)
        return items

    def _choose(self, item: Outgoing, accounts: list[SmtpAccount], now: Any) -> selection.Choice:
        return selection.choose(
            accounts,
            hints=item.hints,
            user_id=item.user_id,
            from_address=item.from_address,
            uses_default_from=item.uses_default_from,
            message_size=item.size,
            now=now,
            default_purpose=conf.default_purpose(),
        )

    def _deliver(self, items: list[Outgoing], now: Any, batch: _Batch | None = None) -> None:
        """Send ``items`` in rounds (failover included); record state and the log.

        With a ``batch`` that settles (the worker's), finished items are written while
        the rounds go on, and the rest once they are over (by the caller)."""
        batch = batch or _Batch(None, SETTLE_EVERY)
        pending = list(items)
        self._batch = batch
        try:
            while pending:
                self._moved = False
                attempts = self._plan_round(pending, batch.excluded, now, batch.log)
                batch.finish(item for item in pending if item.done)
                if attempts:
                    self.transmit(attempts)
                    # Replies not recorded as they came (the test engine's), and the
                    # attempts a failed account never got to.
                    self._on_replies(attempts)
                elif not self._moved:  # nothing sent and nobody moved on: all done
                    break
                pending = [item for item in pending if not item.done]
        finally:
            self._batch = None
        now = clock.now()
        queued = any(item.row is not None for item in items)
        try:
            state.record_successes(list(batch.succeeded.values()), now)
        except Exception:
            if not queued:
                raise
            logger.exception("Recording the accounts' successes failed")
        if batch.settle is None:
            log, batch.log = batch.log, []
            state.write_log_guarded(log) if queued else state.write_log(log)

    def _on_replies(self, attempts: list[Attempt]) -> None:
        """Record replied attempts (in the calling thread); write what is due."""
        batch = self._batch
        if batch is None:
            return
        now = clock.now() if attempts else None
        if now is not None:
            self.pool.renew(now)  # a long round keeps its connection slots
        fresh = 0
        for attempt in attempts:
            if attempt.recorded:
                continue
            attempt.recorded = True
            fresh += 1
            self._record(attempt, batch, now)
            if attempt.item.done:
                batch.finish([attempt.item])
        while (count := batch.due()) is not None:
            self._write(batch, count)
        batch.replied(fresh)

    def _record(self, attempt: Attempt, batch: _Batch, now: Any) -> None:
        """Take one attempt's outcome into account; a fault is the message's alone."""
        item = attempt.item
        try:
            if attempt.fault is not None:
                if item.row is None:
                    raise attempt.fault  # a direct send raises, as Django's backends do
                if attempt.delivery is None:  # rendering failed: it never went out
                    self._release(attempt, now)
                    self._fault(item, _("rendering it"), attempt.fault)
                else:  # sending or classifying the reply failed: it reached the server
                    item.attempts += 1
                    batch.log.append(self._log_entry(attempt, attempt.delivery, now))
                    self._fault(item, _("sending it"), attempt.fault)
                return
            self._settle(attempt, batch.excluded, batch.succeeded, batch.log, now)
        except Exception as exc:
            if item.row is None:
                raise
            if attempt.delivery is not None and attempt.delivery.failure is None:
                # The server took it: it is sent, whatever failed in recording that.
                logger.exception("Recording the delivery of %s failed", item.message_id)
                item.done, item.failure = True, None
                if attempt.account is not None:
                    item.sent_by = attempt.account
                else:
                    item.sent_by_fallback = True
                return
            self._fault(item, _("recording its outcome"), exc)

    def _fault(self, item: Outgoing, doing: str, exc: BaseException) -> None:
        logger.error("Internal error while %s (%s)", doing, item.message_id, exc_info=exc)
        item.failure = internal_failure(doing, exc)
        item.faulted = item.done = True

    def _release(self, attempt: Attempt, now: Any) -> None:
        """Give back the limits reserved for an attempt that never reached the server."""
        if attempt.account is not None:
            limits.release(attempt.account, 1, attempt.reserved_at or now)
            attempt.item.tried.discard(attempt.account.pk)

    def _write(self, batch: _Batch, count: int | None = None) -> None:
        """Write ``count`` finished items (default: all) with ``settle``, and the log so
        far, in one transaction, then report them: a crash keeps both or neither."""
        count = len(batch.finished) if count is None else count
        items, batch.finished = batch.finished[:count], batch.finished[count:]
        log, batch.log = batch.log, []
        batch.written_at = time.monotonic()
        if not (items or log):
            return
        if batch.settle is None:  # the caller settles; the log of a failed batch stays
            state.write_log_guarded(log)
            return
        _settle_chunk(batch.settle, items, log)
        for item in items:  # post_send, now that each row's fate is stored
            try:
                queued = item.row is not None and item.row.status == OutboxMessage.Status.QUEUED
                self.report(item, queued=queued)
            except Exception:
                logger.exception("Reporting %s (post_send) failed", item.message_id)

    def report(self, item: Outgoing, *, queued: bool) -> SendStatus:
        """Set ``multismtp_status`` on the message and send ``post_send``. For mail from
        the outbox the worker calls this once the row is settled, and the message is
        the row; ``queued`` then means "will be tried again"."""
        account = item.sent_by
        if item.cancelled:
            outcome = Outcome.CANCELLED.value
        elif item.sent_by is not None or item.sent_by_fallback:
            outcome = Outcome.SENT.value
        elif queued:
            outcome = QUEUED
        else:
            outcome = item.failure.outcome.value if item.failure else Outcome.TRANSIENT.value
        status = SendStatus(
            message_id=item.message_id,
            outcome=outcome,
            account=account.name
            if account
            else (FALLBACK if item.sent_by_fallback else item.failed_on),
            account_id=account.pk if account else None,
            attempts=item.attempts,
            error=item.failure.summary() if item.failure and outcome != "sent" else "",
            refused=item.refused,
            queued=queued,
        )
        item.message.multismtp_status = status
        signals.post_send.send_robust(
            sender=type(self.owner),
            message=item.message,
            account=account,
            status=status,
            failure=item.failure if outcome != "sent" else None,
        )
        return status

    def _refuse_unroutable(self, items: list[Outgoing]) -> None:
        """No account matches and there is no fallback: a configuration error, raised
        now rather than discovered by a worker later."""
        if self.fallback is not None:
            return
        for item in items:
            if item.choice is not None and item.choice.use_fallback:
                self._give_up(item, no_fallback=True)
                assert item.failure is not None
                raise MultiSMTPConfigurationError(
                    f"{item.failure.text} {item.failure.hint}", alias=self.alias
                )

    def _user_id(self, user: Any, cache: dict[Any, int | None]) -> int | None:
        if user is None or getattr(user, "is_authenticated", True) is False:
            return None  # an anonymous visitor (e.g. a password reset) is no user hint
        if getattr(user, "pk", None) is not None:
            return int(user.pk)
        if isinstance(user, int) and not isinstance(user, bool):
            return user
        # Text is a user name and nothing else: user names may be all digits (phone
        # numbers, staff numbers), so "12" must never fall back to the user whose
        # primary key is 12 (whose personal account that would unlock).
        key = str(user)
        if key not in cache:
            model = get_user_model()
            found = model._default_manager.filter(**{model.USERNAME_FIELD: key}).first()
            cache[key] = found.pk if found is not None else None
            if found is None:
                raise MultiSMTPConfigurationError(
                    f"The user hint {key!r} names no user.", alias=self.alias
                )
        return cache[key]

    def _plan_round(
        self,
        pending: list[Outgoing],
        excluded: dict[Any, Failure | None],
        now: Any,
        log: list[DeliveryLog],
    ) -> list[Attempt]:
        """Pick each pending message's next account and reserve its limits.

        A message its account's own limit turns away gets a ``deferred`` log row (with
        when the account is free again), like every other outcome."""
        wanted: dict[Any, list[Outgoing]] = defaultdict(list)
        by_pk: dict[Any, SmtpAccount] = {}
        attempts: list[Attempt] = []
        # Messages whose next account is one of several equally eligible ones, by
        # (policy, the members still available to them): shared out below in one pass.
        pooled: dict[tuple[str, tuple[Any, ...]], list[Outgoing]] = defaultdict(list)
        for item in pending:
            assert item.choice is not None
            if item.choice.use_fallback:
                if self.fallback is None or FALLBACK in item.tried:
                    self._give_up(item, no_fallback=self.fallback is None)
                    continue
                item.tried.add(FALLBACK)
                attempts.extend(self._attempt(item, None, now))
                continue
            available = [
                (index, a)
                for index, a in enumerate(item.choice.candidates)
                if a.pk not in item.tried and a.pk not in excluded
            ]
            if not available:
                self._give_up(item, excluded, log=log, now=now)
                continue
            members = [a for index, a in available if index < item.choice.pool]
            policy = _pool_policy(item, members[0]) if len(members) > 1 else pools.FILL_FIRST
            if policy != pools.FILL_FIRST:
                pooled[(policy, tuple(a.pk for a in members))].append(item)
                by_pk.update((a.pk, a) for a in members)
                continue
            account = available[0][1]
            wanted[account.pk].append(item)
            by_pk[account.pk] = account
        if pooled:
            spread = {pk for (policy, pks) in pooled if policy == pools.SPREAD for pk in pks}
            left = limits.remaining([by_pk[pk] for pk in spread], now) if spread else {}
            for (policy, pks), group in pooled.items():
                shares = pools.assign(policy, pks, len(group), left)
                for item, pk in zip(group, shares, strict=True):
                    wanted[pk].append(item)
                    room = left.get(pk)
                    if room:  # the next pool sharing this account sees less room
                        left[pk] = room - 1
        for pk, group in wanted.items():
            account = by_pk[pk]
            if not self._hold_slots(account, group, excluded, log):
                continue
            granted = limits.reserve(account, len(group), now)
            free = limits.free_at(account, now) if granted < len(group) else now
            for position, item in enumerate(group):
                item.tried.add(pk)
                if position >= granted:
                    item.wait_helps = True  # the limit's window ends
                    reason = _(
                        "account %(name)s reached its sending limit; free again at %(time)s"
                    ) % {"name": account.name, "time": free.isoformat(timespec="seconds")}
                    log.append(_deferred_row(item, account, reason, now))
                    if item.failure is None:
                        item.failure = Failure(
                            Outcome.THROTTLED,
                            None,
                            reason,
                            _("Raise the account's limits or add another account for this mail."),
                        )
                    continue
                attempts.extend(self._attempt(item, account, now, reserved=True))
            if granted < len(group):
                excluded.setdefault(pk, None)
        # Signals may cancel single messages before anything goes on the wire.
        kept = []
        for attempt in attempts:
            try:
                signals.pre_send.send(
                    sender=type(self.owner),
                    message=attempt.item.message,
                    account=attempt.account,
                    backend=self.owner,
                )
            except CancelSend:
                attempt.item.cancelled = attempt.item.done = True
                if attempt.account is not None:
                    limits.release(attempt.account, 1, attempt.reserved_at or now)
                continue
            except Exception as exc:
                if attempt.item.row is None:
                    raise  # the caller's own receiver failed in the caller's request
                # In a worker, one receiver's bug must not stop the batch (its rows would
                # wait out the lease): this message waits for a fixed receiver instead,
                # and the pass counts as an attempt, so it ends after the maximum.
                attempt.item.done = attempt.item.faulted = True
                attempt.item.failure = Failure(
                    Outcome.CONFIG_ERROR,
                    None,
                    _("A pre_send receiver raised %(error)s") % {"error": repr(exc)},
                    _("Fix the receiver; the message is tried again later."),
                )
                if attempt.account is not None:
                    limits.release(attempt.account, 1, attempt.reserved_at or now)
                continue
            kept.append(attempt)
        return kept

    def _hold_slots(
        self,
        account: SmtpAccount,
        group: list[Outgoing],
        excluded: dict[Any, Failure | None],
        log: list[DeliveryLog],
    ) -> bool:
        """Hold connection slots of ``account`` for ``group`` (up to one per message, up
        to its ``max_connections``). When other processes hold them all, a message that
        may use another account moves on to it at once; if some may use no other, the
        round waits up to ``CONNECTION_WAIT`` for a slot first. Still none: every
        message of the group is deferred on this account as busy (the log says so) and
        goes on to its next account, or, with none left, is a "busy" deferral: queued in
        "retry" mode, retried by a worker, raised (NoAccountAvailable) with the outbox
        off. Nothing is reserved or sent meanwhile, so nothing is lost."""
        pk = account.pk
        now = clock.now()
        self.pool.renew(now)
        alone = any(
            not any(
                a.pk != pk and a.pk not in item.tried and a.pk not in excluded
                for a in (item.choice.candidates if item.choice else ())
            )
            for item in group
        )
        wanted = min(account.connection_budget, len(group))
        if self.pool.claim(account, wanted, wait=alone):
            return True
        reason = _(
            "all %(count)d connections of account %(name)s are in use by other processes"
        ) % {"count": account.max_connections, "name": account.name}
        hint = _("Wait, or raise the account's max connections if its provider allows more.")
        for item in group:
            item.tried.add(pk)
            item.wait_helps = True  # the other processes close their connections
            log.append(_deferred_row(item, account, reason, now))
            if item.failure is None:
                item.failure = Failure(Outcome.THROTTLED, None, reason, hint)
        self._moved = True
        return False

    def _attempt(
        self, item: Outgoing, account: SmtpAccount | None, now: Any, *, reserved: bool = False
    ) -> list[Attempt]:
        """The attempt of ``item`` on ``account`` (none if working out its envelope
        sender raised: then, for queued mail, a fault of that message alone)."""
        try:
            sender = item.sender(account)
        except Exception as exc:
            if item.row is None:
                raise
            if account is not None and reserved:
                limits.release(account, 1, now)
            self._fault(item, _("preparing its envelope"), exc)
            return []
        return [Attempt(item, account, sender, reserved_at=now if reserved else None)]

    def transmit(self, attempts: list[Attempt]) -> None:
        """Do the SMTP work of one round (overridden by the test backend's engine)."""
        groups: dict[ServerConfig, list[Attempt]] = defaultdict(list)
        configs: dict[Any, ServerConfig] = {}  # built (and hashed) once per account
        owners: dict[ServerConfig, Any] = {}
        for attempt in attempts:
            if attempt.account is None:
                config = self.fallback
            else:
                config = configs.get(attempt.account.pk)
                if config is None:
                    config = configs[attempt.account.pk] = account_config(attempt.account)
                    owners[config] = attempt.account.pk
            assert config is not None
            groups[config].append(attempt)
        lanes: list[tuple[Session, Lane]] = []
        for config, group in groups.items():
            # Up to max_connections connections per account (and no more than the
            # connection slots held); messages are dealt to them in turn, so each
            # connection sends in the caller's order. No session (a slot lost since the
            # round was planned): the attempts stay unsent and are released.
            pool = self.pool.sessions(
                config, min(config.max_connections, len(group)), owners.get(config)
            )
            for index, session in enumerate(pool):
                lane = group[index :: len(pool)]
                if lane:
                    lanes.append((session, Lane(lane)))
        # The connections send on our loop while this thread renders their next messages
        # (see feed.py): rendering overlaps the waits for the servers.
        # Queued mail is rendered already (its bytes are in memory with the rows): hand
        # every message over at once, so the connections never wait for this thread
        # while it writes settlements. Direct sends render a few ahead, to bound memory.
        ahead = len(attempts) if all(a.item.raw is not None for a in attempts) else AHEAD
        feed = Feed(smtp_loop.loop(), [lane for _, lane in lanes], ahead=ahead)
        if self._batch is not None:
            # The worker claims its next batch once only the tail of this round is left
            # on the wire: the connections never wait for that claim, and the rows it
            # takes are held, unsent, for as short a time as possible.
            self._batch.in_round = len(attempts)
            self._batch.tail = AHEAD * len(lanes)
        feed.run(_send_groups(lanes, feed), _render, self._on_replies)

    def _settle(
        self,
        attempt: Attempt,
        excluded: dict[Any, Failure | None],
        succeeded: dict[Any, SmtpAccount],
        log: list[DeliveryLog],
        now: Any,
    ) -> None:
        item, account, delivery = attempt.item, attempt.account, attempt.delivery
        if delivery is None:  # not attempted: an earlier message failed the account
            self._release(attempt, now)
            return
        item.attempts += 1
        name = account.name if account is not None else FALLBACK
        failure = delivery.failure
        log.append(self._log_entry(attempt, delivery, now))
        if failure is not None and failure.retryable and failure.outcome not in NEEDS_A_PERSON:
            item.wait_helps = True
        if failure is None:
            item.done, item.failure = True, None
            item.refused = dict(delivery.refused)
            if account is not None:
                item.sent_by = account
                succeeded[account.pk] = account
            else:
                item.sent_by_fallback = True
            return
        item.failure = failure
        item.failed_on = name
        # At most once per account and batch: its connection stops at this failure and
        # the account is excluded from later rounds. (It may already be excluded for
        # reaching its own limits; the server's verdict must be recorded all the same.)
        if account is not None and failure.account_level:
            excluded[account.pk] = failure
            # Its last word in this batch is this failure: earlier successes must not
            # reset the throttle streak (or report the account as recovered).
            succeeded.pop(account.pk, None)
            state.record_failure(account, failure, now)
        if account is None or not failure.retryable:
            item.done = True
            return
        assert item.choice is not None
        following = next(
            (a for a in item.choice.candidates if a.pk not in item.tried and a.pk not in excluded),
            None,
        )
        state.record_failover(account, following, failure)
        if following is None:
            item.done = True

    def _log_entry(self, attempt: Attempt, delivery: Delivery, now: Any) -> DeliveryLog:
        """The log row of an attempt that went on the wire (or failed to)."""
        item, failure = attempt.item, delivery.failure
        return _log_row(
            item,
            attempt.account,
            sender=attempt.sender,
            outcome=failure.outcome.value if failure else Outcome.SENT.value,
            code=delivery.code,
            text=failure.summary() if failure else _sent_reply(item, delivery),
            duration_ms=int(delivery.duration * 1000),
            attempt=item.attempts,
            now=now,
        )

    def _give_up(
        self,
        item: Outgoing,
        excluded: dict[Any, Failure | None] | None = None,
        *,
        no_fallback: bool = False,
        log: list[DeliveryLog] | None = None,
        now: Any = None,
    ) -> None:
        item.done = True
        if item.failure is not None:
            return
        assert item.choice is not None
        named = item.choice.account
        if named is not None and not named.is_active and not item.choice.candidates:
            # Someone deactivated the very account this mail asks for: no amount of
            # waiting brings it back, and "rate limited" would send the reader astray.
            item.failed_on = named.name
            item.failure = Failure(
                Outcome.CONFIG_ERROR,
                None,
                _("The SMTP account %(name)s named by the message is inactive")
                % {"name": named.name},
                _("Activate the account, or name another one (or none) in the account hint."),
            )
            return
        # Never attempted because its candidates failed on other messages of this batch:
        # report what those servers said, not a generic "no account may send".
        for account in item.choice.candidates:
            failure = (excluded or {}).get(account.pk)
            if failure is not None:
                item.failure, item.failed_on = failure, account.name
                return
        if item.choice.use_fallback and no_fallback:
            text = _("No SMTP account matches this message and no fallback server is configured.")
            hint = _("Create an SMTP account (or a site default), or set the mailer's host.")
            # Our configuration, not a rate limit: no back-off or wait will help.
            item.failure = Failure(Outcome.CONFIG_ERROR, None, text, hint)
            return
        reasons = "; ".join(f"{a.name}: {why}" for a, why in item.choice.skipped)
        if item.choice.skipped and all(
            a.max_message_size and item.size > a.max_message_size for a, _why in item.choice.skipped
        ):
            # Too big for every account it may use: waiting will not make it smaller.
            text = _("No SMTP account may send this message") + f" ({reasons})"
            hint = _("Send a smaller message, or raise an account's maximum message size.")
            item.failure = Failure(Outcome.PERMANENT, None, text, hint)
            return
        text = _("No SMTP account may send this message now") + (f" ({reasons})" if reasons else "")
        hint = _("Wait until the rate limit ends, or activate or add another account.")
        item.failure = Failure(Outcome.THROTTLED, None, text, hint)
        paused = [(a, why) for a, why in item.choice.skipped if a.is_active]
        if paused and log is not None:
            # Rate limited (or too big for some): a deferral, visible in the log.
            account, why = paused[0]
            log.append(_deferred_row(item, account, f"{text}: {why}", now or clock.now()))

    def _report_slice(
        self, items: list[Outgoing], *, queued: set[Outgoing]
    ) -> tuple[int, list[Outgoing]]:
        """Report each message's status; return how many were sent or accepted by the
        outbox, and the failed ones (kept until the batch is through, to be raised)."""
        sent = 0
        failed: list[Outgoing] = []
        for item in items:
            status = self.report(item, queued=item in queued)
            if status.outcome in (Outcome.SENT.value, QUEUED):
                sent += 1
            elif status.outcome != Outcome.CANCELLED.value:
                failed.append(item)
        return sent, failed

    def _finish(self, failed: list[Outgoing], sent: int) -> int:
        """Raise for failures (a configuration error whatever ``fail_silently`` says);
        return the number sent or accepted by the outbox for later delivery."""
        unroutable = [item for item in failed if item.unroutable]
        if unroutable:
            # Configuration, not transport: fail_silently must not hide it.
            assert unroutable[0].failure is not None
            raise MultiSMTPConfigurationError(
                f"{unroutable[0].failure.text} {unroutable[0].failure.hint}", alias=self.alias
            )
        if failed and not self.fail_silently:
            raise _error_for(failed, sent)
        return sent


def _pool_policy(item: Outgoing, first: SmtpAccount) -> str:
    """How ``item`` is shared among its pool: its ``pool`` hint (the message's, the
    context's or the mailer's option), else the ``POOL_POLICY`` of the pool's purpose."""
    policy = item.hints.pool
    if policy is None:
        return conf.pool_policy(first.purpose)
    if policy not in conf.POOL_POLICIES:
        raise MultiSMTPConfigurationError(
            f"Unknown pool policy {policy!r} in the pool hint of {item.message_id}: use one "
            f"of {', '.join(conf.POOL_POLICIES)}."
        )
    return str(policy)


def _stub(index: int, row: Any) -> Outgoing:
    """An item for a row that could not be read: enough to settle it."""
    return Outgoing(
        index=index,
        message=row,
        hints=Hints(),
        user_id=None,
        from_address="",
        uses_default_from=False,
        envelope_recipients=[],
        message_id=row.message_id,
        base=None,
        row=row,
        attempts=row.smtp_attempts,
    )


def _accepted(item: Outgoing) -> bool:
    return item.sent_by is not None or item.sent_by_fallback


def _settle_chunk(settle: Settle, items: list[Outgoing], log: list[DeliveryLog]) -> None:
    """Write a chunk's log rows and settle its items: both or neither.

    First unguarded (:func:`outbox.unguarded`): one statement on PostgreSQL, one
    transaction elsewhere, no savepoint. If the database refuses the log rows or the
    settlement, nothing of the chunk is written (``settle`` raises with its rows as
    they were and nothing counted) and it is written again, each part guarded: the log
    rows in a savepoint (then one by one), the settlement in its own. Savepoints taken
    for every chunk just in case cost four statements per chunk, and the transaction
    around the two writes two more (issue #17)."""
    alias = router.db_for_write(OutboxMessage)
    # A log routed to another database commits on its own: it is written only once.
    if router.db_for_write(DeliveryLog) == alias:
        try:
            with outbox.unguarded():
                settle(items, log)
            return
        except Exception:
            logger.warning(
                "Writing %d outcomes and %d log rows at once failed; writing them again "
                "one part at a time",
                len(items),
                len(log),
                exc_info=True,
            )
    with transaction.atomic(using=alias):
        settle(items, log)


def _sent_reply(item: Outgoing, delivery: Delivery) -> str:
    """The server's reply, plus the recipients it refused (the rest were accepted), and
    a note when an earlier worker may have sent this message already."""
    text = delivery.reply
    if delivery.refused:
        refused = "; ".join(f"{address}: {reply}" for address, reply in delivery.refused.items())
        text = f"{text} (refused {len(delivery.refused)}: {refused})"
    if item.row is not None and item.row.possible_duplicate:
        text = _(
            "%(reply)s [possible duplicate: a worker that claimed it earlier stopped "
            "without reporting back]"
        ) % {"reply": text}
    return text


def _may_wait(item: Outgoing) -> bool:
    """A failure waiting can fix, for the outbox to retry later: not sent, not
    cancelled, not refused, and not only failures a person must fix (a wrong login, a
    TLS failure, a configuration error) unless OUTBOX_QUEUE_CONFIG_ERRORS says so."""
    if item.cancelled or item.sent_by is not None or item.sent_by_fallback:
        return False
    if item.unroutable:
        return False  # a configuration error, raised by _finish
    if item.attempts and int(conf.get_setting("OUTBOX_MAX_ATTEMPTS")) <= 1:
        return False  # this attempt was the only one allowed
    failure = item.failure
    if failure is None:
        return True
    if not failure.retryable:
        return False
    if failure.outcome not in NEEDS_A_PERSON or item.wait_helps:
        return True
    assert item.choice is not None
    named = item.choice.account
    if named is not None and not named.is_active and item.attempts == 0:
        return False  # an inactive account asked for by name: never queued
    return bool(conf.get_setting("OUTBOX_QUEUE_CONFIG_ERRORS"))


def _deferred_row(item: Outgoing, account: SmtpAccount, reason: str, now: Any) -> DeliveryLog:
    """The log row of a message passed over by ``account`` (limit or pause): nothing
    went on the wire, but a person asking "why is it late" finds the answer here."""
    return _log_row(
        item,
        account,
        sender=item.from_address,
        outcome=DEFERRED,
        text=reason,
        attempt=item.attempts + 1,
        now=now,
    )


def _log_row(
    item: Outgoing,
    account: SmtpAccount | None,
    *,
    sender: str,
    outcome: str,
    text: str,
    attempt: int,
    now: Any,
    code: int | None = None,
    duration_ms: int = 0,
) -> DeliveryLog:
    """One delivery log row. Every outcome (sent, failed, deferred) is built here, so a
    column added to the log is filled for all of them, cut to the columns' lengths.

    Built from its values in the order of the columns: ``Model.__init__`` with keyword
    arguments was two thirds of the cost of a log row (every worker message has one),
    with positional ones a third of that, and :func:`precompiled.builder` skips it
    where it would only store them. A column added to the model and not filled
    here is a ``KeyError`` on the first message any test sends, not a silent default.
    The row is only ever written (:func:`state.write_log`): its ``account`` is set by
    key, so reading it would query the database."""
    values = {
        "id": None,
        "account_id": account.pk if account is not None else None,
        "account_name": account.name if account is not None else FALLBACK,
        "message_id": item.message_id[:255],
        "from_email": sender[:254],
        "recipient_count": len(item.envelope_recipients),
        "recipient_domains": item.recipient_domains(),
        **state.log_details(item.message, item.envelope_recipients),
        "outcome": outcome,
        "reply_code": code,
        "reply_text": (text + _named_skipped(item, account))[:2000],
        "duration_ms": duration_ms,
        "attempt": attempt,
        "created_at": now,
    }
    return _new_log_row([values[name] for name in _LOG_COLUMNS])


#: The delivery log's columns in the order ``DeliveryLog(*values)`` takes them.
_LOG_COLUMNS = tuple(field.attname for field in DeliveryLog._meta.concrete_fields)
#: ``DeliveryLog(*values)``, without ``Model.__init__`` where it would only store them.
_new_log_row = precompiled.builder(DeliveryLog, None)


def _named_skipped(item: Outgoing, account: SmtpAccount | None) -> str:
    """A note for the log when the message named an account and went to another one:
    the failover rule of :mod:`selection` (accounts allowed to send the same From)."""
    choice = item.choice
    named = choice.account if choice is not None else None
    if named is None or account is None or account.pk == named.pk:
        return ""
    why = next((why for a, why in choice.skipped if a.pk == named.pk), None) if choice else None
    if why is None:
        return ""
    return " " + _(
        "[the account %(name)s named by the message was skipped (%(why)s); %(used)s is a "
        "failover account for the same sender]"
    ) % {"name": named.name, "why": why, "used": account.name}


def _error_for(failed: list[Outgoing], sent: int) -> MultiSMTPError:
    first = failed[0]
    failure = first.failure
    assert failure is not None
    never_tried = first.attempts == 0
    no_account = failure.outcome in (Outcome.THROTTLED, Outcome.PERMANENT)
    cls = NoAccountAvailable if never_tried and no_account else SendFailed
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    account = first.failed_on
    text = f"{first.message_id}: {failure.summary().rstrip('.')}{more}. {failure.hint}".strip()
    # Also an instance of what Django's backend raises for the first failure
    # (SMTPAuthenticationError, SMTPRecipientsRefused, ConnectionRefusedError...).
    return send_error(
        cls,
        text,
        failure=failure,
        sender=first.from_address,
        recipients=first.envelope_recipients,
        account=account,
        failures=[(item.message_id, item.failure) for item in failed if item.failure],
        sent_count=sent,
    )


def load_accounts() -> list[SmtpAccount]:
    """Every account, with its OAuth connection and the users it is the default for:
    two reads (three with OAuth accounts), compiled once per database connection
    (:mod:`precompiled`: through the ORM this read cost more CPU than the rest of a
    one-message send).

    Each account's ``oauth`` is filled in as ``select_related`` would (None: no row),
    so neither selection nor the token provider queries per account."""
    accounts = precompiled.every_row(SmtpAccount)
    default_for: dict[int, set[int]] = defaultdict(set)
    for account_id, user_id in precompiled.every_value(
        SmtpAccount.default_for.through, "smtpaccount_id", "user_id"
    ):
        default_for[account_id].add(user_id)
    # Without an OAuth account nothing on the way reads ``oauth`` (it stays lazy).
    bearer = any(account.auth_method in BEARER_METHODS for account in accounts)
    connected = (
        {row.account_id: row for row in precompiled.every_row(OAuthConnection)} if bearer else {}
    )
    for account in accounts:
        account.default_for_ids = default_for.get(account.pk, set())  # type: ignore[attr-defined]
        if bearer:
            oauth = connected.get(account.pk)
            account._state.fields_cache["oauth"] = oauth
            if oauth is not None:
                oauth._state.fields_cache["account"] = account
    return accounts


def account_config(account: SmtpAccount) -> ServerConfig:
    config = account.server_config()
    if config.auth_method in BEARER_METHODS:
        config = dataclasses.replace(config, token_provider=oauth_tokens.token_provider(account))
    if not config.ehlo_hostname:
        config = dataclasses.replace(config, ehlo_hostname=DNS_NAME.get_fqdn())
    return config


def _render(attempt: Attempt) -> bytes:
    """The attempt's bytes. For queued mail a failure is that message's alone: it is
    marked (the lane skips it) rather than raised (which would stop every lane)."""
    try:
        return attempt.item.render(attempt.account)
    except Exception as exc:
        if attempt.item.row is None:
            raise
        attempt.fault = exc
        return b""


async def _send_groups(groups: list[tuple[Session, Lane]], feed: Feed) -> None:
    await asyncio.gather(*(_send_group(session, lane, feed) for session, lane in groups))


async def _send_group(session: Session, lane: Lane, feed: Feed) -> None:
    """Send in order over one connection; stop at the first account-level failure."""
    attempts = lane.attempts
    for index, attempt in enumerate(attempts):
        data = await feed.take(lane)
        if data is None:  # rendering a later message failed: the caller gets the error
            return
        if attempt.fault is not None:  # rendering this one failed: the others go on
            feed.sent(lane, attempt)
            continue
        after = attempts[index + 1] if index + 1 < len(attempts) else None
        try:
            delivery: Delivery = await session.send(
                attempt.sender,
                attempt.item.envelope_recipients,
                data,
                following=(after.sender, after.item.envelope_recipients) if after else None,
            )
        except Exception as exc:  # ours: a server's doing is classified, never raised
            attempt.fault = exc
            delivery = Delivery(internal_failure(_("sending it"), exc))
            # Where the conversation stands is unknown: start the next one afresh.
            await _close_sessions([session])
        del data  # memory holds the messages in flight, not the whole batch
        attempt.delivery = delivery
        feed.sent(lane, attempt)
        if delivery.failure is not None and delivery.failure.account_level:
            feed.stop(lane)
            return


async def _close_sessions(sessions: list[Session]) -> None:
    await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
