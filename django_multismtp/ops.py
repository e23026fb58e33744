"""The actions a person takes on an account, one implementation for every face.

The admin actions, the "My SMTP settings" page and the management commands all call
these functions, so a connection test gives the same answer, hint and recorded state
wherever it is started.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from dataclasses import dataclass

from django.core.mail import EmailMessage
from django.utils.translation import gettext as _

from . import clock, conf, state
from .addresses import prep_address
from .compat import render_message
from .engine import account_config
from .eventloop import smtp_loop
from .models import DeliveryLog, SmtpAccount
from .oauth.health import token_health
from .replies import HINTS, Failure, Outcome
from .transport import Delivery, ServerConfig, ServerFacts, Session, check_server

#: A server certificate that expires sooner than this is reported as a warning.
CERTIFICATE_WARNING = dt.timedelta(days=14)


@dataclass
class CheckResult:
    account: str
    ok: bool
    outcome: str
    code: int | None
    reply: str
    hint: str
    seconds: float
    # What the connection check learnt (see transport.ServerFacts); empty when it failed.
    tls_version: str = ""
    cipher: str = ""
    certificate_subject: str = ""
    certificate_expires: dt.datetime | None = None
    auth_mechanism: str = ""
    #: Things that work today but need a person soon (a certificate about to expire).
    warnings: list[str] = dataclasses.field(default_factory=list)
    #: An OAuth account's tokens (oauth.health.TokenHealth.as_dict()); None otherwise.
    oauth: dict[str, str | None] | None = None

    @property
    def outcome_label(self) -> str:
        """The outcome in words, as the delivery log shows it."""
        from .models.delivery import OUTCOME_CHOICES

        return str(dict(OUTCOME_CHOICES, ok=_("OK")).get(self.outcome, self.outcome))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the expiry as ISO 8601."""
        data = dataclasses.asdict(self)
        expires = self.certificate_expires
        data["certificate_expires"] = expires.isoformat() if expires is not None else None
        return data

    def facts(self) -> ServerFacts:
        """What :meth:`add_facts` copied in (to carry it over to another result)."""
        return ServerFacts(
            self.reply,
            self.tls_version,
            self.cipher,
            self.certificate_subject,
            self.certificate_expires,
            self.auth_mechanism,
        )

    def add_token_health(self, account: SmtpAccount, now: dt.datetime) -> None:
        """For an OAuth account: its tokens, and a warning for a client secret that
        expires within 30 days (read after the check, which may have refreshed)."""
        health = token_health(account)
        if health is not None:
            self.oauth = health.as_dict()
            self.warnings.extend(health.warnings(now.date()))

    def add_facts(self, facts: ServerFacts, now: dt.datetime) -> None:
        """Copy what the check learnt, and warn about a certificate that expires soon."""
        self.tls_version, self.cipher = facts.tls_version, facts.cipher
        self.certificate_subject = facts.certificate_subject
        self.certificate_expires = facts.certificate_expires
        self.auth_mechanism = facts.auth_mechanism
        expires = facts.certificate_expires
        if expires is not None and expires - now < CERTIFICATE_WARNING:
            days = (expires - now).total_seconds() / 86400
            when = (_("expired on %(date)s") if days < 0 else _("expires on %(date)s")) % {
                "date": expires.strftime("%Y-%m-%d %H:%M UTC")
            }
            self.warnings.append(
                _("The server certificate %(when)s (%(days).1f days); renew it.")
                % {"when": when, "days": days}
            )


def _result(
    account: SmtpAccount, failure: Failure | None, reply: str, seconds: float, *, ok: str
) -> CheckResult:
    """``ok`` is the outcome reported on success: "ok" for a test, "sent" for a message."""
    if failure is None:
        return CheckResult(account.name, True, ok, None, reply, "", seconds)
    return CheckResult(
        account.name,
        False,
        failure.outcome.value,
        failure.code,
        failure.text,
        state.account_hint(account, failure),
        seconds,
    )


