"""Self-test of tests/smtp_servers.py, with real clients (aiosmtplib, and smtplib as Django uses).

Plain functions, no Django: if these fail, the helpers are broken, not the package.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from tests.smtp_servers import Fault, SMTPTestServer, TLSFiles, drop_client, make_tls_files

USERS = {"alice": "s3cret", "bob": "hunter2"}
THROTTLE = "4.7.0 Throttling failure: Maximum sending rate exceeded"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def plain() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as server:
        yield server


def make_message(n: int = 1) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sender@example.com"
    message["To"] = "rcpt@example.com"
    message["Subject"] = f"message {n}"
    message.set_content(f"body {n}\n")
    return message


@contextlib.asynccontextmanager
async def client(server: SMTPTestServer, **kwargs: Any) -> AsyncIterator[aiosmtplib.SMTP]:
    """``async with client(server) as smtp``: aiosmtplib's own context (connect, QUIT),
    and then the connection really closed before ``asyncio.run()`` ends its loop."""
    kwargs.setdefault("timeout", 5)
    kwargs.setdefault("start_tls", False)
    smtp = aiosmtplib.SMTP(hostname=server.host, port=server.port, **kwargs)
    transport = None
    try:
        async with smtp:
            try:
                yield smtp
            finally:
                transport = smtp.transport  # after STARTTLS, the TLS one
    finally:
        await drop_client(smtp, transport)


def send(server: SMTPTestServer, *messages: EmailMessage, **kwargs: Any) -> None:
    """Send messages over one connection."""

    async def run() -> None:
        async with client(server, **kwargs) as smtp:
            for message in messages:
                await smtp.send_message(message)

    asyncio.run(run())


# -- certificate -----------------------------------------------------------------------


def test_certificate_verifies_even_with_strict_x509(tls: TLSFiles) -> None:
    """Newer Pythons turn on VERIFY_X509_STRICT by default; the cert must survive it."""
    context = tls.client_context()
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    with SMTPTestServer(mode="implicit", tls=tls) as server:
        for name in ("127.0.0.1", "localhost"):
            with smtplib.SMTP_SSL(name, server.port, context=context, timeout=5) as smtp:
                assert smtp.noop()[0] == 250


def test_ssl_cert_file_makes_default_context_trust_the_cert(
    tls: TLSFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How Django's backend (ssl.create_default_context()) can be made to trust the cert."""
    monkeypatch.setenv("SSL_CERT_FILE", tls.cert_path)
    with SMTPTestServer(mode="starttls", tls=tls) as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            smtp.starttls(context=ssl.create_default_context())
            smtp.send_message(make_message())
        assert server.wait_for(1)[0].tls


# -- delivery in each mode -------------------------------------------------------------


def test_plain_without_auth_delivers(plain: SMTPTestServer) -> None:
    send(plain, make_message())
    [received] = plain.wait_for(1)
    assert received.mail_from == "sender@example.com"
    assert received.rcpt_tos == ["rcpt@example.com"]
    assert received.login is None
    assert received.port == plain.port
    assert not received.tls
    assert received.message()["Subject"] == "message 1"
    assert received.message().get_content() == "body 1\n"
    assert plain.connections == 1


def test_plain_server_without_users_offers_no_auth(plain: SMTPTestServer) -> None:
    async def run() -> None:
        async with client(plain) as smtp:
            await smtp.ehlo()
            assert not smtp.supports_extension("auth")
            with pytest.raises(aiosmtplib.SMTPException):
                await smtp.login("alice", "s3cret")

    asyncio.run(run())


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_starttls_auth_delivers(tls: TLSFiles, mechanism: str) -> None:
    with SMTPTestServer(mode="starttls", tls=tls, users=USERS, auth_required=True) as server:

        async def run() -> None:
            async with client(server, start_tls=True, tls_context=tls.client_context()) as smtp:
                await smtp.ehlo()  # aiosmtplib does not repeat EHLO after STARTTLS by itself
                assert smtp.supports_extension("auth")
                method = {
                    "PLAIN": smtp.auth_plain,
                    "LOGIN": smtp.auth_login,
                    "CRAM-MD5": smtp.auth_crammd5,
                }[mechanism]
                await method("alice", "s3cret")
                await smtp.send_message(make_message())

        asyncio.run(run())
        [received] = server.wait_for(1)
        assert received.login == "alice"
        assert received.tls
        assert server.auth_attempts == [(mechanism, "alice", True)]


