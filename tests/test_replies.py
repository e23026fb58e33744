"""Classifying SMTP replies and transport errors: outcome, daily quota and hint.

Every decision after a failure (back off, fail over, give up) and every hint a person
reads comes from ``django_multismtp.replies``; the reply texts below are the ones the
big providers really send. The last part classifies exceptions raised by aiosmtplib
against real servers on 127.0.0.1 for the classic port/mode mix-ups.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import re
import smtplib
import socket
import ssl
from collections.abc import Iterator

import aiosmtplib
import pytest

from django_multismtp import state
from django_multismtp.exceptions import SendFailed, send_error
from django_multismtp.models import SmtpAccount
from django_multismtp.netguard import InternalAddressError
from django_multismtp.replies import (
    HINTS,
    Context,
    Failure,
    Outcome,
    classify_exception,
    classify_reply,
    enhanced_status,
    hint_for_provider,
    provider_for_host,
)
from django_multismtp.transport import AuthMethod, Security, ServerConfig, check_server
from tests.conftest import USERS
from tests.smtp_servers import SMTPTestServer, TLSFiles, drop_client

SENT, THROTTLED, TRANSIENT, PERMANENT = (
    Outcome.SENT,
    Outcome.THROTTLED,
    Outcome.TRANSIENT,
    Outcome.PERMANENT,
)
AUTH_FAILED, TLS_FAILED, CONNECTION_FAILED, CONFIG_ERROR = (
    Outcome.AUTH_FAILED,
    Outcome.TLS_FAILED,
    Outcome.CONNECTION_FAILED,
    Outcome.CONFIG_ERROR,
)


def assert_hint_rule(failure: Failure) -> None:
    """Every failure tells a person what to do; only success goes without a hint."""
    if failure.outcome == SENT:
        assert failure.hint == ""
    else:
        assert failure.hint.strip(), failure


# ---------------------------------------------------------------------------------------
# Replies
# ---------------------------------------------------------------------------------------


def reply(code, text, outcome, hint, *, stage="DATA", daily=False):
    return pytest.param(code, text, stage, outcome, daily, hint, id=f"{code}-{stage}-{text[:30]}")


GMAIL_LIMIT = "https://support.google.com/mail/?p="
MS_QUOTA = (
    "5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process "
    "message due to a permanent exception with message [BeginDiagnosticData]"
)

# fmt: off
REPLIES = [
    reply(250, "2.0.0 OK queued as 12345", SENT, None),
    # 421: the server closes the connection or refuses new ones for now.
    reply(421, "4.7.0 Try again later, closing connection. (EHLO)", THROTTLED, "throttled",
          stage="EHLO"),
    reply(421, "4.3.2 Service not available", THROTTLED, "throttled"),
    # A recipient-side limit (X.2.x: the mailbox) is not this account's rate.
    reply(450, "4.2.1 The user you are trying to contact is receiving mail at a rate that "
          "prevents additional messages from being delivered.", TRANSIENT,
          "recipient_deferred", stage="RCPT"),
    reply(451, "4.7.1 Please try again later", TRANSIENT, "transient"),
    reply(451, "4.3.0 Mail server temporarily rejected message.", TRANSIENT, "transient"),
    reply(450, "4.2.0 Mailbox unavailable", TRANSIENT, "recipient_deferred", stage="RCPT"),
    # A recipient's full mailbox says "quota exceeded": the recipient's quota, not ours.
    reply(452, "4.2.2 Mailbox quota exceeded for this recipient", TRANSIENT, "mailbox_full"),
    reply(452, "4.5.3 Too many recipients", TRANSIENT, "transient", stage="RCPT"),
    # Amazon SES.
    reply(454, "4.7.0 Throttling failure: Maximum sending rate exceeded.", THROTTLED,
          "throttled"),
    reply(454, "4.7.0 Temporary authentication failure", TRANSIENT, "transient", stage="AUTH"),
    # Gmail's daily limit.
    reply(550, f"5.4.5 Daily user sending quota exceeded. {GMAIL_LIMIT}Limit", THROTTLED,
          "daily_quota", daily=True),
    reply(550, "5.4.5 Daily user sending limit exceeded.", THROTTLED, "daily_quota",
          stage="MAIL", daily=True),
    # Microsoft 365's daily recipient quota.
    reply(554, MS_QUOTA, THROTTLED, "daily_quota", daily=True),
    # A 4xx naming a daily limit: still a day's back-off.
    reply(451, "4.7.0 You have exceeded your daily sending limit", THROTTLED, "daily_quota",
          daily=True),
    # Logins.
    reply(535, f"5.7.8 Username and Password not accepted. {GMAIL_LIMIT}BadCredentials",
          AUTH_FAILED, "credentials", stage="AUTH"),
    reply(534, f"5.7.9 Application-specific password required. {GMAIL_LIMIT}"
          "InvalidSecondFactor", AUTH_FAILED, "app_password", stage="AUTH"),
    reply(534, "5.7.9 Application-specific password required.", AUTH_FAILED, "app_password"),
    reply(535, "5.7.139 Authentication unsuccessful, basic authentication is disabled. "
          "[AM0PR10CA0031.EURPRD10.PROD.OUTLOOK.COM]", AUTH_FAILED, "basic_auth_disabled",
          stage="AUTH"),
    reply(535, "5.7.139 Authentication unsuccessful, the user credentials were incorrect.",
          AUTH_FAILED, "basic_auth_disabled", stage="AUTH"),
    reply(530, "5.7.0 Must issue a STARTTLS command first", TLS_FAILED, "starttls_required",
          stage="MAIL"),
    reply(538, "5.7.11 Encryption required for requested authentication mechanism",
          TLS_FAILED, "starttls_required", stage="AUTH"),
    reply(530, "5.7.0 Authentication required", AUTH_FAILED, "auth_required", stage="MAIL"),
    # RFC 4954: 504 to AUTH is a login method the server does not know.
    reply(504, "5.5.4 Unrecognized authentication type", AUTH_FAILED, "auth_not_offered",
          stage="AUTH"),
    reply(530, "5.7.57 Client not authenticated to send mail", AUTH_FAILED, "auth_required",
          stage="MAIL"),
    # Refusals of this message.
    reply(552, "5.3.4 Message size exceeds fixed maximum message size", PERMANENT, "too_big"),
    reply(554, "5.3.4 Message too big for system", PERMANENT, "too_big"),
    reply(550, "5.1.1 The email account that you tried to reach does not exist.", PERMANENT,
          "recipient_refused", stage="RCPT"),
    reply(553, "5.7.1 Sender address rejected: not owned by user", PERMANENT,
          "sender_refused", stage="MAIL"),
    reply(554, "5.7.1 Message rejected as spam", PERMANENT, "permanent"),
]
# fmt: on


@pytest.mark.parametrize(("code", "text", "stage", "outcome", "daily", "hint"), REPLIES)
def test_classify_reply(code, text, stage, outcome, daily, hint):
    failure = classify_reply(code, text, stage=stage)
    assert failure.outcome == outcome
    assert failure.daily_quota is daily
    assert failure.code == code
    assert failure.summary() == f"{code} {' '.join(text.split())}"
    assert failure.hint == (HINTS[hint] if hint else "")
    assert_hint_rule(failure)


# ---------------------------------------------------------------------------------------
# What real providers answer, and what a user then sees
# ---------------------------------------------------------------------------------------
#
# Each row: the reply as the server sends it (code, text, the command it answered) and
# what follows for the person running the site: is the account paused and for how long
# (none, the doubling back-off that starts at THROTTLE_BACKOFF, or DAILY_QUOTA_BACKOFF),
# does the message move on to another account (and the outbox retry it) or fail for good,
# and which hint they read. ``pause`` is computed by state.throttle_backoff, the function
# that sets "rate limited until", for an account with no earlier throttle.

MINUTE, DAY = dt.timedelta(minutes=1), dt.timedelta(hours=24)
NO_PAUSE = None
RETRY, FAIL = "retried elsewhere", "failed"


def seen(code, text, stage, pause, then, hint, *, id):
    return pytest.param(code, text, stage, pause, then, hint, id=id)


# fmt: off
PROVIDERS = [
    # Postfix anvil (smtpd_client_*_rate_limit, smtpd_client_connection_count_limit).
    seen(450, "4.7.1 Error: too much mail from 192.0.2.10", "MAIL", MINUTE, RETRY,
         "throttled", id="postfix-anvil-message-rate"),
    seen(450, "4.7.1 Error: too many recipients from 192.0.2.10", "RCPT", MINUTE, RETRY,
         "throttled", id="postfix-anvil-recipient-rate"),
    seen(421, "4.7.0 mail.example.com Error: too many connections from 192.0.2.10",
         "CONNECT", MINUTE, RETRY, "throttled", id="postfix-anvil-connections"),
    # Postfix's per-message recipient limit: this message, not the account.
    seen(452, "4.5.3 Error: too many recipients", "RCPT", NO_PAUSE, RETRY, "transient",
         id="postfix-recipients-per-message"),
    # policyd-rate-limit's default fail_action, as Postfix words it at RCPT.
    seen(450, "4.7.1 <bob@example.com>: Recipient address rejected: Rate limit reach, "
         "retry later", "RCPT", MINUTE, RETRY, "throttled", id="postfix-policyd-rate-limit"),
    # Greylisting: the recipient's server, not this account.
    seen(451, "4.7.1 Please try again later", "RCPT", NO_PAUSE, RETRY, "recipient_deferred",
         id="greylisting"),
    seen(450, "4.2.0 <bob@example.com>: Recipient address rejected: Greylisted, see "
         "http://postgrey.schweikert.ch/help/example.com.html", "RCPT", NO_PAUSE, RETRY,
         "recipient_deferred", id="postgrey"),
    # Exim ratelimit (a deployed ACL's message) and cPanel's hourly cap.
    seen(450, "Connection limited: Sender rate 52.3 / 1h.", "RCPT", MINUTE, RETRY,
         "throttled", id="exim-ratelimit"),
    seen(550, "Domain example.com has exceeded the max emails per hour (100/100 (100%)) "
         "allowed. Message discarded.", "DATA", MINUTE, RETRY, "throttled",
         id="cpanel-max-emails-per-hour"),
    # Gmail.
    seen(421, "4.7.28 Gmail has detected an unusual rate of unsolicited mail. To protect "
         "\n4.7.28 our users from spam, mail has been temporarily rate limited.", "DATA",
         MINUTE, RETRY, "throttled", id="gmail-4.7.28"),
    seen(421, "4.7.0 Try again later, closing connection. (EHLO)", "EHLO", MINUTE, RETRY,
         "throttled", id="gmail-4.7.0-closing"),
    seen(454, "4.7.0 Too many login attempts, please try again later.", "AUTH", MINUTE,
         RETRY, "throttled", id="gmail-login-attempts"),
    seen(450, "4.2.1 The user you are trying to contact is receiving mail at a rate that "
         "prevents additional messages from being delivered.", "RCPT", NO_PAUSE, RETRY,
         "recipient_deferred", id="gmail-recipient-rate"),
    seen(452, "4.2.2 The email account that you tried to reach is over quota.", "RCPT",
         NO_PAUSE, RETRY, "mailbox_full", id="gmail-recipient-over-quota"),
    seen(550, "5.4.5 Daily user sending limit exceeded.", "MAIL", DAY, RETRY, "daily_quota",
         id="gmail-daily-limit"),
    seen(535, "5.7.8 Username and Password not accepted.", "AUTH", NO_PAUSE, RETRY,
         "credentials", id="gmail-bad-credentials"),
    seen(534, "5.7.9 Application-specific password required.", "AUTH", NO_PAUSE, RETRY,
         "app_password", id="gmail-app-password"),
    # Microsoft 365 / Exchange Online.
    seen(451, "4.7.500 Server busy. Please try again later from [203.0.113.10]. (S77714)",
         "RCPT", MINUTE, RETRY, "throttled", id="microsoft-4.7.500"),
    seen(432, "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "DATA", MINUTE,
         RETRY, "throttled", id="microsoft-sender-thread-limit"),
    seen(535, "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for "
         "the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.", "AUTH",
         NO_PAUSE, RETRY, "basic_auth_disabled", id="microsoft-5.7.139-tenant"),
    seen(535, "5.7.139 Authentication unsuccessful, user is locked by your organization's "
         "security defaults policy. Contact your administrator.", "AUTH", NO_PAUSE, RETRY,
         "basic_auth_disabled", id="microsoft-5.7.139-security-defaults"),
    seen(535, "5.7.3 Authentication unsuccessful [SN4PR0601CA0005.namprd06.prod.outlook.com]",
         "AUTH", NO_PAUSE, RETRY, "microsoft_auth", id="microsoft-5.7.3"),
    seen(554, MS_QUOTA, "DATA", DAY, RETRY, "daily_quota", id="microsoft-submission-quota"),
    # Amazon SES (no enhanced code).
    seen(454, "Throttling failure: Maximum sending rate exceeded", "DATA", MINUTE, RETRY,
         "throttled", id="ses-rate"),
    seen(454, "Throttling failure: Daily message quota exceeded", "DATA", DAY, RETRY,
         "daily_quota", id="ses-daily-quota"),
    # Mailgun's sandbox domain sends to authorized recipients only: not a rate.
    seen(421, "Domain sandbox123.mailgun.org is not allowed to send: Sandbox subdomains are "
         "for test purposes only. Please add your own domain or add the address to "
         "authorized recipients in Account Settings.", "DATA", NO_PAUSE, RETRY,
         "sender_not_allowed", id="mailgun-sandbox"),
    # SendGrid: the free plan's daily credits, and an unverified From address.
    seen(451, "Authentication failed: Maximum credits exceeded", "AUTH", DAY, RETRY,
         "daily_quota", id="sendgrid-credits"),
    seen(550, "The from address does not match a verified Sender Identity. Mail cannot be "
         "sent until this error is resolved.", "DATA", NO_PAUSE, FAIL, "sender_refused",
         id="sendgrid-sender-identity"),
    # Yahoo.
    seen(421, "4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected "
         "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/"
         "error-codes", "MAIL", MINUTE, RETRY, "throttled", id="yahoo-TSS04"),
    seen(554, "5.7.9 Message not accepted for policy reasons.", "DATA", NO_PAUSE, FAIL,
         "permanent", id="yahoo-5.7.9-policy-is-not-a-login"),
    seen(550, "Too many messages. Try again in 92 seconds.", "AUTH", MINUTE, RETRY,
         "throttled", id="5xx-rate-limit"),
]
# fmt: on


@pytest.mark.parametrize(("code", "text", "stage", "pause", "then", "hint"), PROVIDERS)
def test_what_a_provider_reply_means_for_the_user(code, text, stage, pause, then, hint):
    failure = classify_reply(code, text, stage=stage)
    paused = failure.outcome == THROTTLED
    assert paused is (pause is not None), failure
    if paused:
        assert state.throttle_backoff(SmtpAccount(consecutive_throttles=0), failure) == pause
    assert (RETRY if failure.retryable else FAIL) == then
    assert failure.hint == HINTS[hint]
    assert failure.code == code


@pytest.mark.parametrize(("code", "text", "stage", "pause", "then", "hint"), PROVIDERS)
def test_the_failure_quotes_the_providers_reply(code, text, stage, pause, then, hint):
    """The error a person reads carries the provider's own words, whatever the hint."""
    failure = classify_reply(code, text, stage=stage)
    assert failure.summary() == f"{code} {' '.join(text.split())}"


