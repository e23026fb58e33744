"""The outbox worker: claim due rows, send them through the right mailer, settle them.

Used by ``manage.py send_queued_mail``, by the task-queue integrations in
:mod:`django_multismtp.tasks`, and by tests. Many workers may run at once, on many
machines, against one database (see :mod:`django_multismtp.outbox` for how they share).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from . import clock, compat, conf, outbox, stall
from .backends.smtp import EmailBackend
from .engine import SettleEvery
from .models import DeliveryLog, OutboxMessage
from .outgoing import Outgoing

logger = logging.getLogger("django_multismtp.worker")


def backend_for(mailer: str) -> EmailBackend:
    """The backend that queued the row, rebuilt from the settings (its fallback server
    and options apply); our default backend if that mailer is gone or not ours."""
    configured = compat.configured_backends()
    for alias in (mailer or "default", "default"):
        path, options = configured.get(alias, ("", {}))
        try:
            backend_class = import_string(path) if path else None
        except ImportError:
            backend_class = None
        if isinstance(backend_class, type) and issubclass(backend_class, EmailBackend):
            if compat.mailers_configured():
                return backend_class(alias=alias, **options)
            return backend_class(**options)
    return EmailBackend()


#: Seconds a looping worker keeps its SMTP connections open with nothing to send.
KEEP_OPEN_IDLE = 5.0


class Mailers:
    """The backends of one drain, one per mailer alias, built once and kept open across
    batches, so a looping worker reuses its SMTP connections (and what each connection
    learned: EHLO, PIPELINING, login) instead of opening new ones for every batch.

    Connections still close after an account's ``max_messages_per_connection`` (the
    session counts), when the worker has been idle for :data:`KEEP_OPEN_IDLE` seconds,
    and when the drain ends (:meth:`close`).

    ``connections``: the most connections each backend opens to any one account (see
    :class:`~django_multismtp.slots.Holder`'s ``limit``); None: up to the account's
    ``max_connections``, shared with the other processes."""

    def __init__(self, connections: int | None = None) -> None:
        self._backends: dict[str, EmailBackend] = {}
        self.connections = connections

    def get(self, mailer: str) -> EmailBackend:
        backend = self._backends.get(mailer)
        if backend is None:
            backend = self._backends[mailer] = backend_for(mailer)
            holder = backend.engine.pool.slots
            if holder is not None:  # None: a backend that opens no connection
                holder.limit = self.connections
        return backend

    def close(self) -> None:
        backends, self._backends = self._backends, {}
        for mailer, backend in backends.items():
            try:
                backend.close()
            except Exception:
                logger.exception("Closing the connections of mailer %r failed", mailer)


def send_batch(
    rows: list[OutboxMessage],
    *,
    worker: str,
    every: SettleEvery | None = None,
    mailers: Mailers | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> outbox.Settlement:
    """Send claimed rows (grouped by mailer), settling them as their replies arrive.

    Nothing our code raises leaves a row claimed: one message's failure is that
    message's (a failed attempt, see :mod:`django_multismtp.engine`), and a group that
    fails as a whole gives its unsettled rows back with the attempt counted
    (:func:`outbox.give_back`). Only a database that refuses even that is left to the
    lease.

    ``mailers``: backends kept open across batches (the caller closes them); without
    it each mailer's connections close with the batch. ``meanwhile``: run once in this
    thread while the batch is on the wire (the worker claims its next batch there)."""
    by_mailer: dict[str, list[OutboxMessage]] = defaultdict(list)
    for row in rows:
        by_mailer[row.mailer].append(row)
    result = outbox.Settlement()

    def settle(items: list[Outgoing], log: list[DeliveryLog]) -> None:
        result.add(outbox.settle(items, worker=worker, now=clock.now(), log=log))

    for mailer, group in by_mailer.items():
        try:
            if mailers is not None:
                backend = mailers.get(mailer)
                backend.send_queued(
                    group, settle=settle, every=every, meanwhile=meanwhile, keep_open=True
                )
            else:
                backend_for(mailer).send_queued(group, settle=settle, every=every)
        except Exception as exc:
            logger.exception("Sending %d outbox rows of mailer %r failed", len(group), mailer)
            try:
                result.add(outbox.give_back(group, worker=worker, now=clock.now(), error=exc))
            except Exception:
                logger.exception("Giving back %d outbox rows failed", len(group))
        meanwhile = None  # once per batch (a mailer that failed early may not have run it)
    return result


#: How often (seconds, at most) a draining worker records that it is sending
#: (:func:`stall.worker_seen`): once per batch was one statement in six of a batch
#: (issue #17), and a stall is reported after minutes, not seconds.
SEEN_EVERY = 1.0


def _worker_seen(monotonic: Callable[[], float]) -> float:
    """Record that this worker is sending (queued mail is not stranded); return when.
    A failure is logged, not raised: the batch goes out all the same."""
    try:
        stall.worker_seen(clock.now())
    except Exception:
        logger.exception("Recording that a worker is sending failed")
    return monotonic()


class _Prefetch:
    """The next batch, claimed while the current one is on the wire, so the
    connections never wait for the claim between batches. Only after a full batch (a
    short one means nothing more was due), and never raising: a claim that fails here
    is simply made again by the loop."""

    def __init__(self, size: int, worker: str) -> None:
        self.size, self.worker = size, worker
        self.rows: list[OutboxMessage] | None = None

    def __call__(self) -> None:
        if self.rows is not None:
            return
        try:
            self.rows = outbox.claim(self.size, worker=self.worker, now=clock.now())
        except Exception:
            logger.exception("Claiming the next outbox batch failed; claiming it again later")

    def take(self) -> list[OutboxMessage] | None:
        rows, self.rows = self.rows, None
        return rows


def drain(
    *,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    loop: bool = False,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Any] = time.sleep,
    on_batch: Callable[[outbox.Settlement], Any] | None = None,
    every: SettleEvery | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    connections: int | None = None,
) -> outbox.Settlement:
    """Send due mail until none is due (or, with ``loop``, until ``stop()``).

    ``max_seconds`` bounds the run (checked between batches: a batch is never cut
    short). Rows are settled as their replies arrive, and an error in one batch settles
    its rows rather than leaving them claimed (see :func:`send_batch`); only a worker
    that dies leaves rows to the lease, which then hands them to the next worker marked
    as possible duplicates.

    The SMTP connections stay open from batch to batch (see :class:`Mailers`), and the
    next batch is claimed while the current one is on the wire; rows claimed that way
    and not sent because the drain stops are given back untouched.

    ``connections``: open at most this many connections to any one account (of its
    ``max_connections``, which every process shares), so that several workers each
    keep their part of a large budget busy; None: up to the whole budget.
    """
    if connections is not None and connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections!r}")
    size = batch_size or int(conf.get_setting("OUTBOX_BATCH_SIZE"))
    poll = conf.get_timedelta("OUTBOX_POLL_INTERVAL").total_seconds()
    worker = outbox.worker_id()
    total = outbox.Settlement()
    started = busy = monotonic()
    seen = -math.inf  # when this worker last said it was sending (stall.worker_seen)
    mailers = Mailers(connections)
    prefetch = _Prefetch(size, worker)
    try:
        while not stop():
            if max_seconds is not None and monotonic() - started >= max_seconds:
                break
            rows = prefetch.take()
            if rows is None:
                rows = outbox.claim(size, worker=worker, now=clock.now())
            if not rows:
                if not loop:
                    break
                if monotonic() + poll - busy >= KEEP_OPEN_IDLE:
                    mailers.close()  # idle: do not hold the servers' connections
                sleep(poll)
                continue
            if monotonic() - seen >= SEEN_EVERY:
                seen = _worker_seen(monotonic)
            result = send_batch(
                rows,
                worker=worker,
                every=every,
                mailers=mailers,
                meanwhile=prefetch if len(rows) >= size else None,
            )
            busy = monotonic()
            total.add(result)
            if on_batch is not None:
                on_batch(result)
    finally:
        leftover = prefetch.take()
        try:
            if leftover:
                outbox.release(leftover, worker=worker)
        finally:
            mailers.close()
    return total
