"""Sending counters per account and time window, shared by every process and machine.

Limits must hold across workers, so they are counted in the database with atomic
conditional updates (see ``limits.py``), never in process memory.
"""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class UsageCounter(models.Model):
    account = models.ForeignKey("SmtpAccount", on_delete=models.CASCADE, related_name="usage")
    period = models.CharField(max_length=10)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("usage counter")
        constraints = [
            models.UniqueConstraint(
                fields=["account", "period", "window_start"], name="multismtp_usage_window"
            )
        ]

    def __str__(self) -> str:
        return (
            f"{self.account_id} {self.period}@{self.window_start:%Y-%m-%d %H:%M:%S}: {self.count}"
        )
