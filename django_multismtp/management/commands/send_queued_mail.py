"""``manage.py send_queued_mail``: drain the outbox, from cron, systemd or a container.

Argument parsing, signals and output only; the work is :func:`django_multismtp.worker.drain`.
Run as many copies as you like, on as many machines: they share the rows through leases.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ... import clock, outbox, worker
from ...models import OutboxMessage


def _positive_int(text: str, option: str = "--batch") -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CommandError(f"{option} must be a whole number of at least 1, not {text!r}.")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise CommandError(f"--max-seconds must be a positive number of seconds, not {text!r}.")
    return value


class Command(BaseCommand):
    help = (
        "Send the mail waiting in the outbox: due messages are claimed in batches, sent "
        "through their accounts (limits and rate limits honoured), and retried later with "
        "back-off when they cannot go out yet. Without --loop it stops when nothing is due."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop",
            action="store_true",
            help="keep polling for due mail until stopped (SIGTERM or Ctrl-C finish the "
            "current batch first)",
        )
        parser.add_argument(
            "--batch", metavar="N", help="messages claimed at a time (OUTBOX_BATCH_SIZE)"
        )
        parser.add_argument(
            "--connections",
            metavar="N",
            help="open at most N connections to any one account (default: up to its max "
            "connections, which every worker shares); with several workers on an account "
            "that allows many, each keeps its N busy",
        )
        parser.add_argument(
            "--max-seconds",
            metavar="S",
            help="stop starting new batches after S seconds (for cron: less than its interval)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = int(options["verbosity"])
        batch = _positive_int(options["batch"]) if options["batch"] is not None else None
        connections = (
            _positive_int(options["connections"], "--connections")
            if options["connections"] is not None
            else None
        )
        seconds = _seconds(options["max_seconds"]) if options["max_seconds"] is not None else None
        try:
            OutboxMessage.objects.exists()
        except DatabaseError as exc:
            raise CommandError(
                f"The outbox table cannot be read ({exc}). Run `manage.py migrate`."
            ) from None

        stopping = {"now": False}

        def request_stop(signum: int, frame: Any) -> None:
            if stopping["now"]:  # a second signal: stop at once
                raise KeyboardInterrupt
            stopping["now"] = True
            self.stderr.write("Stopping after the current batch (signal again to abort).")

        # Signal handlers can only be set in the main thread (not when called from a task).
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, request_stop) for sig in _STOP_SIGNALS if main}
        try:
            total = worker.drain(
                batch_size=batch,
                max_seconds=seconds,
                loop=options["loop"],
                stop=lambda: stopping["now"],
                on_batch=self._report if self.verbosity >= 2 else None,
                connections=connections,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self._report(total, final=True)
        if self.verbosity >= 2:
            self._waiting()

    def _waiting(self) -> None:
        """What is queued but not yet due (backing off, or throttled): "nothing sent"
        with mail still in the outbox otherwise looks like a stuck worker."""
        now = clock.now()
        later = OutboxMessage.objects.filter(status="queued", next_attempt_at__gt=now)
        count = later.count()
        if not count:
            self.stdout.write("Nothing else is waiting.")
            return
        first = later.order_by("next_attempt_at").values_list("next_attempt_at", flat=True)[0]
        seconds = max(0, round((first - now).total_seconds()))
        self.stdout.write(
            f"Waiting, not yet due: {count}; the next is due at "
            f"{first.isoformat(timespec='seconds')} (in {seconds} s)."
        )

    def _report(self, result: outbox.Settlement, *, final: bool = False) -> None:
        line = (
            f"{'Total: ' if final else ''}sent {result.sent}, retrying later {result.retrying}, "
            f"failed {result.failed}, cancelled {result.cancelled}"
        )
        if result.lost_lease:
            line += f", lost to other workers {result.lost_lease}"
        if final and self.verbosity >= 1:
            self.stdout.write(line + ".")
            for error in result.errors[:20]:
                self.stderr.write(f"failed: {error}")
        elif not final:
            self.stdout.write(line + ".")


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