def test_the_hints_name_what_to_do():
    """The texts the brief promises people: App Passwords, Microsoft, STARTTLS, ports."""
    assert "App Password" in classify_reply(535, "5.7.8 Bad credentials", stage="AUTH").hint
    assert "Microsoft" in classify_reply(535, "5.7.139 Authentication unsuccessful").hint
    assert "STARTTLS" in classify_reply(530, "5.7.0 Must issue a STARTTLS command first").hint
    assert "465" in HINTS["tls_mismatch"] and "587" in HINTS["tls_mismatch"]


def test_reply_text_is_normalised_and_summarised():
    failure = classify_reply(421, "4.7.0 Try again\r\n   later\n")
    assert failure.text == "4.7.0 Try again later"
    assert failure.summary() == "421 4.7.0 Try again later"


def test_account_level_and_retryable():
    throttled = classify_reply(421, "4.7.0 Try again later")
    assert throttled.account_level and throttled.retryable
    transient = classify_reply(451, "4.3.0 Temporary failure")
    assert not transient.account_level and transient.retryable
    refused = classify_reply(550, "5.1.1 unknown user", stage="RCPT")
    assert not refused.account_level and not refused.retryable
    auth = classify_reply(535, "5.7.8 bad", stage="AUTH")
    assert auth.account_level and auth.retryable


