"""Connection slots: ``max_connections`` held across processes and machines.

Providers count the connections of a login, not of a process: four workers that each
open ``max_connections`` connections get ``421 too many connections``. So a connection
to an account is opened only by a process that holds one of the account's slots (rows
``0 .. max_connections - 1`` of :class:`~django_multismtp.models.ConnectionSlot`).

A slot is taken with one conditional ``UPDATE ... WHERE holder = '' OR expires_at <
now``: the database lets one writer change a row at a time and the loser's ``WHERE``
no longer matches (PostgreSQL re-checks it on the row it waited for; SQLite writes one
transaction at a time), so two processes never both hold one slot. The lease lasts
``CONNECTION_LEASE`` and is renewed while the connection is open (once a third of the
lease has passed, at the next round of a batch or the next reply), given back on
close, and lost when its process dies: then it expires and anyone may take it. Time is
:func:`clock.now`, so tests move it instead of waiting.

Sharing: a process that finds every slot taken marks one of the account's rows as
wanted while it waits (``CONNECTION_WAIT``), a row no other waiter marks, so the marks
count the waiters; at their next round, holders of more than their share
(``max_connections`` divided among the live holders and the waiters) close the
connections beyond it and give those slots back, and a waiter that gets its slots
clears its own mark only. So a worker that starts while another drains the outbox gets
its turn instead of waiting for the queue to empty, and three workers that start at
once get their shares in one round of the holder (when the waiters were counted as one
and the first one served cleared every mark, the third waited several rounds, up to a
second each, with its batch claimed and unsent).

Work per claim is a fixed number of statements per account (read the slots, take the
free ones), whatever the number of messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import Q

from . import clock, conf, gate, precompiled
from .models import ConnectionSlot

if TYPE_CHECKING:
    from .models import SmtpAccount

logger = logging.getLogger("django_multismtp.slots")

#: Pause between two looks for a free slot while waiting (seconds).
POLL = 0.05
#: A process waiting for a slot counts as a sharer for this long after it said so.
WANTED_FOR = dt.timedelta(seconds=30)


@dataclasses.dataclass(frozen=True)
class Claim:
    """The slots held of one account after a claim (0: all are someone else's), and
    the slot numbers to give back (``surplus``): more than this holder's share while
    another process waits. Their connections must be closed before they are given back
    (:meth:`Holder.give_back`), or the account would briefly have one too many."""

    held: int
    surplus: tuple[int, ...] = ()


def lease_length() -> dt.timedelta:
    return conf.get_timedelta("CONNECTION_LEASE")


def wait_length() -> float:
    return max(conf.get_timedelta("CONNECTION_WAIT").total_seconds(), 0.0)


class Holder:
    """The slots one connection pool holds, by account; one name per pool (several
    backends in a process each hold their own).

    ``limit``: the most slots this holder takes of any one account (None: up to its
    ``max_connections``). A worker started with ``send_queued_mail --connections N``
    sets it, so that one worker leaves the rest of a large budget to the others
    instead of spreading each batch over every connection."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        self.name = f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
        self.held: dict[Any, int] = {}
        self.renewed_at: dt.datetime | None = None
        #: Accounts this holder has marked as wanted (it waits for one of their slots),
        #: with the slot row it marked (None: every row was marked by other waiters).
        self.marked: dict[Any, int | None] = {}

    def count(self, account_pk: Any) -> int:
        return self.held.get(account_pk, 0)

    def claim(self, account: SmtpAccount, wanted: int, now: dt.datetime) -> Claim:
        """Hold up to ``wanted`` slots of ``account`` (those held already count), no more
        than a fair share while others hold or want some; see :class:`Claim`."""
        pk = account.pk
        held = self.held.get(pk, 0)
        size = account.connection_budget
        wanted = min(wanted, size, self.limit or size)
        rows = precompiled.values_where(ConnectionSlot, "slots", _slots_of, pk, size)
        mine = sorted(n for n, holder, _e, _w in rows if holder == self.name)
        held = len(mine)
        others = {
            holder
            for _n, holder, until, _w in rows
            if holder and holder != self.name and until is not None and until >= now
        }
        # Each waiter marks a row of its own: the marks count them (not ours).
        waiting = sum(
            1
            for n, _h, _e, when in rows
            if when is not None and when >= now - WANTED_FOR and n != self.marked.get(pk)
        )
        sharers = len(others) + 1 + waiting
        if self.limit and held > self.limit:  # limited after it claimed: keep the limit
            self.held[pk] = self.limit
            return Claim(self.limit, tuple(mine[self.limit :]))
        if waiting and held > max(size // sharers, 1):
            # Someone waits and we hold more than our share: give the rest back (the
            # caller closes their connections first).
            keep = max(size // sharers, 1)
            self.held[pk] = keep
            return Claim(keep, tuple(mine[keep:]))
        if held >= wanted:
            self.held[pk] = held
            return Claim(held)
        missing = sorted(set(range(size)) - {slot_no for slot_no, _h, _e, _w in rows})
        if missing:  # the first claim, or max_connections was raised
            ConnectionSlot.objects.bulk_create(
                [ConnectionSlot(account_id=pk, slot_no=n) for n in missing],
                ignore_conflicts=True,
            )
        expired = [n for n, holder, until, _w in rows if until is not None and until < now]
        free = sorted({n for n, holder, _e, _w in rows if not holder} | set(expired) | set(missing))
        share = -(-size // sharers)  # the leftover of an uneven split goes to whoever asks
        take = free[: max(min(wanted, share) - held, 0)]
        if take:
            held += precompiled.update(
                ConnectionSlot,
                {"holder": self.name, "expires_at": now + lease_length()},
                f"{{account}} = %s AND {{slot_no}} IN ({precompiled.placeholders(len(take))})"
                " AND ({holder} = '' OR {expires_at} < %s)",
                [pk, *take, now],
            )
            if self.renewed_at is None:
                self.renewed_at = now
        if held and pk in self.marked:  # our wait is over: nobody need give way for us
            self.unmark(pk)
        self.held[pk] = held
        return Claim(held)

    def unmark(self, account_pk: Any) -> None:
        """Clear this holder's own mark (other waiters' marks stay)."""
        slot_no = self.marked.pop(account_pk, None)
        if slot_no is not None:
            ConnectionSlot.objects.filter(account_id=account_pk, slot_no=slot_no).update(
                wanted_at=None
            )

    def give_back(self, account_pk: Any, slot_nos: tuple[int, ...]) -> None:
        """Free ``slot_nos`` (their connections are closed already)."""
        ConnectionSlot.objects.filter(
            account_id=account_pk, slot_no__in=slot_nos, holder=self.name
        ).update(holder="", expires_at=None)

    def want(self, account_pk: Any, now: dt.datetime) -> None:
        """Say that this holder waits for a slot of the account: holders of more than
        their share give some back at their next round. The mark is one row no other
        waiter marks (taken with a conditional ``UPDATE``, as slots are), renewed by
        calling again; with every row marked already, this waiter goes uncounted."""
        slot_no = self.marked.get(account_pk)
        if slot_no is not None:
            marked = ConnectionSlot.objects.filter(account_id=account_pk, slot_no=slot_no)
            if marked.update(wanted_at=now):
                return
        unmarked = Q(wanted_at__isnull=True) | Q(wanted_at__lt=now - WANTED_FOR)
        candidates = ConnectionSlot.objects.filter(unmarked, account_id=account_pk)
        for slot_no in candidates.order_by("slot_no").values_list("slot_no", flat=True):
            taken = ConnectionSlot.objects.filter(
                unmarked, account_id=account_pk, slot_no=slot_no
            ).update(wanted_at=now)
            if taken:
                self.marked[account_pk] = slot_no
                return
        self.marked[account_pk] = None

    def wait_for(self, account: SmtpAccount, wanted: int, seconds: float, give_back: Any) -> int:
        """:meth:`claim`, looking again until a slot is free or ``seconds`` passed
        (another process gives its slots back when it closes its connections, or when
        it holds more than its share and sees this one waiting)."""
        deadline = time.monotonic() + seconds
        marked_at = -1.0
        while True:
            now = clock.now()
            claim = self.claim(account, wanted, now)
            if claim.surplus:
                give_back(account.pk, claim)
            if claim.held or time.monotonic() >= deadline:
                if account.pk in self.marked:  # gave up: nobody need give way for us
                    self.unmark(account.pk)
                return claim.held
            if time.monotonic() - marked_at >= 1.0:
                self.want(account.pk, now)
                marked_at = time.monotonic()
            self.renew(now)
            with gate.waiting():
                time.sleep(min(POLL, max(deadline - time.monotonic(), 0.0)))

    def renew(self, now: dt.datetime, *, force: bool = False) -> set[Any]:
        """Extend the leases held (once a third of the lease has passed, or ``force``);
        return the accounts for which fewer slots are held than before (a lease that
        ran out and was taken by another process: close that many connections)."""
        if not self.held or self.renewed_at is None:
            return set()
        lease = lease_length()
        if not force and now - self.renewed_at < lease / 3:
            return set()
        self.renewed_at = now
        renewed = precompiled.update(
            ConnectionSlot, {"expires_at": now + lease}, "{holder} = %s", [self.name]
        )
        if renewed == sum(self.held.values()):
            return set()
        still: dict[Any, int] = {}
        for account_id in ConnectionSlot.objects.filter(holder=self.name).values_list(
            "account_id", flat=True
        ):
            still[account_id] = still.get(account_id, 0) + 1
        lost = {pk for pk, count in self.held.items() if still.get(pk, 0) < count}
        for pk in lost:
            logger.warning(
                "Connection slots of account %s were taken over after the lease ran out; "
                "closing the connections beyond them (CONNECTION_LEASE too short?)",
                pk,
            )
        self.held = {pk: count for pk, count in still.items() if count}
        return lost

    def release(self) -> None:
        """Give every slot back (the pool closed its connections). A failure is logged,
        not raised: the leases then run out on their own."""
        if not self.held and not self.marked:
            return
        marked, self.marked = self.marked, {}
        self.held, self.renewed_at = {}, None
        try:
            _outside_event_loop(
                precompiled.update,
                ConnectionSlot,
                {"holder": "", "expires_at": None},
                "{holder} = %s",
                [self.name],
            )
            for account_pk, slot_no in marked.items():
                if slot_no is not None:
                    _outside_event_loop(
                        ConnectionSlot.objects.filter(
                            account_id=account_pk, slot_no=slot_no
                        ).update,
                        wanted_at=None,
                    )
        except Exception:
            logger.exception(
                "Giving back connection slots failed; they are free once the lease ends"
            )


def _slots_of(account_pk: Any, size: Any) -> Any:
    """The read of :meth:`Holder.claim` (compiled once: :mod:`precompiled`)."""
    return ConnectionSlot.objects.filter(account_id=account_pk, slot_no__lt=size).values_list(
        "slot_no", "holder", "expires_at", "wanted_at"
    )


def _outside_event_loop(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` here, or in a thread when this thread runs an event loop (a
    backend closed from async code: the ORM refuses to run on the loop's thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return function(*args, **kwargs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_closing_connections, function, *args, **kwargs).result()


def _closing_connections(function: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    finally:
        connections.close_all()  # this thread's connections only