def test_starttls_offers_auth_only_after_starttls(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="starttls", tls=tls, users=USERS) as server:

        async def run() -> None:
            async with client(server) as smtp:
                await smtp.ehlo()
                assert smtp.supports_extension("starttls")
                assert not smtp.supports_extension("auth")
                await smtp.starttls(tls_context=tls.client_context())
                await smtp.ehlo()
                assert smtp.supports_extension("auth")

        asyncio.run(run())


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_wrong_password_gets_535_quickly(tls: TLSFiles, mechanism: str) -> None:
    with SMTPTestServer(mode="starttls", tls=tls, users=USERS) as server:

        async def run() -> None:
            async with client(server, start_tls=True, tls_context=tls.client_context()) as smtp:
                await smtp.ehlo()
                method = {
                    "PLAIN": smtp.auth_plain,
                    "LOGIN": smtp.auth_login,
                    "CRAM-MD5": smtp.auth_crammd5,
                }[mechanism]
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                    await method("alice", "wrong")
                assert info.value.code == 535

        started = time.monotonic()
        asyncio.run(run())
        assert time.monotonic() - started < 2
        assert server.auth_attempts == [(mechanism, "alice", False)]


def test_implicit_tls_with_auth_delivers(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="implicit", tls=tls, users=USERS, auth_required=True) as server:
        send(
            server,
            make_message(),
            use_tls=True,
            tls_context=tls.client_context(),
            username="bob",
            password="hunter2",
        )
        [received] = server.wait_for(1)
        assert received.login == "bob"
        assert received.tls


def test_mechanisms_subset(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="implicit", tls=tls, users=USERS, mechanisms=("LOGIN",)) as server:

        async def run() -> None:
            async with client(server, use_tls=True, tls_context=tls.client_context()) as smtp:
                await smtp.ehlo()
                assert smtp.server_auth_methods == ["login"]
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                    await smtp.auth_plain("alice", "s3cret")
                assert info.value.code == 504

        asyncio.run(run())


def test_smtplib_like_django(tls: TLSFiles) -> None:
    """smtplib (what Django uses) picks CRAM-MD5 first; also works over SMTP_SSL."""
    with SMTPTestServer(mode="starttls", tls=tls, users=USERS, require_starttls=True) as server:
        with smtplib.SMTP(server.host, server.port, timeout=5) as smtp:
            smtp.starttls(context=tls.client_context())
            smtp.login("alice", "s3cret")
            smtp.send_message(make_message())
        assert server.auth_attempts == [("CRAM-MD5", "alice", True)]
        assert server.wait_for(1)[0].login == "alice"
    with SMTPTestServer(mode="implicit", tls=tls, users=USERS) as server:
        with smtplib.SMTP_SSL(server.host, server.port, context=tls.client_context()) as smtp:
            smtp.login("bob", "hunter2")
            smtp.send_message(make_message())
        assert server.wait_for(1)[0].login == "bob"


# -- refusals ----------------------------------------------------------------------------


def test_require_starttls_refuses_mail_before_starttls(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="starttls", tls=tls, require_starttls=True) as server:

        async def run() -> None:
            async with client(server) as smtp:
                with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
                    await smtp.mail("sender@example.com")
                assert info.value.code == 530
                assert info.value.message == "5.7.0 Must issue a STARTTLS command first"

        asyncio.run(run())
        assert server.received == []


def test_auth_required_refuses_mail_before_auth() -> None:
    with SMTPTestServer(users=USERS, auth_required=True) as server:

        async def run() -> None:
            async with client(server) as smtp:
                with pytest.raises(aiosmtplib.SMTPSenderRefused) as info:
                    await smtp.mail("sender@example.com")
                assert info.value.code == 530
                assert info.value.message == "5.7.0 Authentication required"
                await smtp.login("alice", "s3cret")
                await smtp.send_message(make_message())

        asyncio.run(run())
        assert server.wait_for(1)[0].login == "alice"


# -- faults ------------------------------------------------------------------------------


def test_reply_fault_on_second_message_only(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply(454, THROTTLE, on_message=2))

    async def run() -> list[int]:
        codes = []
        async with client(plain) as smtp:
            for n in (1, 2, 3):
                try:
                    await smtp.send_message(make_message(n))
                    codes.append(250)
                except aiosmtplib.SMTPDataError as error:
                    assert error.message == THROTTLE
                    codes.append(error.code)
        return codes

    assert asyncio.run(run()) == [250, 454, 250]
    assert [r.message()["Subject"] for r in plain.wait_for(2)] == ["message 1", "message 3"]


def test_reply_fault_counts_messages_across_connections(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply(451, "4.3.0 Try later", on_message=2))
    send(plain, make_message(1))
    with pytest.raises(aiosmtplib.SMTPDataError):
        send(plain, make_message(2))
    send(plain, make_message(3))
    assert len(plain.wait_for(2)) == 2
    assert plain.connections == 3


