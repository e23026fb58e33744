"""Classify SMTP replies and transport errors, and attach a hint a person can act on.

Every decision the backend takes after a failure (fail over, mark the account rate
limited, give up) follows from the :class:`Outcome` computed here, and every message a
person reads (admin, commands, exceptions) carries the :attr:`Failure.hint` computed
here. Keeping both in one table keeps them consistent. No Django import: the transport
and the tests use it alone.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator
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
        "Microsoft 365 refuses SMTP AUTH for this login: SMTP AUTH (Authenticated SMTP) is "
        "turned off for the tenant or the mailbox, or Security Defaults block basic "
        "authentication. An administrator must allow Authenticated SMTP for the mailbox "
        "(and the tenant); otherwise send through another provider, as Microsoft is "
        "retiring basic-auth SMTP."
    ),
    "microsoft_auth": (
        "Microsoft 365 rejected the login: the password is wrong, or SMTP AUTH "
        "(Authenticated SMTP) is turned off for this mailbox or the tenant, or basic "
        "authentication is off. Check the password, then ask an administrator to allow "
        "Authenticated SMTP for the mailbox."
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
    "port_465": (
        "Port 465 expects implicit TLS from the first byte: choose SSL/TLS as the security "
        "mode, or use port 587 with STARTTLS."
    ),
    "port_587": (
        "Ports 587 and 25 start in plain text and expect STARTTLS, not implicit TLS: choose "
        "STARTTLS as the security mode, or use port 465 with SSL/TLS."
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
    "recipient_deferred": (
        "The receiving side deferred this recipient for now (greylisting, or a limit on mail "
        "to this mailbox). The message is tried again later; the account is not paused."
    ),
    "sender_not_allowed": (
        "The provider does not let this account send this message: a sandbox or unverified "
        "sending domain only sends to authorized recipients. Verify your own domain with "
        "the provider, or authorize the recipient."
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

# -- reading a reply ---------------------------------------------------------------------
#
# The enhanced status code (RFC 3463, "class.subject.detail" at the start of the text)
# says what a reply is about more reliably than its wording: subject 2 is the recipient's
# mailbox, 4 routing, 5 the protocol, 7 policy and security. The text decides within a
# subject, and only through whole-word patterns: a bare substring such as "rate" also
# matches "separate", and "try again later" is what greylisting says to every new sender.

_ENHANCED = re.compile(r"\s*[#(]?([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")

#: The sender (this account, its address or its IP) is sending too much. Only these
#: replies pause the account.
_THROTTLE_TEXT = re.compile(
    r"\bthrottl(?:e|ed|ing)\b"
    r"|\brate[ -]?limit(?:s|ed|ing)?\b"
    r"|\b(?:sending|sender|send|message|messages|submission|connection|login) rate\b"
    r"|\bunusual rate\b"
    r"|\btoo much mail\b"
    r"|\btoo many (?:messages|mails|emails|connections|sessions|login attempts"
    r"|(?:\w+ ){1,2}from)\b"
    r"|\b(?:limit|quota|credits)s? (?:has been |have been |was )?(?:exceeded|reached)\b"
    r"|\bexceeded (?:\w+ ){0,5}(?:limit|quota|rate)s?\b"
    r"|\bexceed(?:s|ed)? (?:\w+ ){0,4}per (?:second|minute|hour|day)\b"
    r"|\bsending (?:limit|quota)s?\b"
    r"|\bmax(?:imum)? (?:\w+ ){0,2}per (?:second|minute|hour|day)\b"
    r"|\bslow down\b"
    r"|\bunexpected volume\b"
    r"|SubmissionQuotaExceeded",
    re.IGNORECASE,
)
#: ... and the limit is a daily one: pausing for minutes would only hit it again.
_DAILY_TEXT = re.compile(
    r"\bdaily\b|\bper day\b|\b24 hours\b|\bcredits exceeded\b|SubmissionQuotaExceeded",
    re.IGNORECASE,
)
_GREYLIST_TEXT = re.compile(r"\b(?:grey|gray)-?list", re.IGNORECASE)
_BASIC_AUTH_TEXT = re.compile(
    r"\bbasic auth(?:entication)? is disabled\b|\bSmtpClientAuthentication\b", re.IGNORECASE
)
_APP_PASSWORD_TEXT = re.compile(r"\bapplication-specific password\b", re.IGNORECASE)
_STARTTLS_TEXT = re.compile(r"\bSTARTTLS\b", re.IGNORECASE)
_MAILBOX_FULL_TEXT = re.compile(r"\bmailbox (?:is )?full\b|\bover quota\b", re.IGNORECASE)
_SENDER_TEXT = re.compile(
    r"\bsender address rejected\b|\bfrom address\b|\bsender identity\b|\bsend as\b",
    re.IGNORECASE,
)
_NOT_ALLOWED_TEXT = re.compile(r"\bis not allowed to send\b", re.IGNORECASE)

#: Host names of providers whose replies need their own hint (see :func:`provider_for_host`).
_PROVIDER_DOMAINS = {
    "gmail.com": "gmail",
    "googlemail.com": "gmail",
    "office365.com": "microsoft365",
    "outlook.com": "microsoft365",
}
_MICROSOFT = frozenset({"microsoft365", "outlook"})


def provider_for_host(host: str) -> str:
    """The provider (preset key) an SMTP host belongs to, or "" when unknown."""
    labels = host.lower().rstrip(".").split(".")
    return _PROVIDER_DOMAINS.get(".".join(labels[-2:]), "")


@dataclass(frozen=True)
class Context:
    """What the caller knows about the account, so a hint can name it.

    ``provider`` is a preset key ("gmail", "microsoft365"...) or "" when unknown;
    ``offered_auth`` the mechanisms the server listed in EHLO (None: not known, as
    when the failure came before EHLO).
    """

    provider: str = ""
    port: int | None = None
    security: str = ""
    offered_auth: tuple[str, ...] | None = None


NO_CONTEXT = Context()


def enhanced_status(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if any."""
    match = _ENHANCED.match(text)
    if match is None:
        return None
    cls, subject, detail = (int(part) for part in match.groups())
    return cls, subject, detail


