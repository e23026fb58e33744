"""When an outbox worker was last seen: one row, so "is anything sending the queue?"
has an answer without a process table.

Queued mail only goes out if something runs ``send_queued_mail`` (or a task queue calls
the worker). A site that queues but runs no worker would otherwise find out from its
users. The engine updates this row whenever a worker sends a batch (one ``UPDATE``, no
row per worker or per batch); :mod:`django_multismtp.stall` compares it with the
oldest mail still waiting.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class OutboxWorkerSeen(models.Model):
    #: Always "outbox": the table holds a single row.
    key = models.CharField(max_length=20, unique=True, default="outbox")
    #: Host and process of the worker seen last (for people, not for logic).
    worker = models.CharField(_("worker"), max_length=200, blank=True)
    seen_at = models.DateTimeField(_("last seen"))

    class Meta:
        verbose_name = _("outbox worker heartbeat")
        verbose_name_plural = _("outbox worker heartbeats")

    def __str__(self) -> str:
        return f"{self.worker} at {self.seen_at}"