def test_reply_fault_times_and_forever(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply(452, "4.3.1 Full", times=2, stage="MAIL"))
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPSenderRefused):
            send(plain, make_message())
    send(plain, make_message())
    plain.add_fault(Fault.reply(550, "5.1.1 No such user", times=None, stage="RCPT"))
    for _ in range(2):
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            send(plain, make_message())
    plain.clear_faults()
    send(plain, make_message())
    assert len(plain.wait_for(2)) == 2


def test_rcpt_fault_for_one_recipient(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply(550, "5.1.1 No such user", stage="RCPT", recipient="b@x.test"))

    async def run() -> dict[str, Any]:
        async with client(plain) as smtp:
            errors, _ = await smtp.sendmail("s@x.test", ["a@x.test", "b@x.test"], b"Subject: x\r\n")
            return errors

    errors = asyncio.run(run())
    assert errors["b@x.test"].code == 550
    assert plain.wait_for(1)[0].rcpt_tos == ["a@x.test"]


def test_reply_then_disconnect(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply_then_disconnect(421, "4.7.0 Try again later"))

    async def run() -> None:
        async with client(plain) as smtp:
            with pytest.raises(aiosmtplib.SMTPResponseException) as info:
                await smtp.send_message(make_message())
            assert info.value.code == 421
            assert not smtp.is_connected

    asyncio.run(run())
    assert plain.received == []
    send(plain, make_message())  # the fault is used up; the server still works
    plain.wait_for(1)


def test_reply_then_disconnect_at_ehlo(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.reply_then_disconnect(421, "4.3.2 Shutting down", stage="EHLO"))
    with pytest.raises(aiosmtplib.SMTPHeloError) as info:
        send(plain, make_message())
    assert info.value.code == 421
    send(plain, make_message())
    plain.wait_for(1)


@pytest.mark.parametrize("stage", ["EHLO", "MAIL", "RCPT", "DATA"])
def test_disconnect(plain: SMTPTestServer, stage: str) -> None:
    plain.add_fault(Fault.disconnect(stage=stage))
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(plain, make_message())
    assert plain.received == []
    send(plain, make_message())
    plain.wait_for(1)


@pytest.mark.parametrize("action", ["disconnect", "stall"])
def test_auth_stage_disconnect_and_stall(action: str) -> None:
    with SMTPTestServer(users=USERS) as server:
        if action == "disconnect":
            server.add_fault(Fault.disconnect(stage="AUTH"))
            expected: type[Exception] = aiosmtplib.SMTPServerDisconnected
        else:
            server.add_fault(Fault.stall(1, stage="AUTH"))
            expected = aiosmtplib.SMTPTimeoutError
        with pytest.raises(expected):
            send(server, make_message(), username="alice", password="s3cret", timeout=0.3)
        assert server.auth_attempts == []
        send(server, make_message(), username="alice", password="s3cret")
        assert server.wait_for(1)[0].login == "alice"


def test_disconnect_at_data_over_tls(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="implicit", tls=tls) as server:
        server.add_fault(Fault.disconnect())
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            send(server, make_message(), use_tls=True, tls_context=tls.client_context())
        assert server.received == []


def test_stall_trips_client_timeout(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.stall(20))
    started = time.monotonic()
    with pytest.raises(aiosmtplib.SMTPTimeoutError):
        send(plain, make_message(), timeout=0.5)
    assert time.monotonic() - started < 10  # the client's timeout, not the server's stall
    assert plain.received == []


def test_stall_then_answers() -> None:
    with SMTPTestServer() as server:
        server.add_fault(Fault.stall(0.2, stage="MAIL"))
        started = time.monotonic()
        send(server, make_message())
        assert time.monotonic() - started >= 0.2
        server.wait_for(1)


def test_gather_answers_sessions_that_are_there_together(plain: SMTPTestServer) -> None:
    plain.add_fault(Fault.gather(3, stage="MAIL"))

    async def one(n: int) -> None:
        async with client(plain) as smtp:
            await smtp.send_message(make_message(n))

    async def run() -> None:
        await asyncio.gather(*(one(n) for n in range(3)))

    asyncio.run(run())
    assert sorted(str(r.message()["Subject"]) for r in plain.wait_for(3)) == [
        "message 0",
        "message 1",
        "message 2",
    ]
    assert plain.peak_connections == 3


def test_gather_refuses_a_session_that_waits_alone(plain: SMTPTestServer) -> None:
    # A client that sends one message after the other never fills the meeting point.
    plain.add_fault(Fault.gather(2, stage="MAIL", seconds=0.2))
    with pytest.raises(aiosmtplib.SMTPSenderRefused, match="Gathered 1 of 2"):
        send(plain, make_message())
    assert plain.received == []


