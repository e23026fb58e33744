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
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from django.contrib.auth import get_user_model
from django.core.mail.utils import DNS_NAME
from django.utils.translation import gettext as _

from . import clock, conf, limits, outbox, selection, signals, state
from .eventloop import smtp_loop
from .exceptions import (
    CancelSend,
    MultiSMTPConfigurationError,
    MultiSMTPError,
    NoAccountAvailable,
    SendFailed,
    UnknownAccount,
)
from .feed import Feed, Lane
from .hints import Hints, context_hints, message_hints
from .message import SendStatus
from .models import DeliveryLog, SmtpAccount
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


class Mailer(Protocol):
    """What the engine reads from the backend that owns it, at the time it sends
    (Django lets callers change ``fail_silently`` after construction)."""

    alias: str | None
    hints: Hints
    fallback: ServerConfig | None
    fail_silently: bool


class ConnectionPool:
    """Open connections per server, up to its ``max_connections``, reused until
    :meth:`close` (the backend's ``close()``)."""

    def __init__(self) -> None:
        self._sessions: dict[ServerConfig, list[Session]] = {}

    def sessions(self, config: ServerConfig, size: int) -> list[Session]:
        pool = self._sessions.setdefault(config, [])
        while len(pool) < max(size, 1):
            pool.append(Session(config))
        return pool[: max(size, 1)]

    def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        if sessions:
            smtp_loop.run(_close_sessions([s for pool in sessions.values() for s in pool]))


class Engine:
    """Send batches for one mailer: the backend's hints, fallback server and
    ``fail_silently`` apply; its connections are reused while it is open."""

    def __init__(self, owner: Mailer) -> None:
        self.owner = owner
        self.pool = ConnectionPool()

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
        """Send (or queue) one batch; return the number sent or accepted by the outbox."""
        now = clock.now()
        accounts = load_accounts()
        items = self._prepare(messages, accounts, now)
        mode = conf.outbox_mode()
        if mode == "always":
            self._refuse_unroutable(items)
            outbox.enqueue(items, mailer=self.alias, now=now, failed=False)
            return self._finish(items, queued=set(items))
        self._deliver(items, now)
        queued: set[Outgoing] = set()
        if mode == "retry":
            waiting = [item for item in items if _may_wait(item)]
            if waiting:
                outbox.enqueue(waiting, mailer=self.alias, now=clock.now(), failed=True)
                queued = set(waiting)
        return self._finish(items, queued=queued)

    def send_queued(self, rows: Sequence[Any]) -> list[Outgoing]:
        """Send claimed outbox rows by the same rules as a direct send; return the
        items with their outcomes for :func:`outbox.settle` and :meth:`report`
        (nothing is raised)."""
        now = clock.now()
        accounts = load_accounts()
        items = []
        for index, row in enumerate(rows):
            item = Outgoing.from_row(index, row)
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
            items.append(item)
        self._deliver([item for item in items if not item.done], now)
        return items

    def _prepare(
        self, messages: Sequence[EmailMessage], accounts: list[SmtpAccount], now: Any
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
            item = Outgoing.prepare(index, message, hints, user_id, measure=measure)
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

    def _deliver(self, items: list[Outgoing], now: Any) -> None:
        """Send ``items`` in rounds (failover included); record state and the log."""
        log: list[DeliveryLog] = []
        # Accounts not to use again in this batch -> the failure that excluded them
        # (None when only their own sending limit was reached).
        excluded: dict[Any, Failure | None] = {}
        succeeded: dict[Any, SmtpAccount] = {}
        pending = list(items)
        while pending:
            attempts = self._plan_round(pending, excluded, now)
            if not attempts:
                break
            self.transmit(attempts)
            now = clock.now()
            for attempt in attempts:
                self._settle(attempt, excluded, succeeded, log, now)
            pending = [item for item in pending if not item.done]
        state.record_successes(list(succeeded.values()), now)
        state.write_log(log)

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
        self, pending: list[Outgoing], excluded: dict[Any, Failure | None], now: Any
    ) -> list[Attempt]:
        """Pick each pending message's next account and reserve its limits."""
        wanted: dict[Any, list[Outgoing]] = defaultdict(list)
        by_pk: dict[Any, SmtpAccount] = {}
        attempts: list[Attempt] = []
        for item in pending:
            assert item.choice is not None
            if item.choice.use_fallback:
                if self.fallback is None or FALLBACK in item.tried:
                    self._give_up(item, no_fallback=self.fallback is None)
                    continue
                item.tried.add(FALLBACK)
                attempts.append(Attempt(item, None, item.sender(None)))
                continue
            account = next(
                (
                    a
                    for a in item.choice.candidates
                    if a.pk not in item.tried and a.pk not in excluded
                ),
                None,
            )
            if account is None:
                self._give_up(item, excluded)
                continue
            wanted[account.pk].append(item)
            by_pk[account.pk] = account
        for pk, group in wanted.items():
            account = by_pk[pk]
            granted = limits.reserve(account, len(group), now)
            for position, item in enumerate(group):
                item.tried.add(pk)
                if position >= granted:
                    if item.failure is None:
                        item.failure = Failure(
                            Outcome.THROTTLED,
                            None,
                            _("account %(name)s reached its sending limit")
                            % {"name": account.name},
                            _("Raise the account's limits or add another account for this mail."),
                        )
                    continue
                attempts.append(Attempt(item, account, item.sender(account), reserved_at=now))
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
                # wait out the lease): this message waits for a fixed receiver instead.
                attempt.item.done = True
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

    def transmit(self, attempts: list[Attempt]) -> None:
        """Do the SMTP work of one round (overridden by the test backend's engine)."""
        groups: dict[ServerConfig, list[Attempt]] = defaultdict(list)
        configs: dict[Any, ServerConfig] = {}  # built (and hashed) once per account
        for attempt in attempts:
            if attempt.account is None:
                config = self.fallback
            else:
                config = configs.get(attempt.account.pk)
                if config is None:
                    config = configs[attempt.account.pk] = account_config(attempt.account)
            assert config is not None
            groups[config].append(attempt)
        lanes: list[tuple[Session, Lane]] = []
        for config, group in groups.items():
            # Up to max_connections connections per account; messages are dealt to them
            # in turn, so each connection sends in the caller's order.
            pool = self.pool.sessions(config, min(config.max_connections, len(group)))
            for index, session in enumerate(pool):
                lane = group[index :: len(pool)]
                if lane:
                    lanes.append((session, Lane(lane)))
        # The connections send on our loop while this thread renders their next messages
        # (see feed.py): rendering overlaps the waits for the servers.
        feed = Feed(smtp_loop.loop(), [lane for _, lane in lanes])
        feed.run(_send_groups(lanes, feed), _render)

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
            if account is not None:
                limits.release(account, 1, attempt.reserved_at or now)
                item.tried.discard(account.pk)
            return
        item.attempts += 1
        name = account.name if account is not None else FALLBACK
        failure = delivery.failure
        log.append(
            DeliveryLog(
                account=account,
                account_name=name,
                message_id=item.message_id[:255],
                from_email=attempt.sender[:254],
                recipient_count=len(item.envelope_recipients),
                recipient_domains=item.recipient_domains(),
                outcome=failure.outcome.value if failure else Outcome.SENT.value,
                reply_code=delivery.code,
                reply_text=(failure.summary() if failure else _sent_reply(item, delivery))[:2000],
                duration_ms=int(delivery.duration * 1000),
                attempt=item.attempts,
                created_at=now,
            )
        )
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

    def _give_up(
        self,
        item: Outgoing,
        excluded: dict[Any, Failure | None] | None = None,
        *,
        no_fallback: bool = False,
    ) -> None:
        item.done = True
        if item.failure is not None:
            return
        assert item.choice is not None
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

    def _finish(self, items: list[Outgoing], *, queued: set[Outgoing]) -> int:
        """Report each message's status; raise for failures; return the number sent
        or accepted by the outbox for later delivery."""
        sent = 0
        failed: list[Outgoing] = []
        for item in items:
            status = self.report(item, queued=item in queued)
            if status.outcome in (Outcome.SENT.value, QUEUED):
                sent += 1
            elif status.outcome != Outcome.CANCELLED.value:
                failed.append(item)
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
    """A failure the outbox can retry later: not sent, not cancelled, not refused."""
    if item.cancelled or item.sent_by is not None or item.sent_by_fallback:
        return False
    if item.unroutable:
        return False  # a configuration error, raised by _finish
    if item.attempts and int(conf.get_setting("OUTBOX_MAX_ATTEMPTS")) <= 1:
        return False  # this attempt was the only one allowed
    return item.failure is None or item.failure.retryable


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
    return cls(
        text,
        failure=failure,
        account=account,
        failures=[(item.message_id, item.failure) for item in failed if item.failure],
        sent_count=sent,
    )


