"""Classify SMTP replies and transport errors, and attach a hint a person can act on.

Every decision the backend takes after a failure (fail over, mark the account rate
limited, give up) follows from the :class:`Outcome` computed here, and every message a
person reads (admin, commands, exceptions) carries the :attr:`Failure.hint` computed
here. Keeping both in one table keeps them consistent. No Django import: the transport
and the tests use it alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass, field

import aiosmtplib

from .netguard import InternalAddressError


class Outcome(enum.StrEnum):
    SENT = "sent"
    THROTTLED = "throttled"  # the server asks us to slow down: back off this account
    TRANSIENT = "transient"  # 4xx or a hiccup: try again, elsewhere or later
    PERMANENT = "permanent"  # 5xx about this message: retrying will not help
    AUTH_FAILED = "auth_failed"
    TLS_FAILED = "tls_failed"
    CONNECTION_FAILED = "connection_failed"
    CONFIG_ERROR = "config_error"  # our side: undecryptable password, missing host...
    CANCELLED = "cancelled"  # a pre_send receiver cancelled it
    PROTOCOL_ERROR = "protocol_error"  # not SMTP, or a reply out of place: no valid code


#: Outcomes that say something about the account rather than the message: the rest
#: of a batch must not use that account again.
ACCOUNT_OUTCOMES = frozenset(
    {
        Outcome.THROTTLED,
        Outcome.AUTH_FAILED,
        Outcome.TLS_FAILED,
        Outcome.CONNECTION_FAILED,
        Outcome.CONFIG_ERROR,
        # Nothing that server says can be trusted for the rest of the batch.
        Outcome.PROTOCOL_ERROR,
    }
)

#: Outcomes after which the message may succeed through another account.
RETRYABLE_OUTCOMES = ACCOUNT_OUTCOMES | {Outcome.TRANSIENT}


@dataclass(frozen=True)
class Failure:
    outcome: Outcome
    code: int | None
    text: str
    hint: str
    #: True for daily-quota replies: back off for a day, not minutes.
    daily_quota: bool = False
    #: The exception class Django's SMTP backend (smtplib, ssl, socket) raises for the
    #: same failure, so the error we raise can be caught as that class too (see
    #: :func:`django_multismtp.exceptions.send_error`). None: no stock equivalent.
    error: type[BaseException] | None = field(default=None, compare=False, repr=False)

    @property
    def account_level(self) -> bool:
        return self.outcome in ACCOUNT_OUTCOMES

    @property
    def retryable(self) -> bool:
        return self.outcome in RETRYABLE_OUTCOMES

    def summary(self) -> str:
        code = f"{self.code} " if self.code else ""
        return f"{code}{self.text}".strip()


HINTS = {
    "credentials": (
        "The server rejected the user name or password. Check both; with Gmail or Google "
        "Workspace turn on 2-Step Verification and use an App Password instead of the "
        "account password."
    ),
    "app_password": (
        "The provider requires an application-specific password: turn on 2-Step "
        "Verification and create an App Password for this account."
    ),
    "basic_auth_disabled": (
        "Microsoft 365 has disabled basic authentication (SMTP AUTH) for this mailbox or "
        "tenant. Enable Authenticated SMTP for the mailbox, or send through another "
        "provider: Microsoft is retiring basic-auth SMTP."
    ),
    "auth_required": (
        "The server requires authentication: set an authentication method, a user name "
        "and a password."
    ),
    "starttls_required": (
        "The server requires encryption before login: choose STARTTLS (usually port 587) "
        "or implicit TLS (port 465) as the security mode."
    ),
    "auth_not_offered": (
        "The server did not offer the chosen login method. Choose 'auto', or enable TLS: "
        "many servers only offer AUTH after STARTTLS."
    ),
    "tls_mismatch": (
        "The TLS handshake failed. Check that the security mode matches the port: "
        "implicit TLS (SSL) is usually port 465, STARTTLS port 587, plain SMTP port 25."
    ),
    "certificate": (
        "The server's certificate could not be verified. Check the host name matches the "
        "certificate; for a private CA, give its file as CA file; only turn certificate "
        "checks off for a server you control."
    ),
    "reset": (
        "The server accepted the connection and closed it at once, before any reply: with "
        "implicit TLS (port 465) the TLS handshake failed. Check that the security setting "
        "matches the port (465: implicit TLS, 587: STARTTLS), or the server may refuse "
        "this client's address."
    ),
    "refused": (
        "Nothing accepts connections on that host and port. Check the host name and port; "
        "a firewall or the hosting provider may block outgoing SMTP (port 25 often is)."
    ),
    "unknown_host": "The host name does not resolve. Check the spelling of the SMTP host.",
    "timeout": (
        "The server did not answer in time. Check host and port (a firewall may drop the "
        "connection), or raise the timeout; a STARTTLS port used with implicit TLS (or the "
        "reverse) also ends in a time-out."
    ),
    "disconnected": (
        "The server closed the connection. It may limit connections or messages per "
        "connection (set 'max messages per connection'), or be restarting. Another account "
        "allowed to send the same From address is tried; otherwise try again later."
    ),
    "throttled": (
        "The server asks to slow down (rate limit). The account is paused until the time "
        "shown as 'rate limited until'; lower its sending limits to avoid this."
    ),
    "daily_quota": (
        "The account reached the provider's daily sending quota. It is paused for a day; "
        "send bulk mail through a provider made for it (Gmail is not)."
    ),
    "transient": (
        "The server reported a temporary problem. Another account allowed to send the same "
        "From address is tried; otherwise try again later."
    ),
    "sender_refused": (
        "The server refused the From address. The login may not be allowed to send as that "
        "address: check the account's From address and allowed senders."
    ),
    "recipient_refused": "The server refused the recipient address(es).",
    "too_big": "The message is larger than the server accepts. Reduce attachments.",
    "invalid_setting": (
        "A stored setting of this account is invalid (see the error). Edit the account: the "
        "form tells what to change."
    ),
    "mailbox_full": "The recipient's mailbox is full; the recipient must make room first.",
    "service_refused": (
        "The server answered but refuses service to this site (it may block this IP address "
        "or require a different port). Check the host and port with the provider."
    ),
    "permanent": "The server refused the message permanently.",
    "undecryptable": (
        "The stored password cannot be decrypted with the current FERNET_KEYS (a key was "
        "removed or changed). Restore the old key in FERNET_KEYS or enter the password again."
    ),
    "not_supported": "The server does not support a feature the account's settings require.",
    "protocol": (
        "The server's answer is not SMTP, or not the answer to what was asked: maybe this "
        "port does not speak SMTP; check the port and security mode (implicit TLS is "
        "usually port 465, STARTTLS port 587). Nothing was counted as sent; another "
        "account is tried, or the message is tried again later."
    ),
    "internal_host": (
        "The host resolves to an internal address (loopback, private or link-local network), "
        "which this site does not allow for accounts users enter themselves. Use the "
        "provider's public SMTP host."
    ),
}

_THROTTLE_TEXT = re.compile(
    r"throttl|rate|too many|limit|exceed|quota|try again later|slow down|4\.7\.0 .*attempts",
    re.IGNORECASE,
)
_DAILY_QUOTA_TEXT = re.compile(
    r"5\.4\.5|daily|SubmissionQuotaExceeded|sending quota|24 hours|per day", re.IGNORECASE
)
_BASIC_AUTH_TEXT = re.compile(r"5\.7\.139|basic authentication is disabled", re.IGNORECASE)
_STARTTLS_TEXT = re.compile(r"starttls", re.IGNORECASE)


def classify_reply(code: int, text: str, *, stage: str = "DATA") -> Failure:
    """Classify one SMTP reply (code and text) received at ``stage``."""
    text = " ".join(str(text).split())
    if 200 <= code < 400:
        return Failure(Outcome.SENT, code, text, "")
    if _DAILY_QUOTA_TEXT.search(text) and (code >= 450 and _THROTTLE_TEXT.search(text)):
        return Failure(Outcome.THROTTLED, code, text, HINTS["daily_quota"], daily_quota=True)
    if "SubmissionQuotaExceeded" in text or (code == 550 and "5.4.5" in text):
        return Failure(Outcome.THROTTLED, code, text, HINTS["daily_quota"], daily_quota=True)
    if code == 421:
        return Failure(Outcome.THROTTLED, code, text, HINTS["throttled"])
    if code == 454 and "throttl" in text.lower():
        return Failure(Outcome.THROTTLED, code, text, HINTS["throttled"])
    if code in (450, 451, 452) and _THROTTLE_TEXT.search(text) and "recipients" not in text:
        return Failure(Outcome.THROTTLED, code, text, HINTS["throttled"])
    if code == 535 or (code == 534 and stage == "AUTH"):
        if _BASIC_AUTH_TEXT.search(text):
            return Failure(Outcome.AUTH_FAILED, code, text, HINTS["basic_auth_disabled"])
        if code == 534 or "5.7.9" in text or "application-specific" in text.lower():
            return Failure(Outcome.AUTH_FAILED, code, text, HINTS["app_password"])
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["credentials"])
    if code == 534:
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["app_password"])
    if stage == "AUTH" and code in (502, 504):
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["auth_not_offered"])
    if code == 530 and _STARTTLS_TEXT.search(text):
        return Failure(Outcome.TLS_FAILED, code, text, HINTS["starttls_required"])
    if code == 530:
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["auth_required"])
    if code == 538:
        return Failure(Outcome.TLS_FAILED, code, text, HINTS["starttls_required"])
    if _BASIC_AUTH_TEXT.search(text):
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["basic_auth_disabled"])
    if 400 <= code < 500:
        return Failure(Outcome.TRANSIENT, code, text, HINTS["transient"])
    if "5.2.2" in text or "mailbox full" in text.lower() or "over quota" in text.lower():
        return Failure(Outcome.PERMANENT, code, text, HINTS["mailbox_full"])
    if code == 552 or "5.3.4" in text:
        return Failure(Outcome.PERMANENT, code, text, HINTS["too_big"])
    if stage == "MAIL":
        return Failure(Outcome.PERMANENT, code, text, HINTS["sender_refused"])
    if stage == "RCPT":
        return Failure(Outcome.PERMANENT, code, text, HINTS["recipient_refused"])
    return Failure(Outcome.PERMANENT, code, text, HINTS["permanent"])


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


#: aiosmtplib's exception classes -> what smtplib raises for the same failure. Order
#: matters: subclasses before their bases.
_SMTPLIB_CLASSES: tuple[tuple[type[BaseException], type[BaseException]], ...] = (
    (aiosmtplib.SMTPRecipientsRefused, smtplib.SMTPRecipientsRefused),
    (aiosmtplib.SMTPRecipientRefused, smtplib.SMTPRecipientsRefused),
    (aiosmtplib.SMTPSenderRefused, smtplib.SMTPSenderRefused),
    (aiosmtplib.SMTPAuthenticationError, smtplib.SMTPAuthenticationError),
    (aiosmtplib.SMTPDataError, smtplib.SMTPDataError),
    (aiosmtplib.SMTPHeloError, smtplib.SMTPHeloError),
    (aiosmtplib.SMTPConnectResponseError, smtplib.SMTPConnectError),
    (aiosmtplib.SMTPResponseException, smtplib.SMTPResponseException),
    (aiosmtplib.SMTPTimeoutError, TimeoutError),
    (aiosmtplib.SMTPServerDisconnected, smtplib.SMTPServerDisconnected),
    (aiosmtplib.SMTPNotSupported, smtplib.SMTPNotSupportedError),
)

#: smtplib's wording where aiosmtplib words the same failure differently, so code (and
#: Django's own tests) matching smtplib's messages keeps matching.
AUTH_NOT_SUPPORTED = "SMTP AUTH extension not supported by server."


def stock_error(exc: BaseException, *, stage: str = "DATA") -> type[BaseException] | None:
    """The class Django's SMTP backend raises where ``exc`` was raised to us.

    Django's backend talks smtplib over blocking sockets: refused connections, resolution
    failures and TLS errors reach its callers as the socket's own ``OSError`` subclass or
    ``ssl`` error, the SMTP conversation as smtplib's classes. aiosmtplib wraps the former
    in its own ``SMTPConnectError``; the original is its cause.
    """
    ssl_error = _ssl_cause(exc)
    if ssl_error is not None:
        return type(ssl_error)
    if isinstance(exc, aiosmtplib.SMTPConnectError) and not isinstance(
        exc, aiosmtplib.SMTPTimeoutError | aiosmtplib.SMTPConnectResponseError
    ):
        cause = exc.__cause__
        if isinstance(cause, aiosmtplib.SMTPServerDisconnected):
            return smtplib.SMTPServerDisconnected  # closed before the greeting
        if isinstance(cause, OSError) and not isinstance(cause, aiosmtplib.SMTPException):
            return type(cause)
        return ConnectionRefusedError
    for theirs, ours in _SMTPLIB_CLASSES:
        if isinstance(exc, theirs):
            return ours
    if isinstance(exc, aiosmtplib.SMTPException):
        if "not supported" in str(exc).lower():
            return smtplib.SMTPNotSupportedError
        return smtplib.SMTPException
    if isinstance(exc, OSError):  # the socket's own errors, as smtplib lets them through
        return type(exc)
    return None


def classify_exception(exc: BaseException, *, stage: str = "DATA") -> Failure:
    """Classify an exception raised while talking to a server."""
    failure = _classify_exception(exc, stage=stage)
    return dataclasses.replace(failure, error=stock_error(exc, stage=stage))


def _classify_exception(exc: BaseException, *, stage: str = "DATA") -> Failure:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, InternalAddressError):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["internal_host"])
    ssl_error = _ssl_cause(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return Failure(Outcome.TLS_FAILED, None, text, HINTS["certificate"])
    if ssl_error is not None or re.search(r"\bSSL\b|WRONG_VERSION|record layer", text):
        return Failure(Outcome.TLS_FAILED, None, text, HINTS["tls_mismatch"])
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        first = refused[0] if refused else None
        if first is not None:
            failure = classify_reply(first.code, first.message, stage="RCPT")
            return Failure(
                failure.outcome,
                first.code,
                f"{first.message} ({len(refused)} refused)",
                failure.hint,
                failure.daily_quota,
            )
        return Failure(Outcome.PERMANENT, None, text, HINTS["recipient_refused"])
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return classify_reply(exc.code, exc.message, stage="MAIL")
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return classify_reply(exc.code, exc.message, stage="AUTH")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code == 530 or isinstance(exc, aiosmtplib.SMTPConnectResponseError):
            failure = classify_reply(exc.code, exc.message, stage=stage)
            if isinstance(exc, aiosmtplib.SMTPConnectResponseError) and failure.outcome in (
                Outcome.TRANSIENT,
                Outcome.PERMANENT,
            ):
                return Failure(
                    Outcome.CONNECTION_FAILED, exc.code, exc.message, HINTS["service_refused"]
                )
            return failure
        return classify_reply(exc.code, exc.message, stage=stage)
    if "no suitable authentication method" in text.lower():
        return Failure(Outcome.AUTH_FAILED, None, text, HINTS["auth_not_offered"])
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
        isinstance(exc, aiosmtplib.SMTPException) and "not supported" in text.lower()
    ):
        if "auth" in text.lower():
            return Failure(Outcome.AUTH_FAILED, None, AUTH_NOT_SUPPORTED, HINTS["auth_not_offered"])
        if "starttls" in text.lower():
            return Failure(Outcome.TLS_FAILED, None, text, HINTS["not_supported"])
        return Failure(Outcome.CONFIG_ERROR, None, text, HINTS["not_supported"])
    if isinstance(exc, socket.gaierror) or "Name or service not known" in text:
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["unknown_host"])
    if isinstance(exc, aiosmtplib.SMTPConnectTimeoutError):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["timeout"])
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError | asyncio.TimeoutError):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["timeout"])
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["disconnected"])
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        if "Name or service not known" in text or "nodename nor servname" in text:
            return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["unknown_host"])
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConnectionResetError | ConnectionAbortedError | ssl.SSLEOFError):
            # Something listens but hung up at once: for implicit TLS, mid-handshake.
            if text.rstrip().endswith(":"):
                text = f"{text.rstrip()} {type(cause).__name__}"
            return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["reset"])
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["refused"])
    if isinstance(exc, OSError):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["refused"])
    return Failure(Outcome.TRANSIENT, None, text, HINTS["transient"])


#: A rejected user name or password, in the words of the account's provider (by preset
#: key): the generic hint names Gmail's App Passwords, which misleads everyone else.
CREDENTIAL_HINTS = {
    "gmail": HINTS["credentials"],
    "sendgrid": (
        "SendGrid rejected the credentials. The user name is literally 'apikey' and the "
        "password is an API key with the Mail Send permission, not your login password."
    ),
    "microsoft365": (
        "Microsoft rejected the login. Check the password; if it is right, basic "
        "authentication (SMTP AUTH) may be disabled for the mailbox or the whole tenant: "
        "enable Authenticated SMTP in the Microsoft 365 admin center."
    ),
    "outlook": (
        "Microsoft rejected the login. Check the password (with two-step verification, "
        "an app password); basic authentication may be disabled for personal accounts."
    ),
    "yahoo": "Yahoo rejected the login: generate an app password in the account's security "
    "settings and use it instead of the account password.",
    "icloud": "iCloud rejected the login: use an app-specific password from "
    "appleid.apple.com, and your full iCloud address as the user name.",
    "ses": "Amazon SES rejected the credentials: use the SMTP credentials created in the SES "
    "console for this region (not IAM access keys).",
    "mailgun": "Mailgun rejected the credentials: use the domain's SMTP login and its SMTP "
    "password from the Mailgun dashboard.",
    "brevo": "Brevo rejected the credentials: use the SMTP key from the SMTP & API page, "
    "not your login password.",
    "postmark": "Postmark rejected the credentials: use a server API token as both user "
    "name and password.",
}


def hint_for_provider(failure: Failure, preset: str) -> str:
    """``failure.hint``, or, for a rejected user name or password on an account set up
    with a provider preset, that provider's own advice."""
    if failure.hint == HINTS["credentials"] and preset in CREDENTIAL_HINTS:
        return CREDENTIAL_HINTS[preset]
    return failure.hint