def test_auth_then_drop(tls: TLSFiles) -> None:
    with SMTPTestServer(mode="starttls", tls=tls, users=USERS) as server:
        server.add_fault(Fault.auth_then_drop())

        async def run() -> None:
            async with client(server, start_tls=True, tls_context=tls.client_context()) as smtp:
                response = await smtp.login("alice", "s3cret")
                assert response.code == 235
                with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                    await smtp.send_message(make_message())

        asyncio.run(run())
        assert server.received == []
        assert server.auth_attempts == [("CRAM-MD5", "alice", True)]


def test_auth_stage_reply() -> None:
    with SMTPTestServer(users=USERS) as server:
        server.add_fault(Fault.reply(454, "4.7.0 Temporary authentication failure", stage="AUTH"))

        async def run() -> None:
            async with client(server) as smtp:
                await smtp.ehlo()
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as info:
                    await smtp.auth_plain("alice", "s3cret")
                assert info.value.code == 454
                await smtp.auth_plain("alice", "s3cret")

        asyncio.run(run())


# -- bookkeeping -------------------------------------------------------------------------


def test_wait_for(plain: SMTPTestServer) -> None:
    sender = threading.Thread(target=send, args=(plain, make_message(1), make_message(2)))
    sender.start()
    try:
        assert len(plain.wait_for(2)) == 2
    finally:
        sender.join()
    with pytest.raises(TimeoutError):
        plain.wait_for(3, timeout=0.1)


def test_restart_keeps_port_and_records() -> None:
    server = SMTPTestServer().start()
    try:
        port = server.port
        send(server, make_message())
        server.stop()
        with pytest.raises(OSError):
            send(server, make_message())
        server.start()
        assert server.port == port
        send(server, make_message())
        assert len(server.wait_for(2)) == 2
        assert server.connections == 2
    finally:
        server.stop()


def test_stop_does_not_wait_for_idle_clients(tls: TLSFiles) -> None:
    server = SMTPTestServer(mode="implicit", tls=tls).start()
    smtp = smtplib.SMTP_SSL(server.host, server.port, context=tls.client_context(), timeout=5)
    try:
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
    finally:
        smtp.close()


def test_data_size_limit() -> None:
    with SMTPTestServer(data_size_limit=100) as server:
        message = make_message()
        message.set_content("x" * 500)
        with pytest.raises(aiosmtplib.SMTPResponseException) as info:
            send(server, message)
        assert info.value.code == 552


def test_bad_configuration_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SMTPTestServer(mode="starttls")
    with pytest.raises(ValueError):
        SMTPTestServer(require_starttls=True)
    with pytest.raises(ValueError):
        SMTPTestServer(mechanisms=("XOAUTH2",), users=USERS)
    with pytest.raises(ValueError):
        Fault.reply(454, "x", stage="QUIT")
    with pytest.raises(ValueError):
        Fault.reply(99, "x")


# -- break_tls (appended with the fault) --------------------------------------------------


def send_over_tls(server: SMTPTestServer, tls: TLSFiles, message: EmailMessage) -> None:
    """Send with smtplib, in the server's TLS mode.

    smtplib rather than ``send()``: its blocking sockets are closed by the time it returns
    or raises, while an aiosmtplib TLS connection may still be shutting down when
    ``asyncio.run()`` closes its loop, and then warns (an error here) as unclosed.
    """
    context = tls.client_context()
    if server.mode == "implicit":
        smtp = smtplib.SMTP_SSL(server.host, server.port, context=context, timeout=5)
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=5)
    with smtp:
        if server.mode == "starttls":
            smtp.starttls(context=context)
        smtp.send_message(message)


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        # Aborted at the ClientHello: the connection ends mid-handshake.
        ("implicit", "EOF occurred in violation of protocol"),
        # Bytes that are not TLS where the ServerHello belongs.
        ("starttls", "WRONG_VERSION_NUMBER"),
    ],
)
def test_break_tls_fails_the_handshake_once(tls: TLSFiles, mode: str, error: str) -> None:
    with SMTPTestServer(mode=mode, tls=tls) as server:
        server.add_fault(Fault.break_tls())
        with pytest.raises(ssl.SSLError, match=error):
            send_over_tls(server, tls, make_message(1))
        assert server.received == []
        send_over_tls(server, tls, make_message(2))  # used up: the next handshake succeeds
        [received] = server.wait_for(1)
        assert received.tls and received.message()["Subject"] == "message 2"
        assert server.connections == 2


def test_break_tls_only_at_the_tls_stage() -> None:
    assert Fault.break_tls().stage == "TLS"
    with pytest.raises(ValueError, match="break_tls"):
        Fault("break_tls", stage="DATA")
    with pytest.raises(ValueError, match="break_tls"):
        Fault.disconnect(stage="TLS")
