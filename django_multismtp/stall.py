"""Is queued mail waiting with nothing sending it? For the commands and the admin.

A worker claims due rows oldest first, within ``OUTBOX_POLL_INTERVAL``. Mail that has
been due for longer than ``OUTBOX_STALL_AFTER`` while no worker was seen in that time
(:class:`~django_multismtp.models.OutboxWorkerSeen`, written by every batch a worker
sends) means no worker runs -- or all of them are stuck. A busy worker working through a
backlog is seen at every batch, so a long queue alone is not reported.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass

from django.db.models import Count, Min
from django.utils.translation import gettext as _

from . import conf
from .models import OutboxMessage, OutboxWorkerSeen


@dataclass(frozen=True)
class Stall:
    #: Queued rows due for longer than the threshold.
    waiting: int
    #: When the oldest of them became due.
    due_since: dt.datetime
    #: When a worker was last seen (None: never).
    worker_seen: dt.datetime | None

    def message(self) -> str:
        seen = (
            _("no worker has been seen since %(time)s")
            % {"time": self.worker_seen.isoformat(timespec="seconds")}
            if self.worker_seen is not None
            else _("no worker has ever been seen")
        )
        return _(
            "%(count)d queued message(s) have been waiting since %(due)s and %(seen)s. "
            "Run `manage.py send_queued_mail --loop` (or the task-queue integration) so "
            "queued mail goes out."
        ) % {
            "count": self.waiting,
            "due": self.due_since.isoformat(timespec="seconds"),
            "seen": seen,
        }


def worker_seen(now: dt.datetime) -> None:
    """Record that a worker is sending now (one UPDATE; the row is made once)."""
    name = f"{socket.gethostname()[:150]}:{os.getpid()}"
    if not OutboxWorkerSeen.objects.filter(key="outbox").update(worker=name, seen_at=now):
        OutboxWorkerSeen.objects.update_or_create(
            key="outbox", defaults={"worker": name, "seen_at": now}
        )


def last_seen() -> dt.datetime | None:
    row = OutboxWorkerSeen.objects.filter(key="outbox").only("seen_at").first()
    return row.seen_at if row is not None else None


def stalled(now: dt.datetime) -> Stall | None:
    """The stall, if queued mail waits longer than OUTBOX_STALL_AFTER with no worker."""
    limit = now - conf.get_timedelta("OUTBOX_STALL_AFTER")
    seen = last_seen()
    if seen is not None and seen >= limit:
        return None
    overdue = OutboxMessage.objects.filter(
        status=OutboxMessage.Status.QUEUED, next_attempt_at__lte=limit
    ).aggregate(count=Count("pk"), oldest=Min("next_attempt_at"))
    if not overdue["count"]:
        return None
    return Stall(overdue["count"], overdue["oldest"], seen)
