"""Classifying SMTP replies and transport errors: outcome, daily quota and hint.

Every decision after a failure (back off, fail over, give up) and every hint a person
reads comes from ``django_multismtp.replies``; the reply texts below are the ones the
big providers really send. The last part classifies exceptions raised by aiosmtplib
against real servers on 127.0.0.1 for the classic port/mode mix-ups.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import aiosmtplib
import pytest

from django_multismtp.replies import (
    HINTS,
    Failure,
    Outcome,
    classify_exception,
    classify_reply,
)
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
    # 450/451/452: throttled only when the text says so.
    reply(450, "4.2.1 The user you are trying to contact is receiving mail at a rate that "
          "prevents additional messages from being delivered.", THROTTLED, "throttled",
          stage="RCPT"),
    reply(451, "4.7.1 Please try again later", THROTTLED, "throttled"),
    reply(451, "4.3.0 Mail server temporarily rejected message.", TRANSIENT, "transient"),
    reply(450, "4.2.0 Mailbox unavailable", TRANSIENT, "transient", stage="RCPT"),
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
    assert failure.hint == (HINTS[hint] if hint else "")
    assert_hint_rule(failure)


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
        THROTTLED,
        "throttled",
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