def load_accounts() -> list[SmtpAccount]:
    """Every account, with the users each is the default for, in two queries."""
    accounts = list(SmtpAccount.objects.select_related("oauth"))
    through = SmtpAccount.default_for.through
    default_for: dict[int, set[int]] = defaultdict(set)
    for account_id, user_id in through.objects.values_list("smtpaccount_id", "user_id"):
        default_for[account_id].add(user_id)
    for account in accounts:
        account.default_for_ids = default_for.get(account.pk, set())  # type: ignore[attr-defined]
    return accounts


def account_config(account: SmtpAccount) -> ServerConfig:
    config = account.server_config()
    if config.auth_method in BEARER_METHODS:
        config = dataclasses.replace(config, token_provider=oauth_tokens.token_provider(account))
    if not config.ehlo_hostname:
        config = dataclasses.replace(config, ehlo_hostname=DNS_NAME.get_fqdn())
    return config


def _render(attempt: Attempt) -> bytes:
    return attempt.item.render(attempt.account)


async def _send_groups(groups: list[tuple[Session, Lane]], feed: Feed) -> None:
    await asyncio.gather(*(_send_group(session, lane, feed) for session, lane in groups))


async def _send_group(session: Session, lane: Lane, feed: Feed) -> None:
    """Send in order over one connection; stop at the first account-level failure."""
    attempts = lane.attempts
    for index, attempt in enumerate(attempts):
        data = await feed.take(lane)
        if data is None:  # rendering a later message failed: the caller gets the error
            return
        after = attempts[index + 1] if index + 1 < len(attempts) else None
        delivery: Delivery = await session.send(
            attempt.sender,
            attempt.item.envelope_recipients,
            data,
            following=(after.sender, after.item.envelope_recipients) if after else None,
        )
        del data  # memory holds the messages in flight, not the whole batch
        attempt.delivery = delivery
        feed.sent(lane)
        if delivery.failure is not None and delivery.failure.account_level:
            feed.stop(lane)
            return


async def _close_sessions(sessions: list[Session]) -> None:
    await asyncio.gather(*(session.close() for session in sessions), return_exceptions=True)
