"""Models: SMTP accounts, usage counters, the delivery log and verification codes."""

from .account import AuthMethod, Security, SmtpAccount
from .delivery import DeliveryLog
from .usage import UsageCounter
from .verification import VerificationCode

__all__ = [
    "AuthMethod",
    "DeliveryLog",
    "Security",
    "SmtpAccount",
    "UsageCounter",
    "VerificationCode",
]
