"""Models: SMTP accounts, usage counters, the delivery log, the outbox and verification codes."""

from .account import AuthMethod, Security, SmtpAccount
from .delivery import DeliveryLog
from .oauth import OAuthConnection, OAuthState
from .outbox import OutboxMessage, OutboxStatus
from .slots import ConnectionSlot
from .usage import UsageCounter
from .verification import VerificationCode
from .worker import OutboxWorkerSeen

__all__ = [
    "AuthMethod",
    "ConnectionSlot",
    "DeliveryLog",
    "OAuthConnection",
    "OAuthState",
    "OutboxMessage",
    "OutboxStatus",
    "OutboxWorkerSeen",
    "Security",
    "SmtpAccount",
    "UsageCounter",
    "VerificationCode",
]
