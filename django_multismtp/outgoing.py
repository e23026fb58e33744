"""One message on its way out: hints resolved, envelope prepared, rendered per account.

The caller's ``EmailMessage`` is never modified: hint headers are dropped and the
account's sender applied on a shallow copy. The Message-ID is fixed once, so every
attempt (failover, retries) carries the same one and duplicates can be recognised.

Mail from the outbox arrives as stored bytes instead of an ``EmailMessage``
(:meth:`Outgoing.from_row`); the account's sender is then applied by replacing the From
and Reply-To header lines (:mod:`rawmail`), leaving the rest byte for byte.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from email.utils import formataddr, make_msgid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail.utils import DNS_NAME

from . import plainmail, rawmail
from .addresses import prep_address, prep_sender, sender_spec
from .compat import LEGACY_MIME, mail_date, render_message
from .hints import HINT_HEADERS, Hints, header_account
from .replies import Failure

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

    from .models import OutboxMessage, SmtpAccount
    from .selection import Choice
    from .transport import Delivery


@dataclass(eq=False)
class Outgoing:
    index: int
    #: The caller's message, or the outbox row for queued mail (what signals receive).
    message: Any
    hints: Hints
    user_id: int | None
    from_address: str
    uses_default_from: bool
    envelope_recipients: list[str]
    message_id: str
    #: The message as it will be rendered (hint headers dropped, Message-ID fixed);
    #: None for queued mail, which is rendered already (``raw``).
    base: EmailMessage | None
    #: The caller's From and Reply-To, which an account's sender may replace.
    from_email: str = ""
    reply_to: list[str] = field(default_factory=list)
    #: Stored wire bytes of queued mail.
    raw: bytes | None = None
    #: The outbox row this message came from (None for direct sends).
    row: OutboxMessage | None = None
    size: int = 0
    choice: Choice | None = None
    #: Accounts already tried (or refused by limits) for this message in this batch.
    tried: set[Any] = field(default_factory=set)
    attempts: int = 0
    failure: Failure | None = None
    sent_by: SmtpAccount | None = None
    sent_by_fallback: bool = False
    #: Recipients the server refused while accepting the message for the others.
    refused: dict[str, str] = field(default_factory=dict)
    #: Name of the account (or "fallback") of the last failed attempt.
    failed_on: str | None = None
    #: Some account failed (or was deferred) for a reason waiting can fix: throttling, a
    #: 4xx, connection trouble, a full limit. The outbox may then keep the message even
    #: if the last failure (say, another account's wrong password) needs a person.
    wait_helps: bool = False
    done: bool = False
    cancelled: bool = False
    #: Our own code raised while handling it (``failure`` holds the error): the pass
    #: counts as a failed attempt, so OUTBOX_MAX_ATTEMPTS ends a loop of them.
    faulted: bool = False

    @classmethod
    def prepare(
        cls,
        index: int,
        message: EmailMessage,
        hints: Hints,
        user_id: int | None,
        *,
        measure: bool = True,
    ) -> Outgoing:
        """``measure``: render once to learn the size (only needed when an account has a
        maximum message size; otherwise nothing is rendered before it is sent)."""
        base = copy.copy(message)
        headers = {
            name: value
            for name, value in (message.extra_headers or {}).items()
            if str(name).lower() not in HINT_HEADERS
        }
        if not any(str(name).lower() == "message-id" for name in headers):
            headers["Message-ID"] = make_msgid(domain=DNS_NAME.get_fqdn())
        base.extra_headers = headers
        message_id = next(str(v) for k, v in headers.items() if str(k).lower() == "message-id")
        from_email = message.from_email or settings.DEFAULT_FROM_EMAIL
        from_address = sender_spec(from_email)
        # Both raise ValueError for invalid or injected addresses, as Django's backend does.
        prep_sender(from_email)
        recipients = [prep_address(address) for address in message.recipients()]
        item = cls(
            index=index,
            message=message,
            hints=hints,
            user_id=user_id,
            from_address=from_address,
            uses_default_from=from_address == sender_spec(settings.DEFAULT_FROM_EMAIL),
            envelope_recipients=recipients,
            message_id=message_id,
            base=base,
            from_email=str(from_email),
            reply_to=[str(address) for address in message.reply_to or []],
        )
        if measure:
            item.size = len(item.render(None))
        return item

    @classmethod
    def from_row(
        cls, index: int, row: OutboxMessage, shared: dict[Any, Any] | None = None
    ) -> Outgoing:
        """A queued message, ready for the same rounds as a direct send.

        ``shared``: a dict kept for one batch, where rows that name the same account
        and sender share what is worked out from them (a model instance per row cost
        more than the rest of this method)."""
        from_email = row.from_email
        shared = {} if shared is None else shared
        # By primary key only: a reference carrying the id (and, for the error should
        # the account be gone, the name it had). A hint kept as text is found only on
        # rows queued before hints were stored by id that named no account then: read
        # as the header is (digits are a primary key, anything else a name).
        key = ("hints", row.hinted_account_id, row.account_hint, row.purpose)
        hints = shared.get(key)
        if hints is None:
            hints = shared[key] = _row_hints(row)
        sender_key = ("sender", from_email)
        from_address = shared.get(sender_key)
        if from_address is None:
            from_address = shared[sender_key] = sender_spec(from_email)
        return cls(
            index=index,
            message=row,
            hints=hints,
            user_id=row.user_id,
            from_address=from_address,
            uses_default_from=row.uses_default_from,
            envelope_recipients=row.recipients(),
            message_id=row.message_id,
            base=None,
            from_email=from_email,
            reply_to=[a.strip() for a in row.reply_to.split(",") if a.strip()],
            raw=bytes(row.data),
            row=row,
            size=row.size,
            attempts=row.smtp_attempts,
        )

    def _sender_fields(self, account: SmtpAccount | None) -> tuple[Any, list[Any]]:
        """From and Reply-To for ``account``: its sender when the message uses the
        site's default From, its reply-to when the message has none."""
        from_email = self.from_email or settings.DEFAULT_FROM_EMAIL
        reply_to = list(self.reply_to)
        if account is not None:
            if self.uses_default_from and account.from_email:
                from_email = (
                    formataddr((account.from_name, account.from_email))
                    if account.from_name
                    else account.from_email
                )
            if not reply_to and account.reply_to:
                reply_to = [account.reply_to]
        return from_email, reply_to

    def sender(self, account: SmtpAccount | None) -> str:
        """The envelope sender when sending through ``account``."""
        return prep_sender(self._sender_fields(account)[0])

    def render(self, account: SmtpAccount | None) -> bytes:
        """The wire bytes for ``account`` (None: as is). Not cached: a batch holds the
        bytes of the messages on the wire right now, not of the whole batch."""
        from_email, reply_to = self._sender_fields(account)
        if self.raw is not None:
            changes: dict[str, str | None] = {}
            if from_email != self.from_email:
                changes["From"] = from_email
            if reply_to != self.reply_to:
                changes["Reply-To"] = ", ".join(reply_to)
            return rawmail.replace_headers(self.raw, changes) if changes else self.raw
        assert self.base is not None
        fast = plainmail.render(
            self.base, str(from_email), reply_to, legacy=LEGACY_MIME, date=mail_date
        )
        if fast is not None:
            return fast
        message = copy.copy(self.base)
        message.from_email = from_email
        message.reply_to = reply_to
        return render_message(message)

    @property
    def unroutable(self) -> bool:
        """No account matched and no server was tried (a direct send's configuration
        error: there is no fallback server)."""
        return self.choice is not None and self.choice.use_fallback and self.attempts == 0

    def recipient_domains(self) -> str:
        domains = sorted({r.rpartition("@")[2].lower() for r in self.envelope_recipients})
        return ",".join(domains)[:500]


def _row_hints(row: OutboxMessage) -> Hints:
    from .models import SmtpAccount

    account: Any = header_account(row.account_hint) if row.account_hint else None
    if row.hinted_account_id is not None:
        account = SmtpAccount(pk=row.hinted_account_id, name=row.account_hint)
    return Hints(account=account, purpose=row.purpose or None)


@dataclass
class Attempt:
    """One message handed to one server in one round."""

    item: Outgoing
    account: SmtpAccount | None
    sender: str
    #: When the account's limits were reserved: a release must go to the same windows.
    reserved_at: dt.datetime | None = None
    delivery: Delivery | None = None
    #: What our own code raised while rendering or sending it (not a server's doing).
    fault: BaseException | None = None
    #: The engine has taken its outcome into account.
    recorded: bool = False
