"""Drop-in for Django's SMTP backend, proved on the wire where Django's own tests cannot.

Django's SMTP backend tests run against ours unmodified (tests/conformance/run.py); the
few listed in tests/conformance/expected_failures.txt patch smtplib objects that a
backend speaking SMTP through aiosmtplib never calls. Here the same facts are checked
against real servers on 127.0.0.1: CRLF line endings in what the server receives, the
host, port and timeout ``open()`` uses, the login it performs, the client certificate a
TLS server sees; and the exception classes a caller of Django's backend already catches.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from typing import Any

import pytest
from django.core.mail import EmailMessage

from django_multismtp.backends import EmailBackend
from django_multismtp.exceptions import MultiSMTPError, SendFailed
from tests.conftest import USERS
from tests.mailers import direct_construction
from tests.smtp_servers import (
    CLIENT_CERT_NAME,
    Fault,
    SMTPTestServer,
    make_client_tls_files,
)

pytestmark = [pytest.mark.django_db, direct_construction, pytest.mark.usefixtures("outbox_off")]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(**kwargs: Any) -> EmailMessage:
    kwargs.setdefault("subject", "Subject")
    kwargs.setdefault("body", "Content")
    kwargs.setdefault("from_email", "from@example.com")
    kwargs.setdefault("to", ["to@example.com"])
    return EmailMessage(**kwargs)


def backend_for(server: SMTPTestServer, **options: Any) -> EmailBackend:
    return EmailBackend(host=server.host, port=server.port, **options)


# -- what Django's smtplib-patching tests check, on the wire --------------------------


def test_the_server_receives_crlf_line_endings_only(smtp_server):
    """Django's test_email_msg_uses_crlf / test_serialized_message_uses_crlf_line_ending
    (#23063): whatever line ends the body has, only CRLF goes on the wire."""
    body = "line one\nline two\r\nline three\rline four\n\nlast"
    assert backend_for(smtp_server).send_messages([message(body=body)]) == 1
    (received,) = smtp_server.wait_for(1)
    rest = received.data.replace(b"\r\n", b"")
    assert b"\r" not in rest and b"\n" not in rest
    assert received.data.count(b"\r\n") > 10  # headers and body lines, all CRLF


def test_open_connects_to_the_host_and_port(smtp_server, second_server):
    """Django's test_smtp_connection_uses_host_and_port: open() connects at once, to the
    configured host and port (and nowhere else), and close() ends that connection."""
    backend = backend_for(smtp_server)
    assert backend.connection is None
    assert backend.open() is True
    assert smtp_server.connections == 1 and second_server.connections == 0
    assert (backend.connection.host, backend.connection.port) == ("127.0.0.1", smtp_server.port)
    assert backend.open() is False  # already open
    assert backend.send_messages([message()]) == 1
    assert smtp_server.connections == 1  # the same connection sent the message
    backend.close()
    assert backend.connection is None
    assert smtp_server.received[0].rcpt_tos == ["to@example.com"]


def test_open_uses_the_timeout(smtp_server):
    """Django's test_smtp_connection_uses_timeout: the timeout bounds every wait of
    open(), and a time-out is the TimeoutError Django's backend raises."""
    smtp_server.add_fault(Fault.stall(5, stage="EHLO"))
    backend = backend_for(smtp_server, timeout=0.3)
    with pytest.raises(TimeoutError) as caught:
        backend.open()
    assert isinstance(caught.value, SendFailed)
    assert backend.connection is None


def test_timeout_defaults_to_djangos_none(settings, smtp_server):
    """EMAIL_TIMEOUT's default, None (no limit), not a timeout of our own."""
    backend = backend_for(smtp_server)
    assert backend.timeout is None
    assert backend.fallback.timeout is None
    backend.open()
    try:
        assert backend.connection.timeout is None
    finally:
        backend.close()
    assert backend_for(smtp_server, timeout=7).fallback.timeout == 7


def test_open_logs_in_with_username_and_password(starttls_server, tls_files, monkeypatch):
    """Django's test_auth_attempted: open() logs in with the credentials, before any
    message, over STARTTLS."""
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
    backend = backend_for(starttls_server, use_tls=True, username="alice", password="x")
    with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
        backend.open()
    assert caught.value.smtp_code == 535
    backend.password = USERS["alice"]
    assert backend.open() is True
    backend.close()
    attempts = [(login, ok) for _, login, ok in starttls_server.auth_attempts]
    # (Each mechanism the server offers is tried before a login counts as failed.)
    assert attempts[-1] == ("alice", True)
    assert set(attempts[:-1]) == {("alice", False)}
    assert starttls_server.received == []


def test_open_after_a_failed_login_connects_again(smtp_server):
    """Django's test_reopen_replaces_partial_connection: a failed open() leaves nothing
    open, and the next open() makes a new connection."""
    backend = backend_for(smtp_server, username="user", password="pw")
    for attempt in (1, 2):
        with pytest.raises(smtplib.SMTPNotSupportedError, match="SMTP AUTH extension"):
            backend.open()
        assert backend.connection is None
        assert smtp_server.connections == attempt


def test_the_client_certificate_is_presented(tls_files, tmp_path, monkeypatch):
    """Django's test_ssl_context_uses_ssl_certfile_and_keyfile: ssl_certfile and
    ssl_keyfile are loaded, and a TLS server that asks for a client certificate sees it."""
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
    client = make_client_tls_files(tmp_path / "client")
    with SMTPTestServer(mode="implicit", tls=tls_files, client_ca=client.cert_path) as server:
        backend = backend_for(
            server, use_ssl=True, ssl_certfile=client.cert_path, ssl_keyfile=client.key_path
        )
        assert backend.send_messages([message()]) == 1
        assert len(server.wait_for(1)) == 1
        [certificate] = server.client_certificates
        subject = dict(item for part in certificate["subject"] for item in part)
        assert subject["commonName"] == CLIENT_CERT_NAME
        # Without it the same server refuses the session (with TLS 1.3 after the
        # handshake, so the client may only see the connection end), as for Django's.
        refused = (ssl.SSLError, ConnectionResetError, smtplib.SMTPServerDisconnected)
        with pytest.raises(refused) as caught:
            backend_for(server, use_ssl=True, timeout=5).open()
        assert isinstance(caught.value, SendFailed)
        assert server.received[1:] == []


def test_a_subclass_ssl_context_is_used(tls_files, implicit_server):
    """Django documents overriding ssl_context (e.g. to trust a private CA): honoured."""

    class PrivateCABackend(EmailBackend):
        @property
        def ssl_context(self) -> ssl.SSLContext:  # type: ignore[override]
            return tls_files.client_context()

    backend = PrivateCABackend(
        host=implicit_server.host,
        port=implicit_server.port,
        use_ssl=True,
        username="bob",
        password=USERS["bob"],
    )
    assert backend.send_messages([message()]) == 1
    assert implicit_server.wait_for(1)[0].tls


# -- the exceptions callers of Django's backend catch -------------------------------


def test_wrong_password_is_an_smtp_authentication_error_and_send_failed(
    starttls_server, tls_files, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.cert_path)
    backend = backend_for(starttls_server, use_tls=True, username="alice", password="wrong")
    with pytest.raises(SendFailed) as caught:
        backend.send_messages([message()])
    error = caught.value
    assert isinstance(error, smtplib.SMTPAuthenticationError)
    assert (error.smtp_code, error.account) == (535, "fallback")
    assert "App Password" in error.hint
    assert error.failure.outcome == "auth_failed"


def test_every_recipient_refused_is_smtp_recipients_refused(smtp_server):
    smtp_server.add_fault(Fault.reply(550, "5.1.1 No such user", stage="RCPT", times=None))
    with pytest.raises(smtplib.SMTPRecipientsRefused) as caught:
        backend_for(smtp_server).send_messages([message(to=["a@example.com", "b@example.com"])])
    error = caught.value
    assert isinstance(error, SendFailed)
    assert set(error.recipients) == {"a@example.com", "b@example.com"}
    assert error.recipients["a@example.com"][0] == 550
    assert error.hint


def test_sender_refused_is_smtp_sender_refused(smtp_server):
    smtp_server.add_fault(Fault.reply(553, "5.7.1 Sender not allowed", stage="MAIL"))
    with pytest.raises(smtplib.SMTPSenderRefused) as caught:
        backend_for(smtp_server).send_messages([message(from_email="Me <me@example.com>")])
    assert isinstance(caught.value, SendFailed)
    assert (caught.value.smtp_code, caught.value.sender) == (553, "me@example.com")


def test_refused_content_is_smtp_data_error(smtp_server):
    smtp_server.add_fault(Fault.reply(554, "5.6.0 Content rejected"))
    with pytest.raises(smtplib.SMTPDataError) as caught:
        backend_for(smtp_server).send_messages([message()])
    assert isinstance(caught.value, SendFailed) and caught.value.smtp_code == 554


def test_dropped_connection_is_smtp_server_disconnected(smtp_server):
    smtp_server.add_fault(Fault.disconnect())
    with pytest.raises(smtplib.SMTPServerDisconnected) as caught:
        backend_for(smtp_server).send_messages([message()])
    assert isinstance(caught.value, SendFailed)


def test_nothing_listening_is_connection_refused_error():
    backend = EmailBackend(host="127.0.0.1", port=free_port())
    with pytest.raises(ConnectionRefusedError) as caught:
        backend.send_messages([message()])
    assert isinstance(caught.value, SendFailed) and caught.value.account == "fallback"
    # open() raises the same class, and fail_silently swallows it, as Django's does.
    with pytest.raises(ConnectionRefusedError):
        backend.open()
    backend.fail_silently = True
    assert backend.open() is None and backend.connection is None


def test_untrusted_certificate_is_ssl_cert_verification_error(implicit_server, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    backend = backend_for(implicit_server, use_ssl=True, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        backend.send_messages([message()])
    assert isinstance(caught.value, SendFailed)
    assert caught.value.failure.outcome == "tls_failed"


def test_a_batch_with_several_failures_raises_the_first_and_carries_all(smtp_server):
    smtp_server.add_fault(Fault.reply(554, "5.6.0 Content rejected", on_message=1))
    smtp_server.add_fault(Fault.reply(550, "5.1.1 No such user", stage="RCPT", on_message=3))
    emails = [message(subject="1"), message(subject="2"), message(subject="3")]
    with pytest.raises(MultiSMTPError) as caught:
        backend_for(smtp_server).send_messages(emails)
    error = caught.value
    assert isinstance(error, smtplib.SMTPDataError)  # the first failure's class
    assert [failure.code for _, failure in error.failures] == [554, 550]
    assert error.sent_count == 1
    # One class per pair, created once: the same failure twice gives the same class.
    smtp_server.add_fault(Fault.reply(554, "5.6.0 Content rejected"))
    with pytest.raises(MultiSMTPError) as again:
        backend_for(smtp_server).send_messages([message()])
    assert type(again.value) is type(error)


def without_mailers(settings: Any) -> None:
    """Django's compatibility configuration (EMAIL_*), the only one before 6.1."""
    if hasattr(settings, "MAILERS"):
        del settings.MAILERS


def test_stock_attributes_and_defaults(settings):
    without_mailers(settings)
    backend = EmailBackend()
    assert (backend.host, backend.port) == ("localhost", 25)
    assert (backend.username, backend.password) == ("", "")
    assert (backend.use_tls, backend.use_ssl, backend.timeout) == (False, False, None)
    assert (backend.ssl_certfile, backend.ssl_keyfile, backend.connection) == (None, None, None)
    assert isinstance(backend.ssl_context, ssl.SSLContext)
    assert backend.prep_address("Zoë <zoe@exämple.com>") == "zoe@xn--exmple-cua.com"


def test_tls_with_ssl_is_djangos_value_error(settings):
    without_mailers(settings)
    with pytest.raises(ValueError, match="mutually exclusive"):
        EmailBackend(host="127.0.0.1", use_tls=True, use_ssl=True)