def _auth_not_offered(context: Context) -> str:
    offered = context.offered_auth
    if offered is None:
        return HINTS["auth_not_offered"]
    if not offered:
        return f"{HINTS['auth_not_offered']} The server offered no login method (no AUTH)."
    methods = ", ".join(method.upper() for method in offered)
    return f"{HINTS['auth_not_offered']} The server offered: {methods}."


def _login_failure(
    code: int, text: str, stage: str, status: tuple[int, int, int] | None, context: Context
) -> Failure | None:
    """Replies about the account's login; None when the reply is about something else.

    Only AUTH replies and the login codes of RFC 4954 count: Yahoo answers a message
    it will not take with "554 5.7.9", which has nothing to do with App Passwords.
    """
    if stage != "AUTH" and code not in (530, 534, 535, 538):
        return None
    if _BASIC_AUTH_TEXT.search(text) or status == (5, 7, 139):
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["basic_auth_disabled"])
    if code == 534 or status == (5, 7, 9) or _APP_PASSWORD_TEXT.search(text):
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["app_password"])
    if code == 535:
        microsoft = status == (5, 7, 3) or context.provider in _MICROSOFT
        hint = HINTS["microsoft_auth"] if microsoft else HINTS["credentials"]
        return Failure(Outcome.AUTH_FAILED, code, text, hint)
    if code == 538 or (code == 530 and _STARTTLS_TEXT.search(text)):
        return Failure(Outcome.TLS_FAILED, code, text, HINTS["starttls_required"])
    if code == 530:
        return Failure(Outcome.AUTH_FAILED, code, text, HINTS["auth_required"])
    return None


