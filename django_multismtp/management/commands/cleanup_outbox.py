"""``manage.py cleanup_outbox``: delete old history, from cron.

The outbox keeps sent and cancelled rows (with their bytes) so "was it sent, by which
account, when" has an answer; the delivery log keeps one row per attempt. Both grow
with every message, so sites prune them on a schedule of their choosing. Queued rows
are never deleted: that would lose mail.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Q

from ... import clock
from ...models import DeliveryLog, OutboxMessage

Status = OutboxMessage.Status


def _days(option: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise CommandError(f"{option} must be a whole number of days (0 or more), not {text!r}.")
    return value


class Command(BaseCommand):
    help = (
        "Delete sent and cancelled outbox messages older than --days (and failed ones with "
        "--include-failed), and optionally delivery-log rows older than --log-days. Queued "
        "messages are never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", default="30", metavar="N", help="default: 30")
        parser.add_argument(
            "--include-failed", action="store_true", help="also delete failed messages"
        )
        parser.add_argument(
            "--log-days", metavar="N", help="also delete delivery-log rows older than N days"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count what would be deleted; delete nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = clock.now()
        cutoff = now - dt.timedelta(days=_days("--days", options["days"]))
        statuses = [Status.SENT, Status.CANCELLED]
        if options["include_failed"]:
            statuses.append(Status.FAILED)
        old = OutboxMessage.objects.filter(status__in=statuses).filter(
            Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff)
        )
        logs = DeliveryLog.objects.none()
        if options["log_days"] is not None:
            log_cutoff = now - dt.timedelta(days=_days("--log-days", options["log_days"]))
            logs = DeliveryLog.objects.filter(created_at__lt=log_cutoff)
        if options["dry_run"]:
            outbox_count, log_count = old.count(), logs.count()
            verb = "Would delete"
        else:
            outbox_count, _ = old.delete()
            log_count = logs.delete()[0] if options["log_days"] is not None else 0
            verb = "Deleted"
        self.stdout.write(
            f"{verb} {outbox_count} outbox message(s) and {log_count} delivery-log row(s)."
        )