@pytest.mark.parametrize("stage", ["EHLO", "AUTH", "MAIL", "RCPT", "DATA"])
def test_every_reply_code_gets_a_hint_unless_it_is_a_success(stage):
    for code in range(200, 600):
        for text in ("", "Requested action not taken", "rate limit exceeded"):
            failure = classify_reply(code, text, stage=stage)
            assert (failure.outcome == SENT) is (code < 400), (code, text, failure)
            assert_hint_rule(failure)


# ---------------------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------------------


def _recipients_refused(code: int, message: str) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(code, message, "a@example.com"),
            aiosmtplib.SMTPRecipientRefused(code, message, "b@example.com"),
        ]
    )


EXCEPTIONS = [
    (ConnectionRefusedError(111, "Connection refused"), CONNECTION_FAILED, "refused"),
    (
        aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1: Connect call failed"),
        CONNECTION_FAILED,
        "refused",
    ),
    (OSError(101, "Network is unreachable"), CONNECTION_FAILED, "refused"),
    (socket.gaierror(-2, "Name or service not known"), CONNECTION_FAILED, "unknown_host"),
    (
        aiosmtplib.SMTPConnectError(
            "Error connecting to smtp.nowhere.invalid on port 587: [Errno -2] Name or service "
            "not known"
        ),
        CONNECTION_FAILED,
        "unknown_host",
    ),
    (
        ssl.SSLCertVerificationError(
            1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
        ),
        TLS_FAILED,
        "certificate",
    ),
    (
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)"),
        TLS_FAILED,
        "tls_mismatch",
    ),
    (
        aiosmtplib.SMTPConnectTimeoutError("Timed out connecting to 10.0.0.1 on port 587"),
        CONNECTION_FAILED,
        "timeout",
    ),
    (
        aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"),
        CONNECTION_FAILED,
        "timeout",
    ),
    (aiosmtplib.SMTPTimeoutError("Timed out"), CONNECTION_FAILED, "timeout"),
    (TimeoutError(), CONNECTION_FAILED, "timeout"),
    (
        aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"),
        CONNECTION_FAILED,
        "disconnected",
    ),
    (
        aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Username and Password not accepted"),
        AUTH_FAILED,
        "credentials",
    ),
    (
        aiosmtplib.SMTPAuthenticationError(534, "5.7.9 Application-specific password required"),
        AUTH_FAILED,
        "app_password",
    ),
    (
        aiosmtplib.SMTPNotSupported("SMTP AUTH extension not supported by server."),
        AUTH_FAILED,
        "auth_not_offered",
    ),
    (
        aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."),
        TLS_FAILED,
        "not_supported",
    ),
    (
        aiosmtplib.SMTPNotSupported("SMTPUTF8 not supported by server"),
        CONFIG_ERROR,
        "not_supported",
    ),
    (
        aiosmtplib.SMTPSenderRefused(553, "5.7.1 Sender address rejected", "f@example.com"),
        PERMANENT,
        "sender_refused",
    ),
    (
        _recipients_refused(550, "5.1.1 User unknown"),
        PERMANENT,
        "recipient_refused",
    ),
    (
        _recipients_refused(450, "4.2.1 Receiving mail at a rate that prevents delivery"),
        TRANSIENT,
        "recipient_deferred",
    ),
    (aiosmtplib.SMTPRecipientsRefused([]), PERMANENT, "recipient_refused"),
    (aiosmtplib.SMTPResponseException(421, "4.7.0 Try again later"), THROTTLED, "throttled"),
    (
        aiosmtplib.SMTPResponseException(530, "5.7.0 Must issue a STARTTLS command first"),
        TLS_FAILED,
        "starttls_required",
    ),
    (
        aiosmtplib.SMTPDataError(552, "5.3.4 Message size exceeds fixed limit"),
        PERMANENT,
        "too_big",
    ),
    (
        aiosmtplib.SMTPConnectResponseError(421, "4.7.0 Too many connections, try again later"),
        THROTTLED,
        "throttled",
    ),
    (
        aiosmtplib.SMTPConnectResponseError(554, "5.7.1 No SMTP service here"),
        CONNECTION_FAILED,
        "service_refused",  # it answered, so "nothing accepts connections" would be wrong
    ),
    (ValueError("something odd"), TRANSIENT, "transient"),
]


