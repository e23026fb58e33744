"""Message extras: selection hints as keyword arguments, and the status after sending.

Any ``EmailMessage`` may carry the hint attributes (``smtp_account``, ``smtp_user``,
``smtp_purpose``); the mixin only adds constructor arguments and type-checker
friendliness, as django-anymail does for its extras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.core.mail import EmailMessage, EmailMultiAlternatives


@dataclass
class SendStatus:
    """Set as ``message.multismtp_status`` after a send attempt."""

    message_id: str
    #: "sent", "queued" (kept in the outbox for a worker), "cancelled", or the outcome
    #: of the last failure.
    outcome: str
    #: Name of the account that sent it ("fallback" for the fallback server); for a
    #: failed message the account that failed last (None if none was tried).
    account: str | None = None
    account_id: int | None = None
    attempts: int = 0
    error: str = ""
    #: Recipients the server refused (address -> reply) when it accepted the others.
    refused: dict[str, str] = field(default_factory=dict)
    #: True when the outbox accepted the message for later delivery.
    queued: bool = False


class MultiSMTPMessageMixin:
    def __init__(
        self,
        *args: Any,
        smtp_account: Any = None,
        smtp_user: Any = None,
        smtp_purpose: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.smtp_account = smtp_account
        self.smtp_user = smtp_user
        self.smtp_purpose = smtp_purpose
        self.multismtp_status: SendStatus | None = None


class MultiSMTPMessage(MultiSMTPMessageMixin, EmailMessage):
    """``EmailMessage`` accepting ``smtp_account=``, ``smtp_user=``, ``smtp_purpose=``."""


class MultiSMTPMultiAlternatives(MultiSMTPMessageMixin, EmailMultiAlternatives):
    """``EmailMultiAlternatives`` with the same extra keyword arguments."""
