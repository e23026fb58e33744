"""Connection slots: ``max_connections`` held across processes and machines.

Providers count the connections of a login, not of a process: four workers that each
open ``max_connections`` connections get ``421 too many connections``. So a connection
to an account is opened only by a process that holds one of the account's slots (rows
``0 .. max_connections - 1`` of :class:`~django_multismtp.models.ConnectionSlot`).

A slot is taken with one conditional ``UPDATE ... WHERE holder = '' OR expires_at <
now``: the database lets one writer change a row at a time and the loser's ``WHERE``
no longer matches (PostgreSQL re-checks it on the row it waited for; SQLite writes one
transaction at a time), so two processes never both hold one slot. The lease lasts
``CONNECTION_LEASE`` and is renewed while the connection is open (each round of a
batch, and as replies arrive once a third of the lease has passed), given back on
close, and lost when its process dies: then it expires and anyone may take it. Time is
:func:`clock.now`, so tests move it instead of waiting.

Work per claim is a fixed number of statements per account (read the slots, take the
free ones), whatever the number of messages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import logging
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.db.models import Q

from . import clock, conf
from .models import ConnectionSlot

if TYPE_CHECKING:
    from .models import SmtpAccount

logger = logging.getLogger("django_multismtp.slots")

#: Pause between two looks for a free slot while waiting (seconds).
POLL = 0.05


def lease_length() -> dt.timedelta:
    return conf.get_timedelta("CONNECTION_LEASE")


def wait_length() -> float:
    return max(conf.get_timedelta("CONNECTION_WAIT").total_seconds(), 0.0)


class Holder:
    """The slots one connection pool holds, by account; one name per pool (several
    backends in a process each hold their own)."""

    def __init__(self) -> None:
        self.name = f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
        self.held: dict[Any, int] = {}
        self.renewed_at: dt.datetime | None = None

    def count(self, account_pk: Any) -> int:
        return self.held.get(account_pk, 0)

    def claim(self, account: SmtpAccount, wanted: int, now: dt.datetime) -> int:
        """Hold up to ``wanted`` slots of ``account`` (those held already count); return
        how many are held now (0: every slot is someone else's)."""
        pk = account.pk
        held = self.held.get(pk, 0)
        size = max(int(account.max_connections or 1), 1)
        wanted = min(wanted, size)
        if held >= wanted:
            return held
        expires = now + lease_length()
        rows = list(
            ConnectionSlot.objects.filter(account_id=pk, slot_no__lt=size).values_list(
                "slot_no", "holder", "expires_at"
            )
        )
        missing = sorted(set(range(size)) - {slot_no for slot_no, _h, _e in rows})
        if missing:  # the first claim, or max_connections was raised
            ConnectionSlot.objects.bulk_create(
                [ConnectionSlot(account_id=pk, slot_no=n) for n in missing],
                ignore_conflicts=True,
            )
        free = sorted(
            [n for n, holder, until in rows if not holder or (until is not None and until < now)]
            + missing
        )
        take = free[: wanted - held]
        if take:
            held += (
                ConnectionSlot.objects.filter(account_id=pk, slot_no__in=take)
                .filter(Q(holder="") | Q(expires_at__lt=now))
                .update(holder=self.name, expires_at=expires)
            )
            if self.renewed_at is None:
                self.renewed_at = now
        self.held[pk] = held
        return held

    def wait_for(self, account: SmtpAccount, wanted: int, seconds: float) -> int:
        """:meth:`claim`, looking again until a slot is free or ``seconds`` passed
        (another process gives its slots back when it closes its connections)."""
        deadline = time.monotonic() + seconds
        while True:
            now = clock.now()
            held = self.claim(account, wanted, now)
            if held or time.monotonic() >= deadline:
                return held
            self.renew(now)
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
        renewed = ConnectionSlot.objects.filter(holder=self.name).update(expires_at=now + lease)
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
        if not self.held:
            return
        self.held, self.renewed_at = {}, None
        try:
            _outside_event_loop(
                ConnectionSlot.objects.filter(holder=self.name).update, holder="", expires_at=None
            )
        except Exception:
            logger.exception(
                "Giving back connection slots failed; they are free once the lease ends"
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