@pytest.mark.parametrize(
    ("exc", "outcome", "hint"),
    EXCEPTIONS,
    ids=[f"{type(e).__name__}-{i}" for i, (e, *_) in enumerate(EXCEPTIONS)],
)
def test_classify_exception(exc, outcome, hint):
    failure = classify_exception(exc)
    assert failure.outcome == outcome
    assert failure.hint == HINTS[hint]
    assert failure.text  # never empty, even for TimeoutError()
    assert_hint_rule(failure)


def test_recipients_refused_keeps_the_code_and_counts():
    failure = classify_exception(_recipients_refused(550, "5.1.1 User unknown"))
    assert failure.code == 550
    assert failure.text == "5.1.1 User unknown (2 refused)"


def test_daily_quota_through_an_exception():
    exc = aiosmtplib.SMTPDataError(550, "5.4.5 Daily user sending quota exceeded.")
    failure = classify_exception(exc)
    assert failure.outcome == THROTTLED and failure.daily_quota


def test_ssl_error_found_in_the_cause_chain():
    """aiosmtplib wraps handshake errors; the SSL error underneath decides."""
    try:
        try:
            raise ssl.SSLError(1, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF")
        except ssl.SSLError as inner:
            raise aiosmtplib.SMTPConnectError("Error connecting") from inner
    except aiosmtplib.SMTPConnectError as outer:
        failure = classify_exception(outer)
    assert failure.outcome == TLS_FAILED
    assert failure.hint == HINTS["tls_mismatch"]


# ---------------------------------------------------------------------------------------
# Real wire: what aiosmtplib raises for the usual mistakes
# ---------------------------------------------------------------------------------------


@pytest.fixture
def untrusted_implicit(tls_files: TLSFiles) -> Iterator[SMTPTestServer]:
    with SMTPTestServer(mode="implicit", tls=tls_files) as server:
        yield server


def raised(server: SMTPTestServer | None = None, *, port: int | None = None, **kwargs) -> Failure:
    """Connect (and log in, when asked) with aiosmtplib; classify what it raised."""
    username = kwargs.pop("username", None)
    password = kwargs.pop("password", None)
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port if port is not None else server.port,
        **kwargs,
    )

    async def run() -> None:
        try:
            await client.connect()
            if username is not None:
                await client.login(username, password)
            await client.sendmail("from@example.com", ["to@example.com"], b"Subject: x\r\n\r\nx")
        finally:
            await drop_client(client)

    with pytest.raises((aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError)) as caught:
        asyncio.run(run())
    failure = classify_exception(caught.value, stage="CONNECT")
    assert_hint_rule(failure)
    return failure


def test_wire_implicit_tls_to_a_plain_server(smtp_server):
    failure = raised(smtp_server, use_tls=True, start_tls=False, timeout=2)
    assert failure.outcome == TLS_FAILED
    assert failure.hint == HINTS["tls_mismatch"]
    assert "port" in failure.hint
    assert smtp_server.received == []


def test_wire_starttls_to_an_implicit_tls_server(implicit_server, tls_files):
    # The client waits for a plain greeting that never comes: a time-out, whose hint
    # names the STARTTLS/implicit TLS mix-up.
    failure = raised(
        implicit_server,
        use_tls=False,
        start_tls=True,
        tls_context=tls_files.client_context(),
        timeout=0.3,
    )
    assert failure.outcome == CONNECTION_FAILED
    assert failure.hint == HINTS["timeout"]
    assert "implicit TLS" in failure.hint


def test_wire_starttls_required_but_not_used(starttls_server):
    failure = raised(starttls_server, use_tls=False, start_tls=False, timeout=2)
    assert failure.outcome == TLS_FAILED
    assert failure.code == 530
    assert failure.hint == HINTS["starttls_required"]


def test_wire_wrong_password(starttls_server, tls_files):
    failure = raised(
        starttls_server,
        start_tls=True,
        tls_context=tls_files.client_context(),
        username="alice",
        password="wrong",
        timeout=2,
    )
    assert failure.outcome == AUTH_FAILED
    assert failure.code == 535
    assert failure.hint == HINTS["credentials"]


def test_wire_login_without_auth_offered(smtp_server):
    failure = raised(smtp_server, start_tls=False, username="alice", password="x", timeout=2)
    assert failure.outcome == AUTH_FAILED
    assert failure.hint == HINTS["auth_not_offered"]


def test_wire_auth_required(implicit_server, tls_files):
    failure = raised(
        implicit_server, use_tls=True, tls_context=tls_files.client_context(), timeout=2
    )
    assert failure.outcome == AUTH_FAILED
    assert failure.code == 530
    assert failure.hint == HINTS["auth_required"]


def test_wire_untrusted_certificate(untrusted_implicit):
    failure = raised(
        untrusted_implicit,
        use_tls=True,
        tls_context=ssl.create_default_context(),  # does not trust the test certificate
        timeout=2,
    )
    assert failure.outcome == TLS_FAILED
    assert failure.hint == HINTS["certificate"]


def test_wire_connection_refused():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = raised(port=port, start_tls=False, timeout=2)
    assert failure.outcome == CONNECTION_FAILED
    assert failure.hint == HINTS["refused"]


def test_wire_good_login_is_not_a_failure(starttls_server, tls_files):
    """Control: the same client settings succeed with the right password."""

    async def run() -> None:
        client = aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=starttls_server.port,
            start_tls=True,
            tls_context=tls_files.client_context(),
            timeout=2,
        )
        try:
            await client.connect()
            await client.login("alice", USERS["alice"])
            await client.sendmail("f@example.com", ["t@example.com"], b"Subject: x\r\n\r\nx")
        finally:
            await drop_client(client)

    asyncio.run(run())
    assert starttls_server.wait_for(1)[0].login == "alice"


def test_mailbox_full_is_not_called_too_big():
    failure = classify_reply(552, "5.2.2 Mailbox full", stage="DATA")
    assert failure.outcome == Outcome.PERMANENT
    assert failure.hint == HINTS["mailbox_full"]
    assert classify_reply(552, "5.3.4 Message too big").hint == HINTS["too_big"]


# ---------------------------------------------------------------------------------------
# Decisions the table above does not show
# ---------------------------------------------------------------------------------------


