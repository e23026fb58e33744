"""``manage.py verify_smtp_accounts``: test accounts from cron, CI or a container.

Argument parsing and output only; the work is :func:`django_multismtp.ops.test_connection`
and :func:`~django_multismtp.ops.send_test_message`, shared with the admin.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email

from ... import clock, conf, ops, stall
from ...models import SmtpAccount

#: Every account works, but one needs attention soon (a certificate about to expire).
#: Distinct from 1 (a failure) so cron can tell the two apart.
WARNING_EXIT_STATUS = 3
#: The reply column's width in the table (the JSON output has the whole reply).
REPLY_WIDTH = 70


class Command(BaseCommand):
    help = (
        "Connect to each selected SMTP account, negotiate TLS and log in (and optionally "
        "send a test message). Exits non-zero when any account fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("names", nargs="*", metavar="NAME", help="account names (default: all)")
        parser.add_argument("--purpose", help="only accounts of this purpose")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.add_argument(
            "--send-test", metavar="ADDRESS", help="also send a test message to ADDRESS"
        )
        parser.add_argument(
            "--include-inactive", action="store_true", help="also check inactive accounts"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        accounts = SmtpAccount.objects.order_by("priority", "name")
        names: list[str] = options["names"]
        purpose = options["purpose"]
        address = options["send_test"]
        if purpose is not None and purpose not in conf.purposes():
            raise CommandError(f"Unknown purpose {purpose!r}; known: {', '.join(conf.purposes())}.")
        if address is not None:
            try:
                validate_email(address)
            except ValidationError:
                raise CommandError(f"--send-test: {address!r} is not an email address.") from None
        if names:
            found = set(accounts.filter(name__in=names).values_list("name", flat=True))
            missing = [n for n in names if n not in found]
            if missing:
                raise CommandError(f"No SMTP account named {', '.join(map(repr, missing))}.")
            accounts = accounts.filter(name__in=names)
        elif not options["include_inactive"]:
            accounts = accounts.filter(is_active=True)
        if purpose is not None:
            accounts = accounts.filter(purpose=purpose)
        selected = list(accounts)
        if not selected:
            raise CommandError("No SMTP account matches; create one in the admin first.")

        with _quiet_account_failures():
            results = self._check(selected, address)
        self._finish(results, options)

    def _check(self, selected: list[SmtpAccount], address: str | None) -> list[ops.CheckResult]:
        results = []
        for account in selected:
            checked = ops.test_connection(account)
            result = checked
            if checked.ok and address:
                result = ops.send_test_message(account, address)
                # The message's result, with what the connection check learnt.
                result.add_facts(checked.facts(), clock.now())
                result.oauth = checked.oauth
                result.warnings.extend(w for w in checked.warnings if w not in result.warnings)
            results.append(result)
        return results

    def _finish(self, results: list[ops.CheckResult], options: dict[str, Any]) -> None:
        if options["json"]:
            self.stdout.write(json.dumps([r.as_dict() for r in results], indent=2))
        else:
            self._table(results)
        failed = [r.account for r in results if not r.ok]
        stuck = stall.stalled(clock.now())
        if stuck is not None:
            # On standard error, so --json output stays parseable.
            self.stderr.write(f"Outbox: {stuck.message()}")
        if failed:
            raise CommandError(
                f"{len(failed)} of {len(results)} account(s) failed: {', '.join(failed)}."
            )
        if stuck is not None:
            raise CommandError(f"Outbox: {stuck.waiting} message(s) waiting with no worker.")
        warned = [r.account for r in results if r.warnings]
        if warned:
            raise CommandError(
                f"{len(warned)} of {len(results)} account(s) need attention soon: "
                f"{', '.join(warned)}.",
                returncode=WARNING_EXIT_STATUS,
            )

    def _table(self, results: list[ops.CheckResult]) -> None:
        rows = [("ACCOUNT", "RESULT", "CODE", "TLS", "AUTH", "CERTIFICATE", "REPLY")]
        for r in results:
            result = r.outcome if not r.ok else "warning" if r.warnings else "ok"
            rows.append(
                (
                    r.account,
                    result,
                    str(r.code or ""),
                    "/".join(filter(None, (r.tls_version, r.cipher))) or "-",
                    r.auth_mechanism or "-",
                    _certificate(r),
                    shorten(r.reply, REPLY_WIDTH),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            self.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
            )
        for r in results:
            if r.oauth is not None:
                self.stdout.write(f"{r.account}: {_oauth_line(r.oauth)}")
            if not r.ok and r.hint:
                self.stdout.write(f"{r.account}: {r.hint}")
            for warning in r.warnings:
                self.stdout.write(f"{r.account}: warning: {warning}")


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut between words and ending in "…"
    when cut, so a reply is never silently truncated mid-word."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    if " " in cut and text[width - 1] != " ":
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + "\u2026"


class _AccountFailureFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "multismtp_account_failure", False)


@contextmanager
def _quiet_account_failures() -> Iterator[None]:
    """The command prints each failure itself (row and hint); the backend's log line
    about the same failure would print it a second time on a console-logging site."""
    logger = logging.getLogger("django_multismtp")
    quiet = _AccountFailureFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _certificate(result: ops.CheckResult) -> str:
    """ "CN=mail.example.com,until=2027-01-31", short enough for a terminal ("-": none)."""
    if result.certificate_expires is None:
        return "-"
    subject = result.certificate_subject.replace(" ", "")[:40]
    return f"{subject},until={result.certificate_expires:%Y-%m-%d}"


def _oauth_line(oauth: dict[str, str | None]) -> str:
    """ "OAuth microsoft, connected; token expires 2026-12-07T10:00:00+00:00, ..." """
    text = (
        f"OAuth {oauth['provider']}, {oauth['state']}; token expires "
        f"{oauth['token_expires'] or '-'}, last token {oauth['refreshed_at'] or '-'}, "
        f"scopes: {oauth['scopes'] or '-'}"
    )
    if oauth["client_secret_expires"]:
        text += f"; client secret until {oauth['client_secret_expires']}"
    return text