def classify_reply(
    code: int, text: str, *, stage: str = "DATA", context: Context = NO_CONTEXT
) -> Failure:
    """Classify one SMTP reply (code and text) received at ``stage``.

    Order matters: login replies first (they name the account), then a sender rate or
    quota (pause the account), then the rest by enhanced status code and reply code.
    """
    text = " ".join(str(text).split())
    if 200 <= code < 400:
        return Failure(Outcome.SENT, code, text, "")
    status = enhanced_status(text)
    login = _login_failure(code, text, stage, status, context)
    if login is not None:
        return login
    if stage == "AUTH" and code in (502, 504):
        # RFC 4954: 504 is "unrecognized authentication type"; 502, AUTH unknown.
        return Failure(Outcome.AUTH_FAILED, code, text, _auth_not_offered(context))
    # X.2.1-X.2.4: the recipient's mailbox (X.2.0 is "undefined": Microsoft's daily quota
    # comes as 5.2.0), whose own limits say nothing about this account's rate.
    recipient_side = status is not None and status[1] == 2 and status[2] != 0
    throttled = not recipient_side and _THROTTLE_TEXT.search(text) is not None
    if throttled and _DAILY_TEXT.search(text):
        return Failure(Outcome.THROTTLED, code, text, HINTS["daily_quota"], daily_quota=True)
    if _GREYLIST_TEXT.search(text):
        return Failure(Outcome.TRANSIENT, code, text, HINTS["recipient_deferred"])
    if code < 500 and _NOT_ALLOWED_TEXT.search(text):
        return Failure(Outcome.TRANSIENT, code, text, HINTS["sender_not_allowed"])
    if throttled:
        return Failure(Outcome.THROTTLED, code, text, HINTS["throttled"])
    if code == 421 or (status is not None and status[:2] == (4, 7) and status[2] >= 500):
        # 421: the server closes the channel on this client; Microsoft's 4.7.500-4.7.699:
        # "access denied, please try again later" to a sender it distrusts for now.
        return Failure(Outcome.THROTTLED, code, text, HINTS["throttled"])
    if status in ((4, 2, 2), (5, 2, 2)) or _MAILBOX_FULL_TEXT.search(text):
        outcome = Outcome.PERMANENT if code >= 500 else Outcome.TRANSIENT
        return Failure(outcome, code, text, HINTS["mailbox_full"])
    if code < 500:
        # A temporary refusal of one recipient (greylisting answers "4.7.1 try again
        # later" at RCPT) retries the message; it says nothing about this account.
        about_recipient = stage == "RCPT" and status is not None and status[1] in (1, 2, 7)
        if recipient_side or about_recipient:
            return Failure(Outcome.TRANSIENT, code, text, HINTS["recipient_deferred"])
        return Failure(Outcome.TRANSIENT, code, text, HINTS["transient"])
    if code == 552 or status == (5, 3, 4):
        return Failure(Outcome.PERMANENT, code, text, HINTS["too_big"])
    if stage == "MAIL" or _SENDER_TEXT.search(text):
        return Failure(Outcome.PERMANENT, code, text, HINTS["sender_refused"])
    if stage == "RCPT":
        return Failure(Outcome.PERMANENT, code, text, HINTS["recipient_refused"])
    return Failure(Outcome.PERMANENT, code, text, HINTS["permanent"])


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or during, each once.

    Both links count: aiosmtplib raises its own errors *during* the handling of the
    socket's (``__context__``) as often as *from* it (``__cause__``). A chain can loop
    (an exception re-raised inside its own handler), so each is visited once.
    """
    seen: set[int] = set()
    waiting: list[BaseException] = [exc]
    while waiting:
        current = waiting.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        waiting.extend(e for e in (current.__cause__, current.__context__) if e is not None)


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


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    return next((e for e in _chain(exc) if isinstance(e, ssl.SSLError)), None)


def _mode_hint(key: str, context: Context) -> str:
    """``HINTS[key]``, or the port/security mix-up itself when the account shows one.

    Connecting with STARTTLS to port 465 (which starts with TLS) waits for a greeting
    that never comes; implicit TLS to 587 or 25 fails its handshake on a plain greeting.
    """
    if context.port == 465 and context.security in ("starttls", "opportunistic", "none"):
        return HINTS["port_465"]
    if context.port in (25, 587) and context.security == "tls":
        return HINTS["port_587"]
    return HINTS[key]


def classify_exception(
    exc: BaseException, *, stage: str = "DATA", context: Context = NO_CONTEXT
) -> Failure:
    """Classify an exception raised while talking to a server."""
    failure = _classify_exception(exc, stage=stage, context=context)
    return dataclasses.replace(failure, error=stock_error(exc, stage=stage))


def _classify_exception(exc: BaseException, *, stage: str, context: Context) -> Failure:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, InternalAddressError):
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["internal_host"])
    ssl_error = _ssl_cause(exc)
    if isinstance(ssl_error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return Failure(Outcome.TLS_FAILED, None, text, HINTS["certificate"])
    if ssl_error is not None or re.search(r"\bSSL\b|WRONG_VERSION|record layer", text):
        return Failure(Outcome.TLS_FAILED, None, text, _mode_hint("tls_mismatch", context))
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = exc.recipients
        first = refused[0] if refused else None
        if first is not None:
            failure = classify_reply(first.code, first.message, stage="RCPT", context=context)
            return Failure(
                failure.outcome,
                first.code,
                f"{first.message} ({len(refused)} refused)",
                failure.hint,
                failure.daily_quota,
            )
        return Failure(Outcome.PERMANENT, None, text, HINTS["recipient_refused"])
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return classify_reply(exc.code, exc.message, stage="MAIL", context=context)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return classify_reply(exc.code, exc.message, stage="AUTH", context=context)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        failure = classify_reply(exc.code, exc.message, stage=stage, context=context)
        if isinstance(exc, aiosmtplib.SMTPConnectResponseError) and failure.outcome in (
            Outcome.TRANSIENT,
            Outcome.PERMANENT,
        ):
            # Refused in the greeting: no message could go through this server now.
            return Failure(
                Outcome.CONNECTION_FAILED, exc.code, failure.text, HINTS["service_refused"]
            )
        return failure
    lowered = text.lower()
    if "no suitable authentication method" in lowered:
        return Failure(Outcome.AUTH_FAILED, None, text, _auth_not_offered(context))
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
        isinstance(exc, aiosmtplib.SMTPException) and "not supported" in lowered
    ):
        if "auth" in lowered:
            return Failure(
                Outcome.AUTH_FAILED, None, AUTH_NOT_SUPPORTED, _auth_not_offered(context)
            )
        if "starttls" in lowered:
            return Failure(Outcome.TLS_FAILED, None, text, HINTS["not_supported"])
        return Failure(Outcome.CONFIG_ERROR, None, text, HINTS["not_supported"])
    if isinstance(exc, socket.gaierror) or "Name or service not known" in text:
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["unknown_host"])
    if isinstance(exc, TimeoutError):  # aiosmtplib's time-outs are TimeoutErrors
        return Failure(Outcome.CONNECTION_FAILED, None, text, _mode_hint("timeout", context))
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        hint = _mode_hint("disconnected", context)
        return Failure(Outcome.CONNECTION_FAILED, None, text, hint)
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        if "nodename nor servname" in text:
            return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["unknown_host"])
        reset = next(
            (
                e
                for e in _chain(exc)
                if isinstance(e, ConnectionResetError | ConnectionAbortedError)
            ),
            None,
        )
        if reset is not None:
            # Something listens but hung up at once: for implicit TLS, mid-handshake.
            if text.rstrip().endswith(":"):
                text = f"{text.rstrip()} {type(reset).__name__}"
            return Failure(Outcome.CONNECTION_FAILED, None, text, _mode_hint("reset", context))
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