def test_only_whole_words_pause_an_account():
    """ "rate" inside "separate", "limit" inside "limited resources" pause nothing."""
    for text in (
        "4.3.0 Please send the parts as separate messages",
        "4.3.1 Insufficient system storage, limited resources",
        "4.7.1 Try again later",
        "4.3.0 Accurate delivery is delayed",
    ):
        failure = classify_reply(451, text, stage="DATA")
        assert failure.outcome == TRANSIENT, text
        assert not failure.account_level and failure.retryable


def test_greylisting_at_rcpt_retries_the_message_without_pausing_the_account():
    failure = classify_reply(451, "4.7.1 Please try again later", stage="RCPT")
    assert (failure.outcome, failure.account_level, failure.retryable) == (TRANSIENT, False, True)
    assert failure.hint == HINTS["recipient_deferred"]
    # The same words from a sender limit do pause it.
    limited = classify_reply(451, "4.7.1 Mailbox rate limit reached, please try again later")
    assert limited.outcome == THROTTLED and limited.account_level


def test_a_per_recipient_refusal_by_enhanced_code():
    # 4.1.x (the address) and 4.2.x (the mailbox) at RCPT concern that recipient.
    assert (
        classify_reply(450, "4.1.8 Sender domain unresolvable", stage="RCPT").hint
        == (HINTS["recipient_deferred"])
    )
    # 4.5.3 (too many recipients in this message) and codeless replies are just transient.
    assert (
        classify_reply(452, "4.5.3 Too many recipients", stage="RCPT").hint == (HINTS["transient"])
    )
    assert classify_reply(450, "Mailbox busy", stage="RCPT").hint == HINTS["transient"]
    # Outside RCPT a policy code is not a recipient's.
    assert classify_reply(451, "4.7.1 Try again", stage="MAIL").hint == HINTS["transient"]


def test_mailbox_full_temporary_or_permanent():
    temporary = classify_reply(452, "4.2.2 Mailbox full", stage="RCPT")
    assert (temporary.outcome, temporary.hint) == (TRANSIENT, HINTS["mailbox_full"])
    permanent = classify_reply(552, "5.2.2 Mailbox full", stage="RCPT")
    assert (permanent.outcome, permanent.hint) == (PERMANENT, HINTS["mailbox_full"])
    worded = classify_reply(550, "Requested action not taken: mailbox is full", stage="RCPT")
    assert worded.hint == HINTS["mailbox_full"]


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (450, "4.7.0 Requested action aborted: daily sending quota reached"),
        (421, "4.7.0 Daily limit exceeded for this account, try again later"),
        (451, "4.7.1 Sender exceeded 500 messages per day"),
        (452, "4.3.1 Sending quota for the last 24 hours exceeded"),
    ],
)
def test_a_daily_limit_pauses_for_a_day_whatever_the_code(code, text):
    """A 421 that names a daily limit is a daily limit: "try again later" in it is the
    server's stock phrase, and retrying after minutes would only hit the limit again."""
    failure = classify_reply(code, text)
    assert failure.outcome == THROTTLED and failure.daily_quota
    assert state.throttle_backoff(SmtpAccount(consecutive_throttles=3), failure) == DAY
    assert failure.hint == HINTS["daily_quota"]


def test_daily_words_alone_are_not_a_quota():
    failure = classify_reply(451, "4.3.0 Daily maintenance, try again")
    assert failure.outcome == TRANSIENT and not failure.daily_quota


def test_auth_replies_depend_on_the_stage():
    # RFC 4954: 504 to AUTH is an unknown mechanism; the message still fails over.
    for code in (502, 504):
        at_auth = classify_reply(code, "5.5.4 Unrecognized authentication type", stage="AUTH")
        assert at_auth.outcome == AUTH_FAILED and at_auth.retryable, code
        assert at_auth.hint == HINTS["auth_not_offered"]
        # Elsewhere a 50x is a command the server will not take: no login problem.
        for stage in ("EHLO", "MAIL", "RCPT", "DATA"):
            elsewhere = classify_reply(code, "5.5.1 Command not implemented", stage=stage)
            assert elsewhere.outcome == PERMANENT and not elsewhere.retryable, (code, stage)
    assert classify_reply(500, "5.5.2 Syntax error", stage="DATA").outcome == PERMANENT
    assert classify_reply(500, "5.5.2 Syntax error", stage="EHLO").hint == HINTS["permanent"]


def test_an_auth_stage_reply_that_is_not_about_the_login():
    failure = classify_reply(554, "5.7.0 Access denied", stage="AUTH")
    assert failure.outcome == PERMANENT


def test_login_codes_outside_auth():
    assert classify_reply(535, "5.7.8 Bad", stage="MAIL").outcome == AUTH_FAILED
    assert classify_reply(538, "5.7.11 Encryption required", stage="MAIL").outcome == TLS_FAILED
    failure = classify_reply(535, "Authentication failed: application-specific password")
    assert failure.hint == HINTS["app_password"]


@pytest.mark.parametrize(
    ("provider", "hint"),
    [("", "credentials"), ("gmail", "credentials"), ("microsoft365", "microsoft_auth")],
)
def test_bad_credentials_hint_fits_the_provider(provider, hint):
    failure = classify_reply(
        535, "5.7.8 Error: authentication failed", stage="AUTH", context=Context(provider=provider)
    )
    assert failure.hint == HINTS[hint]


def test_microsoft_hints_say_what_to_do():
    for key in ("basic_auth_disabled", "microsoft_auth"):
        assert "Authenticated SMTP" in HINTS[key] and "mailbox" in HINTS[key]
    assert "tenant" in HINTS["basic_auth_disabled"]
    assert "App Password" in classify_reply(534, "5.7.9 Application-specific password").hint


@pytest.mark.parametrize(
    ("host", "provider"),
    [
        ("smtp.gmail.com", "gmail"),
        ("smtp.googlemail.com", "gmail"),
        ("SMTP.Office365.com.", "microsoft365"),
        ("smtp-mail.outlook.com", "microsoft365"),
        ("mail.example.com", ""),
        ("smtp.gmail.com.example.net", ""),
        ("localhost", ""),
    ],
)
def test_provider_for_host(host, provider):
    assert provider_for_host(host) == provider


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("4.7.1 Error", (4, 7, 1)),
        ("  5.7.139 Authentication unsuccessful", (5, 7, 139)),
        ("#5.7.0 x", (5, 7, 0)),
        ("(4.4.5) busy", (4, 4, 5)),
        ("2.0.0", (2, 0, 0)),
        ("4.16.55.1 deferred", None),
        ("1.2.3 not a class", None),
        ("Error 4.7.1 later in the text", None),
        ("4.7.1000 too long", None),
        ("", None),
    ],
)
def test_enhanced_status(text, status):
    assert enhanced_status(text) == status


# -- what the server offered, and the account's port -------------------------------------


