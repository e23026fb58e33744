"""One message on its way out: hints resolved, envelope prepared, rendered per account.

The caller's ``EmailMessage`` is never modified: hint headers are dropped and the
account's sender applied on a shallow copy. The Message-ID is fixed once, so every
attempt (failover, retries) carries the same one and duplicates can be recognised.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field
from email.utils import formataddr, make_msgid
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.mail.utils import DNS_NAME

from .addresses import prep_address, prep_sender, sender_spec
from .compat import render_message
from .hints import HINT_HEADERS, Hints
from .replies import Failure

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

    from .models import SmtpAccount
    from .selection import Choice
    from .transport import Delivery


@dataclass(eq=False)
class Outgoing:
    index: int
    message: EmailMessage
    hints: Hints
    user_id: int | None
    from_address: str
    uses_default_from: bool
    envelope_recipients: list[str]
    message_id: str
    base: EmailMessage
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
    done: bool = False
    cancelled: bool = False

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
        )
        if measure:
            item.size = len(item.render(None))
        return item

    def _sender_fields(self, account: SmtpAccount | None) -> tuple[Any, list[Any]]:
        """From and Reply-To for ``account``: its sender when the message uses the
        site's default From, its reply-to when the message has none."""
        from_email = self.base.from_email or settings.DEFAULT_FROM_EMAIL
        reply_to = list(self.base.reply_to or [])
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
        message = copy.copy(self.base)
        message.from_email = from_email
        message.reply_to = reply_to
        return render_message(message)

    def recipient_domains(self) -> str:
        domains = sorted({r.rpartition("@")[2].lower() for r in self.envelope_recipients})
        return ",".join(domains)[:500]


@dataclass
class Attempt:
    """One message handed to one server in one round."""

    item: Outgoing
    account: SmtpAccount | None
    sender: str
    #: The wire bytes, only while the message is being sent.
    data: bytes = b""
    #: When the account's limits were reserved: a release must go to the same windows.
    reserved_at: dt.datetime | None = None
    delivery: Delivery | None = None
