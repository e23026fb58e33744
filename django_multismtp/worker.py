"""The outbox worker: claim due rows, send them through the right mailer, settle them.

Used by ``manage.py send_queued_mail``, by the task-queue integrations in
:mod:`django_multismtp.tasks`, and by tests. Many workers may run at once, on many
machines, against one database (see :mod:`django_multismtp.outbox` for how they share).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from . import clock, compat, conf, outbox
from .backends.smtp import EmailBackend
from .models import OutboxMessage


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


def send_batch(rows: list[OutboxMessage], *, worker: str) -> outbox.Settlement:
    """Send claimed rows (grouped by mailer) and settle them."""
    by_mailer: dict[str, list[OutboxMessage]] = defaultdict(list)
    for row in rows:
        by_mailer[row.mailer].append(row)
    result = outbox.Settlement()
    for mailer, group in by_mailer.items():
        backend = backend_for(mailer)
        items = backend.send_queued(group)
        result.add(outbox.settle(items, worker=worker, now=clock.now()))
        for item in items:  # post_send, now that each row's fate is known
            assert item.row is not None
            backend.engine.report(item, queued=item.row.status == OutboxMessage.Status.QUEUED)
    return result


def drain(
    *,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    loop: bool = False,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Any] = time.sleep,
    on_batch: Callable[[outbox.Settlement], Any] | None = None,
) -> outbox.Settlement:
    """Send due mail until none is due (or, with ``loop``, until ``stop()``).

    ``max_seconds`` bounds the run (checked between batches: a batch is never cut
    short). A batch that raises leaves its rows claimed; the lease then hands them to
    the next worker, marked as possible duplicates.
    """
    size = batch_size or int(conf.get_setting("OUTBOX_BATCH_SIZE"))
    poll = conf.get_timedelta("OUTBOX_POLL_INTERVAL").total_seconds()
    worker = outbox.worker_id()
    total = outbox.Settlement()
    started = time.monotonic()
    while not stop():
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
        rows = outbox.claim(size, worker=worker, now=clock.now())
        if not rows:
            if not loop:
                break
            sleep(poll)
            continue
        result = send_batch(rows, worker=worker)
        total.add(result)
        if on_batch is not None:
            on_batch(result)
    return total