def test_wrong_mechanism_lists_what_the_server_offered():
    exc = aiosmtplib.SMTPAuthenticationError(504, "5.5.4 Unrecognized authentication type")
    offered = classify_exception(exc, context=Context(offered_auth=("login", "cram-md5")))
    assert offered.hint == f"{HINTS['auth_not_offered']} The server offered: LOGIN, CRAM-MD5."
    nothing = classify_exception(exc, context=Context(offered_auth=()))
    assert nothing.hint.endswith("The server offered no login method (no AUTH).")
    unknown = classify_exception(exc)
    assert unknown.hint == HINTS["auth_not_offered"]


def test_no_common_mechanism_lists_what_the_server_offered():
    exc = aiosmtplib.SMTPException("No suitable authentication method found.")
    failure = classify_exception(exc, context=Context(offered_auth=("xoauth2",)))
    assert failure.outcome == AUTH_FAILED
    assert failure.hint.endswith("The server offered: XOAUTH2.")
    no_auth = aiosmtplib.SMTPException(
        "The SMTP AUTH extension is not supported by this server. Try connecting via TLS "
        "(or STARTTLS)."
    )
    failure = classify_exception(no_auth, context=Context(offered_auth=()))
    assert failure.outcome == AUTH_FAILED
    assert failure.hint.endswith("no login method (no AUTH).")


TIMEOUT = aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")
WRONG_VERSION = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")


@pytest.mark.parametrize(
    ("exc", "port", "security", "hint"),
    [
        (TIMEOUT, 465, "starttls", "port_465"),
        (TIMEOUT, 465, "opportunistic", "port_465"),
        (TIMEOUT, 465, "none", "port_465"),
        (TIMEOUT, 465, "tls", "timeout"),
        (TIMEOUT, 587, "starttls", "timeout"),
        (WRONG_VERSION, 587, "tls", "port_587"),
        (WRONG_VERSION, 25, "tls", "port_587"),
        (WRONG_VERSION, 2525, "tls", "tls_mismatch"),
        (WRONG_VERSION, 465, "tls", "tls_mismatch"),
        (aiosmtplib.SMTPServerDisconnected("Unexpected EOF"), 465, "starttls", "port_465"),
        (aiosmtplib.SMTPServerDisconnected("Unexpected EOF"), 587, "starttls", "disconnected"),
    ],
)
def test_a_port_and_mode_mix_up_is_named(exc, port, security, hint):
    failure = classify_exception(
        exc, stage="CONNECT", context=Context(port=port, security=security)
    )
    assert failure.hint == HINTS[hint]


def test_port_hints_say_which_mode_to_choose():
    assert HINTS["port_465"].startswith("Port 465 expects implicit TLS")
    assert "SSL/TLS" in HINTS["port_465"] and "STARTTLS" in HINTS["port_587"]


def test_reset_names_the_port_mix_up_too():
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError:
            raise aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1:")  # noqa: B904
    except aiosmtplib.SMTPConnectError as exc:
        plain = classify_exception(exc, stage="CONNECT")
        mixed = classify_exception(exc, stage="CONNECT", context=Context(port=465, security="none"))
    assert plain.hint == HINTS["reset"]
    assert plain.text == "Error connecting to 127.0.0.1 on port 1: ConnectionResetError"
    assert mixed.hint == HINTS["port_465"]


def test_an_unresolvable_host_on_macos_wording():
    exc = aiosmtplib.SMTPConnectError("Error connecting: nodename nor servname provided")
    assert classify_exception(exc).hint == HINTS["unknown_host"]


# -- exception chains --------------------------------------------------------------------


