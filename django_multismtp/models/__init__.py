"""Models: SMTP accounts, their usage counters and the delivery log."""

from .account import AuthMethod, Security, SmtpAccount
from .delivery import DeliveryLog
from .usage import UsageCounter

__all__ = ["AuthMethod", "DeliveryLog", "Security", "SmtpAccount", "UsageCounter"]