def _test_config(account: SmtpAccount) -> ServerConfig:
    """The account's server, with no step allowed more than ``TEST_TIMEOUT``."""
    config = account_config(account)
    limit = conf.test_timeout()
    bound = limit if config.timeout is None else min(config.timeout, limit)
    return dataclasses.replace(config, timeout=bound)


def test_connection(account: SmtpAccount) -> CheckResult:
    """Connect, negotiate TLS and log in; send nothing. Records the outcome on the account.

    Bounded by ``TEST_TIMEOUT`` in all, whatever the account's timeout: a person waits.
    """
    started = time.perf_counter()
    failure, facts = smtp_loop.run(check_server(_test_config(account), conf.test_timeout()))
    now = clock.now()
    if failure is not None:
        state.record_failure(account, failure, now)
    else:
        state.record_successes([account], now)
    result = _result(account, failure, facts.summary, time.perf_counter() - started, ok="ok")
    if failure is None:
        result.add_facts(facts, now)
    result.add_token_health(account, now)
    return result


def send_test_message(
    account: SmtpAccount, to: str, *, subject: str = "", body: str = ""
) -> CheckResult:
    """Send one message through exactly this account (no failover) and log it."""
    started = time.perf_counter()
    recipient = prep_address(to)
    message = EmailMessage(
        subject=subject or _("django-multismtp test message"),
        body=body
        or _("This message was sent through the SMTP account %(name)s to test it.")
        % {"name": account.name},
        from_email=account.formatted_from(),
        to=[to],
        reply_to=[account.reply_to] if account.reply_to else None,
    )
    try:
        data = render_message(message)
    except ValueError as exc:  # a stored from name with a line break, say (BadHeaderError)
        invalid = Failure(Outcome.CONFIG_ERROR, None, str(exc), HINTS["invalid_setting"])
        return _result(account, invalid, "", time.perf_counter() - started, ok="sent")
    session = Session(_test_config(account))
    within = conf.test_timeout()

    async def send() -> Delivery:
        # Bounded in all, like a connection test: a person waits for the page.
        try:
            async with asyncio.timeout(within):
                try:
                    return await session.send(prep_address(account.from_email), [recipient], data)
                finally:
                    await session.close()
        except TimeoutError:
            text = _("No complete answer within %(seconds)g seconds, the time a test may take")
            failure = Failure(
                Outcome.CONNECTION_FAILED, None, text % {"seconds": within}, HINTS["timeout"]
            )
            return Delivery(failure, duration=within)

    delivery = smtp_loop.run(send())
    now = clock.now()
    failure = delivery.failure
    state.write_log(
        [
            DeliveryLog(
                account=account,
                account_name=account.name,
                message_id=str(message.extra_headers.get("Message-ID", "")) or _message_id(data),
                from_email=account.from_email,
                recipient_count=1,
                recipient_domains=recipient.rpartition("@")[2],
                # No subject: a verification message carries its code there, and the
                # code must be stored nowhere but as a hash.
                **state.log_details(None, [recipient]),
                outcome=failure.outcome.value if failure else Outcome.SENT.value,
                reply_code=delivery.code,
                reply_text=(failure.summary() if failure else delivery.reply)[:2000],
                duration_ms=int(delivery.duration * 1000),
                created_at=now,
            )
        ]
    )
    if failure is not None:
        state.record_failure(account, failure, now)
    else:
        state.record_successes([account], now)
    reply = "" if failure else f"{delivery.code} {delivery.reply}"
    return _result(account, failure, reply, time.perf_counter() - started, ok=Outcome.SENT.value)


def _message_id(data: bytes) -> str:
    for line in data.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
        if not line:
            break
    return ""


def clear_rate_limit(account: SmtpAccount) -> None:
    SmtpAccount.objects.filter(pk=account.pk).update(
        rate_limited_until=None, consecutive_throttles=0
    )
    account.rate_limited_until = None
    account.consecutive_throttles = 0