def test_ssl_error_found_through_implicit_chaining():
    """Raised *during* the handling of an SSL error (``__context__``), not *from* it."""
    try:
        try:
            raise ssl.SSLError(1, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF")
        except ssl.SSLError:
            raise aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1")  # noqa: B904
    except aiosmtplib.SMTPConnectError as outer:
        failure = classify_exception(outer)
    assert failure.outcome == TLS_FAILED
    assert failure.hint == HINTS["tls_mismatch"]


def test_ssl_error_behind_an_explicit_cause_that_is_not_one():
    outer = aiosmtplib.SMTPConnectError("Error connecting")
    outer.__cause__ = OSError("wrapped")
    outer.__context__ = ssl.SSLError(1, "[SSL] record layer failure")
    assert classify_exception(outer).outcome == TLS_FAILED


def test_certificate_error_found_in_the_chain():
    outer = aiosmtplib.SMTPConnectError("Error connecting")
    outer.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert classify_exception(outer).hint == HINTS["certificate"]


def test_a_cyclic_chain_terminates():
    first = aiosmtplib.SMTPConnectError("Error connecting")
    second = OSError("second")
    first.__cause__ = second
    second.__context__ = first
    second.__cause__ = second
    failure = classify_exception(first)
    assert failure.outcome == CONNECTION_FAILED and failure.hint == HINTS["refused"]
    with_ssl = OSError("looped")
    with_ssl.__context__ = with_ssl
    with_ssl.__cause__ = ssl.SSLError(1, "handshake")
    assert classify_exception(with_ssl).outcome == TLS_FAILED


def test_greeting_refusal_keeps_the_normalised_text():
    exc = aiosmtplib.SMTPConnectResponseError(554, "5.7.1 No SMTP\n service here")
    failure = classify_exception(exc)
    assert (failure.code, failure.text) == (554, "5.7.1 No SMTP service here")


def test_recipients_refused_keeps_a_daily_quota():
    failure = classify_exception(_recipients_refused(452, "4.5.3 Daily recipient limit exceeded"))
    assert failure.daily_quota and failure.outcome == THROTTLED


def test_every_hint_is_a_sentence():
    for key, hint in HINTS.items():
        assert re.match(r"[A-Z][a-z ]", hint), key
        assert hint.endswith("."), key
        assert "  " not in hint, key


# -- the wire: the transport carries the server's EHLO AUTH list into the failure --------


def test_wire_wrong_mechanism_names_the_offered_ones(tls_files):
    with SMTPTestServer(mode="plain", users=USERS, mechanisms=("LOGIN",)) as server:
        config = ServerConfig(
            host="127.0.0.1",
            port=server.port,
            security=Security.NONE,
            auth_method=AuthMethod.PLAIN,
            username="alice",
            password=USERS["alice"],
            timeout=2,
        )
        failure, _summary = asyncio.run(check_server(config))
    assert failure is not None
    assert (failure.outcome, failure.code) == (AUTH_FAILED, 504)
    assert failure.hint.endswith("The server offered: LOGIN.")
    assert server.received == []


# -- each rule on its own (so no rule hides behind another) ------------------------------


@pytest.mark.parametrize(
    ("code", "text", "stage", "outcome", "hint"),
    [
        # Login replies known by their words alone, or by their code alone.
        (
            535,
            "Authentication unsuccessful, basic authentication is disabled.",
            "AUTH",
            AUTH_FAILED,
            "basic_auth_disabled",
        ),
        (
            535,
            "SmtpClientAuthentication is disabled for the Mailbox.",
            "AUTH",
            AUTH_FAILED,
            "basic_auth_disabled",
        ),
        (550, "5.7.139 Authentication unsuccessful", "AUTH", AUTH_FAILED, "basic_auth_disabled"),
        (550, "5.7.139 Authentication unsuccessful", "DATA", PERMANENT, "permanent"),
        (534, "Please log in with your web browser", "AUTH", AUTH_FAILED, "app_password"),
        (535, "5.7.9 Please log in with your web browser", "AUTH", AUTH_FAILED, "app_password"),
        # "is not allowed to send" is Mailgun's sandbox only as a 4xx.
        (
            550,
            "5.7.1 User is not allowed to send as this address",
            "MAIL",
            PERMANENT,
            "sender_refused",
        ),
        (500, "Domain is not allowed to send", "DATA", PERMANENT, "permanent"),
        (451, "Domain is not allowed to send", "DATA", TRANSIENT, "sender_not_allowed"),
        # Microsoft's throttle range starts at 4.7.500.
        (451, "4.7.499 Access denied", "DATA", TRANSIENT, "transient"),
        (451, "4.7.500 Access denied, please try again later", "DATA", THROTTLED, "throttled"),
        (451, "4.6.500 Conversion failed", "DATA", TRANSIENT, "transient"),
        (500, "Requested action not taken: mailbox is full", "RCPT", PERMANENT, "mailbox_full"),
    ],
)
def test_each_rule_alone(code, text, stage, outcome, hint):
    failure = classify_reply(code, text, stage=stage)
    assert (failure.outcome, failure.hint) == (outcome, HINTS[hint])


def test_outlook_com_is_microsoft_too():
    failure = classify_reply(
        535, "Authentication failed", stage="AUTH", context=Context(provider="outlook")
    )
    assert failure.hint == HINTS["microsoft_auth"]


@pytest.mark.parametrize(
    ("exc", "stage", "outcome", "hint"),
    [
        (
            InternalAddressError("mail.lan resolves to 10.0.0.2"),
            "CONNECT",
            CONNECTION_FAILED,
            "internal_host",
        ),
        (
            aiosmtplib.SMTPConnectError("certificate verify failed (CERTIFICATE_VERIFY_FAILED)"),
            "CONNECT",
            TLS_FAILED,
            "certificate",
        ),
        (
            aiosmtplib.SMTPConnectError("[SSL] unexpected eof"),
            "CONNECT",
            TLS_FAILED,
            "tls_mismatch",
        ),
        (
            aiosmtplib.SMTPConnectError("WRONG_VERSION_NUMBER"),
            "CONNECT",
            TLS_FAILED,
            "tls_mismatch",
        ),
        (
            aiosmtplib.SMTPConnectError("record layer failure"),
            "CONNECT",
            TLS_FAILED,
            "tls_mismatch",
        ),
        (
            aiosmtplib.SMTPSenderRefused(550, "5.7.1 Not permitted", "f@example.com"),
            "DATA",
            PERMANENT,
            "sender_refused",
        ),
        (
            aiosmtplib.SMTPResponseException(550, "5.1.1 unknown"),
            "RCPT",
            PERMANENT,
            "recipient_refused",
        ),
        (
            aiosmtplib.SMTPConnectResponseError(450, "4.3.2 Busy"),
            "CONNECT",
            CONNECTION_FAILED,
            "service_refused",
        ),
        (
            aiosmtplib.SMTPNotSupported("Server does not offer SMTPUTF8"),
            "DATA",
            CONFIG_ERROR,
            "not_supported",
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_each_exception_rule_alone(exc, stage, outcome, hint):
    failure = classify_exception(exc, stage=stage)
    assert (failure.outcome, failure.hint) == (outcome, HINTS[hint])


def test_a_reset_without_a_trailing_colon_keeps_its_text():
    exc = aiosmtplib.SMTPConnectError("Connection lost")
    exc.__context__ = ConnectionAbortedError("aborted")
    failure = classify_exception(exc)
    assert (failure.text, failure.hint) == ("Connection lost", HINTS["reset"])


def test_summary_without_a_code():
    failure = classify_exception(ConnectionRefusedError(111, "Connection refused"))
    assert failure.summary() == "[Errno 111] Connection refused"
    assert classify_reply(421, "4.7.0 Bye").summary() == "421 4.7.0 Bye"


# -- the alternatives of each pattern, one by one ----------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "stage", "outcome", "hint"),
    [
        # rspamd greylists after DATA: still no pause.
        (451, "4.7.1 Greylisted, please try again later", "DATA", TRANSIENT, "recipient_deferred"),
        (451, "4.7.1 Message throttled", "DATA", THROTTLED, "throttled"),
        # Microsoft's "send as" refusal comes after DATA.
        (
            550,
            "5.7.60 SMTP; Client does not have permissions to send as this sender",
            "DATA",
            PERMANENT,
            "sender_refused",
        ),
        (
            554,
            "5.7.1 <f@example.com>: Sender address rejected: Access denied",
            "DATA",
            PERMANENT,
            "sender_refused",
        ),
        (552, "Recipient is over quota", "RCPT", PERMANENT, "mailbox_full"),
    ],
)
def test_each_pattern_alternative(code, text, stage, outcome, hint):
    failure = classify_reply(code, text, stage=stage)
    assert (failure.outcome, failure.hint) == (outcome, HINTS[hint])


def test_outcome_values_are_stored_names():
    """The values are stored in the delivery log and the outbox: they must not change."""
    stored = {
        "SENT": "sent",
        "THROTTLED": "throttled",
        "TRANSIENT": "transient",
        "PERMANENT": "permanent",
        "AUTH_FAILED": "auth_failed",
        "TLS_FAILED": "tls_failed",
        "CONNECTION_FAILED": "connection_failed",
        "CONFIG_ERROR": "config_error",
        "CANCELLED": "cancelled",
    }
    assert {name: Outcome[name].value for name in stored} == stored


def test_failures_and_contexts_cannot_change():
    """One Failure is shared by every message a batch gives up on: it must stay as read."""
    failure = classify_reply(421, "4.7.0 Bye")
    with pytest.raises(dataclasses.FrozenInstanceError):
        failure.hint = ""  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Context().port = 25  # type: ignore[misc]


# -- what the user reads and catches, for the exceptions of a failed send ----------------


def _raised_during(outer: BaseException, inner: BaseException) -> BaseException:
    """``outer`` as Python chains it when raised *from* ``inner`` inside ``inner``'s
    handler, as aiosmtplib does (both ``__cause__`` and ``__context__`` are ``inner``)."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_a_tls_failure_behind_a_twice_linked_error_is_still_a_tls_failure():
    """aiosmtplib raises its error *from* the socket's, inside that error's handler: the
    socket's error is reached twice, and what lies behind it must still be read."""
    try:
        raise ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    except ssl.SSLError:
        try:
            raise ConnectionResetError("Connection reset by peer")  # noqa: TRY301
        except ConnectionResetError as reset:
            inner = reset
    exc = _raised_during(aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1"), inner)
    failure = classify_exception(exc, context=Context(port=465, security="starttls"))
    assert failure.outcome == TLS_FAILED
    assert failure.hint == HINTS["port_465"]


def test_an_error_without_a_message_is_named_by_its_class():
    failure = classify_exception(ConnectionRefusedError())
    assert failure.summary() == "ConnectionRefusedError"
    assert failure.hint == HINTS["refused"]


def test_an_internal_host_failure_quotes_the_address():
    failure = classify_exception(InternalAddressError("127.0.0.1 is a loopback address"))
    assert failure.outcome == CONNECTION_FAILED
    assert failure.summary() == "127.0.0.1 is a loopback address"


def test_the_first_refused_recipient_explains_a_refusal():
    exc = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(550, "5.1.1 No such user", "gone@example.com"),
            aiosmtplib.SMTPRecipientRefused(452, "4.2.2 Mailbox full", "full@example.com"),
        ]
    )
    failure = classify_exception(exc)
    assert (failure.outcome, failure.code) == (PERMANENT, 550)
    assert failure.summary() == "550 5.1.1 No such user (2 refused)"


@pytest.mark.parametrize(
    "exc",
    [
        aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(535, "Authentication unsuccessful", "b@example.com")]
        ),
        aiosmtplib.SMTPSenderRefused(535, "Authentication unsuccessful", "a@example.com"),
        aiosmtplib.SMTPResponseException(535, "Authentication unsuccessful"),
    ],
    ids=["at RCPT", "at MAIL", "at DATA"],
)
def test_a_login_refused_after_auth_gets_the_providers_hint(exc):
    """Microsoft 365 checks the login again at MAIL and RCPT: its refusal there names
    Microsoft's fix, not Gmail's App Passwords."""
    failure = classify_exception(exc, context=Context(provider="microsoft365"))
    assert failure.outcome == AUTH_FAILED
    assert failure.hint == HINTS["microsoft_auth"]


