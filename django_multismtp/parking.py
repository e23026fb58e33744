"""Open backends kept between ``asend_messages()`` calls, for the next call to reuse.

An async view builds a backend per request, and each call used to open its connections
(TCP, EHLO, STARTTLS, AUTH: several round trips to the server), take and give back a
connection slot (three statements) and quit, for one message. Ten requests at once paid
all of it ten times over, under the GIL. So a backend that an ``asend_messages()`` call
opened is not closed at the end of the call but *parked* here, open, for
:data:`KEEP_OPEN_IDLE` seconds, and the next call of an equal backend (same class,
mailer, hints, ``fail_silently`` and fallback server: :func:`key_of`) borrows it with
its connections and slots ready, as a looping outbox worker keeps its connections
between batches.

What keeps this safe:

* only backends a call opened itself are parked (a caller who opened its backend closes
  it when it wants to); a borrowed backend is one call's alone until it is put back;
* a parked backend is closed (its connections quit, its slots given back) once idle for
  :data:`KEEP_OPEN_IDLE` seconds (:meth:`Park.close_idle`, run by a reaper thread while
  anything is parked), when the process exits, and at once when a send in this process
  finds no free slot of an account it holds (:meth:`Park.make_room`): the parked
  connection would otherwise hold the very slot that send waits for; a backend given
  back while such a send waits is closed instead of parked;
* other processes waiting for a slot wait at most :data:`KEEP_OPEN_IDLE` seconds for a
  parked one (the looping worker's rule), well within ``CONNECTION_WAIT``.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connections

logger = logging.getLogger("django_multismtp.parking")

#: Seconds a parked backend stays open unused (the looping worker's rule too).
KEEP_OPEN_IDLE = 5.0


def key_of(backend: Any) -> Hashable | None:
    """What makes two backends interchangeable (None: this one is never shared, e.g.
    hints that name an unsaved object)."""
    key = (
        type(backend),
        backend.alias,
        backend.fail_silently,
        backend.hints,
        backend.uses_fallback,
        backend.fallback,
    )
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _accounts_held(backend: Any) -> set[Any]:
    holder = backend.engine.pool.slots
    return {pk for pk, count in holder.held.items() if count} if holder is not None else set()


class Park:
    """The parked backends of this process, by :func:`key_of`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        #: key -> [(backend, time.monotonic() when parked)], the latest last.
        self._parked: dict[Hashable, list[tuple[Any, float]]] = {}
        #: Accounts a send of this process waits for a slot of (counted per waiter).
        self._waiting: collections.Counter[Any] = collections.Counter()
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()

    def _check_fork(self) -> None:
        # After fork() the parent's backends live on the parent's loop: forget them
        # (the parent closes them; their slots are the parent's).
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._parked, self._waiting = {}, collections.Counter()
            self._reaper, self._wake = None, threading.Event()

    def borrow(self, key: Hashable) -> Any | None:
        """An open parked backend for ``key``, now the caller's (None: none)."""
        with self._lock:
            self._check_fork()
            parked = self._parked.get(key)
            while parked:
                backend, _since = parked.pop()
                if backend._is_open:
                    return backend
        return None

    def put(self, key: Hashable, backend: Any, now: float | None = None) -> None:
        """Park ``backend`` (open, idle) for the next call; closed at once instead when
        a send of this process waits for a slot it holds."""
        with self._lock:
            self._check_fork()
            if not (_accounts_held(backend) & set(self._waiting)):
                self._parked.setdefault(key, []).append((backend, _now(now)))
                self._start_reaper()
                return
        _close(backend)

    def close_idle(self, now: float | None = None) -> int:
        """Close the backends parked for :data:`KEEP_OPEN_IDLE` seconds or more; return
        how many were closed."""
        limit = _now(now) - KEEP_OPEN_IDLE
        return self._close_where(lambda backend, since: since <= limit)

    def close_all(self) -> int:
        return self._close_where(lambda backend, since: True)

    @contextmanager
    def make_room(self, account_pk: Any) -> Iterator[int]:
        """For a send that found no free slot of an account: close the parked backends
        holding its slots (the count is yielded), and while the send waits in the
        body, close backends given back with them instead of parking them."""
        with self._lock:
            self._waiting[account_pk] += 1
        try:
            yield self._close_where(lambda backend, since: account_pk in _accounts_held(backend))
        finally:
            with self._lock:
                self._waiting[account_pk] -= 1
                if self._waiting[account_pk] <= 0:
                    del self._waiting[account_pk]

    def __len__(self) -> int:
        with self._lock:
            return sum(len(parked) for parked in self._parked.values())

    def _close_where(self, closing: Any) -> int:
        taken = []
        with self._lock:
            self._check_fork()
            for key, parked in list(self._parked.items()):
                kept = []
                for backend, since in parked:
                    if closing(backend, since):
                        taken.append(backend)
                    else:
                        kept.append((backend, since))
                if kept:
                    self._parked[key] = kept
                else:
                    del self._parked[key]
        for backend in taken:
            _close(backend)
        return len(taken)

    # -- the reaper ---------------------------------------------------------------------
    def _start_reaper(self) -> None:
        """(With the lock held.) A daemon thread closing idle backends while any is
        parked; it ends when none is left."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(
            target=self._reap, name="django-multismtp-parking", daemon=True
        )
        self._reaper.start()

    def _reap(self) -> None:
        while not self._wake.wait(KEEP_OPEN_IDLE / 2):
            if self.close_idle():
                connections.close_all()  # this thread's own, opened to give slots back
            with self._lock:
                if not self._parked:
                    self._reaper = None
                    return


def _now(now: float | None) -> float:
    return time.monotonic() if now is None else now


def _close(backend: Any) -> None:
    try:
        backend.close()
    except Exception:  # its slots' leases run out on their own
        logger.exception("Closing a parked backend failed")


#: The process's park.
park = Park()


@atexit.register
def _close_at_exit() -> None:
    """Quit the parked connections and give their slots back, rather than leave the
    slots to their leases."""
    if park._pid == os.getpid():
        park.close_all()
