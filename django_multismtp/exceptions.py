"""Exceptions, split by one question: may ``fail_silently`` swallow it?

Send-time failures derive from :class:`MultiSMTPError`, itself a
:class:`smtplib.SMTPException`, so code written for Django's SMTP backend
(``except smtplib.SMTPException``) keeps working. Configuration errors derive from
Django's ``InvalidMailer`` (``ImproperlyConfigured`` before 6.1) on purpose: a wrong
setting must never be hidden by ``fail_silently``.
"""

from __future__ import annotations

import smtplib
from typing import TYPE_CHECKING, Any

from .compat import InvalidMailer

if TYPE_CHECKING:
    from .replies import Failure


class MultiSMTPError(smtplib.SMTPException):
    """A message could not be sent. Carries the classified failure and the hint."""

    def __init__(
        self,
        message: str,
        *,
        failure: Failure | None = None,
        account: str | None = None,
        failures: list[tuple[str, Failure]] | None = None,
        sent_count: int = 0,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.account = account
        #: ``(Message-ID, failure)`` for every message of the batch that failed.
        self.failures = failures or []
        #: How many messages of the batch did go out before this error was raised.
        self.sent_count = sent_count
        # Same attribute names as smtplib.SMTPResponseException, for familiar handling.
        self.smtp_code: int | None = failure.code if failure else None
        self.smtp_error: str = failure.text if failure else message

    @property
    def hint(self) -> str:
        return self.failure.hint if self.failure else ""


class NoAccountAvailable(MultiSMTPError):
    """Accounts match the message, but none may send now (rate limited, over a limit)."""


class SendFailed(MultiSMTPError):
    """Every candidate account failed, or the server refused the message for good."""


class MultiSMTPConfigurationError(InvalidMailer):
    """A setting, an option or an account refers to something that does not exist."""

    def __init__(self, message: str, *args: Any, alias: str | None = None) -> None:
        try:
            super().__init__(message, *args, alias=alias)
        except TypeError:  # Django < 6.1: ImproperlyConfigured takes no alias
            super().__init__(message if alias is None else f"MAILERS[{alias!r}]: {message}")


class UnknownAccount(MultiSMTPConfigurationError):
    """An account hint names no SMTP account this message may use (wrong id or name)."""


class AccountNotAllowed(UnknownAccount):
    """An account hint names someone's personal account, and the message is not sent as
    its owner. (A subclass of :class:`UnknownAccount`, so code that handles a bad hint
    handles this one too: the message is refused, never sent through another account.)"""


class CancelSend(Exception):  # noqa: N818 (it is a control-flow signal, like StopIteration)
    """Raised by a ``pre_send`` receiver to cancel one message without an error."""