def test_an_auth_refusal_lists_the_offered_methods_whatever_the_exception():
    exc = aiosmtplib.SMTPResponseException(504, "5.5.4 Unrecognized authentication type")
    failure = classify_exception(exc, stage="AUTH", context=Context(offered_auth=("plain",)))
    assert failure.outcome == AUTH_FAILED
    assert failure.hint.endswith("The server offered: PLAIN.")


def test_a_refused_login_quotes_the_server():
    exc = aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Username and Password not accepted")
    failure = classify_exception(exc)
    assert failure.summary() == "535 5.7.8 Username and Password not accepted"
    assert failure.hint == HINTS["credentials"]


def test_an_unresolvable_host_on_macos_is_a_connection_failure_that_quotes_it():
    exc = aiosmtplib.SMTPConnectError("Error connecting: nodename nor servname provided")
    failure = classify_exception(exc)
    assert failure.outcome == CONNECTION_FAILED
    assert failure.summary() == "Error connecting: nodename nor servname provided"


def test_a_reset_after_a_message_ending_in_a_colon_and_space_is_named_once():
    exc = _raised_during(
        aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 465: "),
        ConnectionResetError(),
    )
    failure = classify_exception(exc)
    assert failure.outcome == CONNECTION_FAILED
    assert failure.summary() == "Error connecting to 127.0.0.1 on port 465: ConnectionResetError"
    assert failure.hint == HINTS["reset"]


def test_a_full_mailbox_by_its_enhanced_code_alone_is_not_called_too_big():
    """Dovecot says "Quota exceeded" with 552 (which is also the code for too big): the
    5.2.2 says it is the recipient's mailbox."""
    text = "5.2.2 <b@example.com> Quota exceeded (mailbox for user is full)"
    failure = classify_reply(552, text, stage="DATA")
    assert (failure.outcome, failure.hint) == (PERMANENT, HINTS["mailbox_full"])


def test_a_provider_preset_names_its_own_fix_for_rejected_credentials():
    refused = classify_reply(535, "5.7.8 Username and Password not accepted", stage="AUTH")
    assert hint_for_provider(refused, "sendgrid").startswith("SendGrid rejected the credentials")
    assert hint_for_provider(refused, "") == HINTS["credentials"]
    assert hint_for_provider(refused, "unknown-preset") == HINTS["credentials"]
    other = classify_reply(554, "5.7.1 Relay access denied", stage="RCPT")
    assert hint_for_provider(other, "sendgrid") == other.hint


def _caught_as(exc: BaseException) -> BaseException:
    """The error the backend raises for ``exc``'s failure (what a caller's ``except``
    sees)."""
    return send_error(SendFailed, "Sending failed", failure=classify_exception(exc))


@pytest.mark.parametrize(
    ("exc", "stock"),
    [
        # The SSL error two links down: raised during it, then wrapped.
        (
            _raised_during(
                aiosmtplib.SMTPConnectError("Error connecting"),
                _raised_during(
                    aiosmtplib.SMTPServerDisconnected("Unexpected EOF"),
                    ssl.SSLCertVerificationError(1, "certificate verify failed"),
                ),
            ),
            ssl.SSLCertVerificationError,
        ),
        (
            _raised_during(
                aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 1"),
                ConnectionRefusedError(111, "Connection refused"),
            ),
            ConnectionRefusedError,
        ),
        (
            _raised_during(
                aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 465"),
                ConnectionResetError(104, "Connection reset by peer"),
            ),
            ConnectionResetError,
        ),
        (
            _raised_during(
                aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1 on port 25"),
                aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"),
            ),
            smtplib.SMTPServerDisconnected,
        ),
        # aiosmtplib's own connection error with nothing behind it.
        (aiosmtplib.SMTPConnectError("Error connecting to 127.0.0.1"), ConnectionRefusedError),
        (
            aiosmtplib.SMTPSenderRefused(550, "5.7.1 Not allowed", "a@example.com"),
            smtplib.SMTPSenderRefused,
        ),
        (
            aiosmtplib.SMTPException("SMTP SIZE extension not supported"),
            smtplib.SMTPNotSupportedError,
        ),
        (aiosmtplib.SMTPException("Something odd"), smtplib.SMTPException),
        (ConnectionResetError(104, "Connection reset by peer"), ConnectionResetError),
    ],
    ids=[
        "tls",
        "refused",
        "reset",
        "closed-before-greeting",
        "connect-alone",
        "sender",
        "not-supported",
        "other-smtp",
        "socket",
    ],
)
def test_the_error_raised_is_caught_as_djangos_backend_would_raise_it(exc, stock):
    error = _caught_as(exc)
    assert isinstance(error, stock)
    assert isinstance(error, SendFailed)


def test_no_common_login_method_quotes_the_error():
    exc = aiosmtplib.SMTPException("No suitable authentication method found.")
    failure = classify_exception(exc, context=Context(offered_auth=("xoauth2",)))
    assert failure.outcome == AUTH_FAILED
    assert failure.summary() == "No suitable authentication method found."
