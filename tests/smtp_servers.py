"""Real, in-process SMTP servers for the test suite, built on aiosmtpd.

Why real servers instead of mocks: the package under test talks to SMTP servers through
``smtplib`` (via Django's SMTP backend).  Mocking smtplib would only test our assumptions
about smtplib; a real server on 127.0.0.1 exercises the whole protocol: EHLO, STARTTLS or
implicit TLS, AUTH (PLAIN, LOGIN, CRAM-MD5), MAIL/RCPT/DATA, and the failures that make a
multi-server setup interesting (throttling replies, dropped connections, stalls, broken
TLS handshakes).

Everything binds to 127.0.0.1 only.  Each :class:`SMTPTestServer` runs its own asyncio loop
in a thread (aiosmtpd's :class:`~aiosmtpd.controller.Controller`); everything the test thread
reads (``received``, ``auth_attempts``, ``connections``) is updated under a lock.

Typical use::

    tls = make_tls_files(tmp_path)
    with SMTPTestServer(mode="starttls", tls=tls, users={"user": "secret"}) as server:
        server.add_fault(Fault.reply(454, "4.7.0 Throttling failure", on_message=2))
        ...  # send mail to server.host:server.port
        [first] = server.wait_for(1)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import email
import email.message
import email.policy
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, AnyStr, Final, NoReturn

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    auth_mechanism,
    syntax,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "Fault",
    "drop_client",
    "ReceivedMessage",
    "SMTPTestServer",
    "TLSFiles",
    "make_client_tls_files",
    "make_tls_files",
]

# aiosmtpd logs "Session.login_data is deprecated" at WARNING on every successful AUTH (its
# own code sets the deprecated attribute); that is noise in test output, not a signal.
logging.getLogger("mail.log").setLevel(logging.ERROR)

LOCALHOST: Final = "127.0.0.1"

MODES: Final = ("plain", "starttls", "implicit")
SUPPORTED_MECHANISMS: Final = ("PLAIN", "LOGIN", "CRAM-MD5")
#: Offered only by a server given ``bearer_check`` (an OAuth 2.0 resource server).
BEARER_MECHANISMS: Final = ("XOAUTH2", "OAUTHBEARER")

# Stages at which a fault can fire.  "EHLO" covers HELO too: the client has seen the
# greeting and is waiting for the EHLO/HELO answer.  "AUTH" fires once the AUTH command
# names a known mechanism, before any challenge.  "TLS" is the TLS handshake (on accept
# in implicit mode, after the 220 to STARTTLS otherwise); only ``break_tls`` acts there.
STAGES: Final = ("EHLO", "AUTH", "MAIL", "RCPT", "DATA", "TLS")

# aiosmtpd's own text for require_starttls lacks the enhanced status code real servers send.
_AIOSMTPD_STARTTLS_REFUSAL: Final = "530 Must issue a STARTTLS command first"
STARTTLS_REFUSAL: Final = "530 5.7.0 Must issue a STARTTLS command first"
AUTH_REQUIRED_REFUSAL: Final = "530 5.7.0 Authentication required"
AUTH_NOT_OFFERED: Final = "502 5.5.1 AUTH not supported"


# --------------------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    """Paths of a throw-away self-signed certificate (no CA) for 127.0.0.1 and localhost.

    Files rather than in-memory objects because both ``ssl`` and Django's SMTP backend
    (``EMAIL_SSL_CERTFILE``, or ``SSL_CERT_FILE`` for ``ssl.create_default_context()``)
    only take paths.
    """

    cert_path: str
    key_path: str

    def server_context(self) -> ssl.SSLContext:
        """Context for the server side: presents the certificate, asks nothing of clients."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """Verifying client context that trusts exactly this certificate.

        Hostname checking stays on: the certificate names both ``localhost`` and
        ``127.0.0.1``, so a client that verifies properly must succeed.
        """
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cert_path)


def make_tls_files(
    directory: str | os.PathLike[str], *, valid_for: datetime.timedelta | None = None
) -> TLSFiles:
    """Write a fresh EC P-256 self-signed server certificate and key into ``directory``.

    ``valid_for``: how long the certificate stays valid from now (30 days by default;
    a few days for tests of expiry warnings).

    Generated at test time (milliseconds for EC) so nothing secret or expiring is committed.
    The extensions are chosen to also pass OpenSSL's X509_STRICT checks, which newer Pythons
    enable by default in ``ssl.create_default_context()``: a non-CA leaf (CA:FALSE,
    digitalSignature only, serverAuth) with subject/authority key identifiers.
    """
    return _self_signed(
        directory,
        common_name="localhost",
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        alt_names=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOCALHOST))],
        valid_for=valid_for or datetime.timedelta(days=30),
        stem="smtp-test",
    )


def make_client_tls_files(directory: str | os.PathLike[str]) -> TLSFiles:
    """A throw-away self-signed *client* certificate (clientAuth), CN ``multismtp-client``.

    For servers that ask the client for a certificate (``client_ca=``): the server trusts
    exactly this certificate, the client presents it (``ssl_certfile``/``ssl_keyfile``).
    """
    return _self_signed(
        directory,
        common_name=CLIENT_CERT_NAME,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        alt_names=[],
        valid_for=datetime.timedelta(days=30),
        stem="smtp-client",
    )


def _self_signed(
    directory: str | os.PathLike[str],
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    alt_names: list[x509.GeneralName],
    valid_for: datetime.timedelta,
    stem: str,
) -> TLSFiles:
    """One non-CA EC P-256 leaf for ``usage``, written as ``<stem>-cert.pem``/``-key.pem``."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + valid_for)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = (
        builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = folder / f"{stem}-cert.pem"
    key_path = folder / f"{stem}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return TLSFiles(cert_path=str(cert_path), key_path=str(key_path))


CLIENT_CERT_NAME: Final = "multismtp-client"


# --------------------------------------------------------------------------------------
# What the server saw
# --------------------------------------------------------------------------------------


@dataclass
class ReceivedMessage:
    """One message the server accepted (answered 250 to the end of DATA).

    ``port`` is the server's listening port, so messages gathered from several servers can
    still be told apart.  ``login`` is the AUTH identity of the session, if any.  ``tls``
    (an addition) says whether the message travelled over TLS (STARTTLS or implicit).
    """

    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    login: str | None
    port: int
    tls: bool = False

    def message(self) -> email.message.EmailMessage:
        """The data parsed with the modern email API, for asserting on headers and body.

        ``data`` keeps the wire form (CRLF line ends); the parsed message gets plain ``\\n``
        so that ``get_content()`` compares equal to the text that was sent.
        """
        return email.message_from_bytes(
            self.data.replace(b"\r\n", b"\n"), policy=email.policy.default
        )


async def drop_client(client: Any, transport: Any = None) -> None:
    """Close an aiosmtplib client at once and let its loop finish closing it.

    For tests that drive aiosmtplib in ``asyncio.run()``: a socket whose close was only
    scheduled (or a TLS shutdown waiting for the peer) would outlive the loop, and its
    ResourceWarning would fail a later test, or the whole run at exit. ``transport``: the
    one to abort when the client has already forgotten it (after QUIT).
    """
    transport = transport if transport is not None else client.transport
    client.close()
    if transport is not None:
        transport.abort()
    for _ in range(3):
        await asyncio.sleep(0)  # no wall-clock wait: runs the connection-lost callbacks


# --------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------

_ACTIONS: Final = (
    "reply",
    "disconnect",
    "stall",
    "auth_then_drop",
    "reply_then_disconnect",
    "break_tls",
    "gather",
)

# What a break_tls fault sends after 220 to STARTTLS, where a TLS ServerHello belongs.
NOT_TLS: Final = b"This is not a TLS ServerHello.\r\n"


@dataclass(frozen=True)
class Fault:
    """A misbehaviour to inject, declared on a server before or during a test.

    A fault is an immutable description; the server keeps its own countdown when it is
    added, so one ``Fault`` may be added to several servers.

    Matching: messages are numbered per server, 1-based, across connections; a message is
    counted each time a client's ``MAIL FROM`` reaches the server's handler (so a retried
    message gets a new number).  At the "EHLO" and "AUTH" stages the number is the one the
    next ``MAIL FROM`` would get.  With ``on_message`` set the fault fires only for that
    message; without it, for the next ``times`` messages (``None``: forever).  A fault
    firing at "RCPT" without ``recipient`` hits every RCPT of that message, so the whole
    message fails rather than one recipient of it.  When several faults match, the one
    added first wins.

    Build instances with the classmethods; the fields are public only for introspection.
    """

    action: str
    stage: str = "DATA"
    code: int | None = None
    text: str = ""
    seconds: float = 0.0
    on_message: int | None = None
    times: int | None = 1
    recipient: str | None = None
    count: int = 0

    def __post_init__(self) -> None:
        """Reject nonsense early, in the test that wrote it, not deep in the server loop."""
        if self.action not in _ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {self.stage!r}")
        if self.action in ("reply", "reply_then_disconnect"):
            if self.code is None or not 200 <= self.code <= 599:
                raise ValueError(f"reply code must be within 200..599, not {self.code!r}")
        if self.on_message is not None and self.on_message < 1:
            raise ValueError("on_message is 1-based")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1 or None (forever)")
        if self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if (self.action == "gather") != (self.count > 0):
            raise ValueError("gather takes a count of at least 1, and only gather takes one")
        if self.recipient is not None and self.stage != "RCPT":
            raise ValueError("recipient only makes sense with stage='RCPT'")
        if (self.action == "break_tls") != (self.stage == "TLS"):
            # The handshake is not an SMTP command: there is no reply to replace there,
            # and break_tls has nothing to break anywhere else.
            raise ValueError("stage 'TLS' takes only the break_tls action, and vice versa")

    @property
    def status_line(self) -> str:
        """The SMTP reply line this fault sends, e.g. ``454 4.7.0 Throttling failure``."""
        return f"{self.code} {self.text}".rstrip()

    @classmethod
    def reply(
        cls,
        code: int,
        text: str,
        *,
        on_message: int | None = None,
        times: int | None = 1,
        stage: str = "DATA",
        recipient: str | None = None,
    ) -> Fault:
        """Answer ``code text`` at ``stage`` instead of accepting (the session goes on).

        At "DATA" the reply comes after the whole message was received, as with a server
        that throttles or rejects content.  ``recipient`` (stage "RCPT" only) limits the
        refusal to that address, for partial-delivery tests.
        """
        return cls(
            "reply",
            stage=stage,
            code=code,
            text=text,
            on_message=on_message,
            times=times,
            recipient=recipient,
        )

    @classmethod
    def disconnect(
        cls, *, on_message: int | None = None, stage: str = "DATA", times: int | None = 1
    ) -> Fault:
        """Close the connection without any reply at ``stage``.

        "DATA": after the message data arrived (the client never learns whether it was
        delivered; it was not recorded).  "EHLO": right after the greeting.
        """
        return cls("disconnect", stage=stage, on_message=on_message, times=times)

    @classmethod
    def stall(
        cls,
        seconds: float,
        *,
        on_message: int | None = None,
        stage: str = "DATA",
        times: int | None = 1,
    ) -> Fault:
        """Wait ``seconds`` before answering at ``stage``, then carry on normally.

        Meant to trip client timeouts.  A stalled "DATA" records the message only once the
        stall is over and 250 is sent; if the client hangs up first, nothing is recorded.
        """
        return cls("stall", stage=stage, seconds=seconds, on_message=on_message, times=times)

    @classmethod
    def gather(cls, count: int, *, stage: str = "MAIL", seconds: float = 30.0) -> Fault:
        """Hold each of the next ``count`` sessions at ``stage`` until all ``count`` are
        there, then answer them all; a session still alone after ``seconds`` gets 451.

        Proves that clients run concurrently without timing them: clients that waited for
        each other would never be at the same stage together, so the first one times out
        and fails loudly.  ``seconds`` is only that failure's deadline, never waited on by
        concurrent clients.  Fires for ``count`` messages (sessions at "EHLO").
        """
        return cls("gather", stage=stage, seconds=seconds, times=count, count=count)

    @classmethod
    def auth_then_drop(cls, *, times: int | None = 1) -> Fault:
        """Accept AUTH (235) and close the connection immediately after, before MAIL."""
        return cls("auth_then_drop", stage="AUTH", times=times)

    @classmethod
    def reply_then_disconnect(
        cls,
        code: int,
        text: str,
        *,
        on_message: int | None = None,
        times: int | None = 1,
        stage: str = "DATA",
    ) -> Fault:
        """Send ``code text`` at ``stage`` and close the connection, like a server's
        ``421 4.7.0 Try again later`` shutdown notice."""
        return cls(
            "reply_then_disconnect",
            stage=stage,
            code=code,
            text=text,
            on_message=on_message,
            times=times,
        )

    @classmethod
    def break_tls(cls, *, on_message: int | None = None, times: int | None = 1) -> Fault:
        """Make the TLS handshake fail, for tests of mail that cannot be encrypted.

        Implicit mode: the server aborts the handshake when the ClientHello arrives and
        drops the connection (asyncio does not flush the alert), so the client sees it end
        mid-handshake: ``ssl.SSLEOFError`` with blocking sockets, ``ConnectionResetError``
        under asyncio.  STARTTLS mode: the server answers 220 to STARTTLS, then replies to
        the ClientHello with bytes that are not TLS (:data:`NOT_TLS`) and hangs up, like a
        broken middlebox; the client's TLS layer reports a wrong version number.  Either
        way no session starts and nothing is recorded.  ``on_message`` counts like "EHLO"
        faults (the number the next message would get).
        """
        return cls("break_tls", stage="TLS", on_message=on_message, times=times)

    @property
    def _point(self) -> str:
        """Where the server looks for this fault; auth_then_drop acts after AUTH succeeds."""
        return "AUTH_OK" if self.action == "auth_then_drop" else self.stage


@dataclass(eq=False)
class _ArmedFault:
    """A fault as added to one server, with its own countdown."""

    fault: Fault
    remaining: int | None
    # (connection number, message number) pairs this fault fired for, so a RCPT fault
    # keeps hitting the other recipients of the same message.
    fired_for: set[tuple[int, int]] = field(default_factory=set)


# --------------------------------------------------------------------------------------
# aiosmtpd plumbing
# --------------------------------------------------------------------------------------


async def _drop(server: SMTP) -> NoReturn:
    """Close the client connection without another word and end the session task.

    Raising CancelledError ends aiosmtpd's session coroutine the same way a lost connection
    does; returning normally would make aiosmtpd write the hook's status to the closing
    (but still writable) transport.
    """
    if server.transport is not None:
        server.transport.close()
    raise asyncio.CancelledError


def _login_of(session: Session) -> str | None:
    """The AUTH identity of a session, read from ``auth_data`` (``login_data`` is deprecated)."""
    if not session.authenticated:
        return None
    data = session.auth_data
    if isinstance(data, LoginPassword):
        return data.login.decode("utf-8", "replace")
    if isinstance(data, str):
        return data
    return None


class _TestSMTP(SMTP):
    """aiosmtpd's SMTP with the few hooks aiosmtpd's handler API cannot provide."""

    def __init__(
        self,
        handler: _Handler,
        *,
        owner: SMTPTestServer,
        connection_no: int,
        auth_required: bool,
        **kwargs: Any,
    ) -> None:
        # auth_required is enforced by check_auth_needed below rather than by aiosmtpd: its
        # own check warns (UserWarning) whenever AUTH does not require TLS, as it must not
        # in plain and implicit-TLS modes.
        super().__init__(handler, auth_required=False, **kwargs)
        self.owner = owner
        self.connection_no = connection_no
        self.require_auth = auth_required
        self.message_no = 0  # number of the current transaction, set by handle_MAIL
        self.implicit_tls = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Note whether the socket itself is TLS: aiosmtpd only knows about STARTTLS."""
        if self.transport is None:
            _send_replies_at_once(transport)
            self.implicit_tls = transport.get_extra_info("ssl_object") is not None
            if self.implicit_tls and self.owner.client_ca is not None:
                self.owner._record_client_cert(transport.get_extra_info("peercert"))
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        """Forget the connection so ``stop()`` does not try to abort it."""
        super().connection_lost(error)
        self.owner._forget(self)

    @property
    def over_tls(self) -> bool:
        """Whether the session is encrypted (implicit TLS or after STARTTLS)."""
        return self.implicit_tls or self.session is not None and self.session.ssl is not None

    async def push(self, status: AnyStr) -> None:
        """Send a reply line, giving aiosmtpd's STARTTLS refusal its enhanced status code."""
        if status == _AIOSMTPD_STARTTLS_REFUSAL:
            await super().push(STARTTLS_REFUSAL)
        else:
            await super().push(status)

    async def check_auth_needed(self, caller_method: str) -> bool:
        """Refuse MAIL/RCPT/DATA before AUTH when the server requires authentication."""
        if self.require_auth and not (self.session is not None and self.session.authenticated):
            await self.push(AUTH_REQUIRED_REFUSAL)
            return True
        return False

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        """STARTTLS, answered with bytes that are not TLS when a break_tls fault is due."""
        if arg or self.owner._take_fault("TLS", self.connection_no, self.owner._upcoming()) is None:
            await super().smtp_STARTTLS(arg)
            return
        await self.push("220 Ready to start TLS")
        # Wait for the ClientHello: garbage sent before it would reach the client's SMTP
        # reader, not its TLS layer.
        await self._reader.read(4096)
        if self.transport is not None:
            self.transport.write(NOT_TLS)
        await _drop(self)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """AUTH, answering 502 when the server has no accounts and acting on auth_then_drop."""
        if not self.owner.offers_auth:
            await self.push(AUTH_NOT_OFFERED)
            return
        assert self.session is not None
        was_authenticated = bool(self.session.authenticated)
        await super().smtp_AUTH(arg)
        if self.session.authenticated and not was_authenticated:
            fault = self.owner._take_fault("AUTH_OK", self.connection_no, self.owner._upcoming())
            if fault is not None:
                await _drop(self)


def _send_replies_at_once(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off for the connection, as real servers (Postfix) do.

    asyncio sets TCP_NODELAY only on sockets whose protocol number is IPPROTO_TCP, and
    a listening socket made with ``socket.socket(AF_INET, SOCK_STREAM)`` (as ours are,
    to pick a free port first) passes 0 on to the connections it accepts. Without it a
    reply of several lines written in pieces (EHLO, or the replies to a pipelined
    MAIL/RCPT/DATA group) waited for the client's delayed ACK: 40 ms per EHLO and per
    pipelined message, a cost no real server has."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Handler:
    """aiosmtpd event handler: authentication, fault injection and recording."""

    def __init__(self, owner: SMTPTestServer) -> None:
        self.owner = owner

    async def _act(self, server: _TestSMTP, fault: Fault | None) -> str | None:
        """Carry out a fault; return the reply to send instead of the normal one, if any."""
        if fault is None:
            return None
        if fault.action == "stall":
            await asyncio.sleep(fault.seconds)
            return None
        if fault.action == "gather":
            return await self.owner._gather(fault)
        if fault.action == "reply":
            return fault.status_line
        if fault.action == "reply_then_disconnect":
            await server.push(fault.status_line)
        await _drop(server)

    async def handle_EHLO(
        self,
        server: _TestSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """EHLO: apply "EHLO" faults and hide the AUTH line when no accounts exist."""
        fault = self.owner._take_fault("EHLO", server.connection_no, self.owner._upcoming())
        reply = await self._act(server, fault)
        if reply is not None:
            return [reply]
        session.host_name = hostname  # a handle_EHLO hook must do this itself
        if not self.owner.offers_auth:
            responses = [line for line in responses if not line.startswith("250-AUTH")]
        if self.owner.pipelining:
            # aiosmtpd reads commands one by one from its stream, so it serves pipelined
            # commands correctly; it only does not say so.
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_HELO(
        self, server: _TestSMTP, session: Session, envelope: Envelope, hostname: str
    ) -> str:
        """HELO: same faults as EHLO."""
        fault = self.owner._take_fault("EHLO", server.connection_no, self.owner._upcoming())
        reply = await self._act(server, fault)
        if reply is not None:
            return reply
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_AUTH(
        self, server: _TestSMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> Any:
        """AUTH with a known mechanism: apply "AUTH" faults, else let the mechanism run."""
        fault = self.owner._take_fault("AUTH", server.connection_no, self.owner._upcoming())
        reply = await self._act(server, fault)
        return MISSING if reply is None else reply

    async def handle_MAIL(
        self,
        server: _TestSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        """MAIL FROM: number the message, apply "MAIL" faults, else start the transaction."""
        server.message_no = self.owner._next_message_no()
        fault = self.owner._take_fault("MAIL", server.connection_no, server.message_no)
        reply = await self._act(server, fault)
        if reply is not None:
            return reply
        envelope.mail_from = address  # a handle_MAIL hook must do this itself
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: _TestSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """RCPT TO: apply "RCPT" faults, else add the recipient."""
        fault = self.owner._take_fault(
            "RCPT", server.connection_no, server.message_no, recipient=address
        )
        reply = await self._act(server, fault)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)  # a handle_RCPT hook must do this itself
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: _TestSMTP, session: Session, envelope: Envelope) -> str:
        """End of DATA: apply "DATA" faults, else record the message and accept it."""
        fault = self.owner._take_fault("DATA", server.connection_no, server.message_no)
        reply = await self._act(server, fault)
        if reply is not None:
            return reply
        self.owner._record(
            ReceivedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content or b"",
                login=_login_of(session),
                port=self.owner.port,
                tls=server.over_tls,
            )
        )
        return "250 OK"

    def authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        """aiosmtpd ``authenticator`` for the built-in PLAIN and LOGIN mechanisms.

        A failure must say ``handled=False``: with the default ``handled=True`` aiosmtpd
        sends no reply at all and the client hangs.
        """
        assert isinstance(auth_data, LoginPassword)
        login = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        users = self.owner.users or {}
        ok = login in users and hmac.compare_digest(
            users[login].encode("utf-8"), password.encode("utf-8")
        )
        self.owner._record_auth(mechanism, login, ok)
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        """CRAM-MD5 (RFC 2195), which aiosmtpd lacks and smtplib prefers over PLAIN/LOGIN."""
        challenge = f"<{secrets.token_hex(8)}@{server.hostname}>".encode("ascii")
        response = await server.challenge_auth(challenge)
        if not isinstance(response, bytes):  # client sent "*": aiosmtpd already replied 501
            return AuthResult(success=False, handled=True)
        login, _, digest = response.decode("utf-8", "replace").rpartition(" ")
        users = self.owner.users or {}
        ok = False
        if login in users:
            expected = hmac.new(users[login].encode("utf-8"), challenge, "md5").hexdigest()
            ok = hmac.compare_digest(expected, digest.lower())
        self.owner._record_auth("CRAM-MD5", login, ok)
        if ok:
            return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """XOAUTH2 (Microsoft, Google): ``user=<mailbox>^Aauth=Bearer <token>^A^A``."""
        return await self._bearer(server, args, "XOAUTH2")

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        """OAUTHBEARER (RFC 7628): ``n,a=<mailbox>,^Ahost=...^Aauth=Bearer <token>^A^A``."""
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: SMTP, args: list[str], mechanism: str) -> AuthResult:
        check = self.owner.bearer_check
        assert check is not None
        if len(args) > 1:
            try:
                response: Any = base64.b64decode(args[1], validate=True)
            except ValueError:
                await server.push("501 5.5.2 Cannot decode response")
                return AuthResult(success=False, handled=True)
        else:
            response = await server.challenge_auth("")
            if not isinstance(response, bytes):
                return AuthResult(success=False, handled=True)
        fields = response.decode("utf-8", "replace").split("\x01")
        user, token = "", ""
        for part in fields:
            if part.startswith("user="):
                user = part[5:]
            elif part.startswith("n,a="):
                user = part[4:].rstrip(",")
            elif part.startswith("auth=Bearer "):
                token = part[len("auth=Bearer ") :]
        # The check asks the authorization server over HTTP: not on this loop.
        error = await asyncio.get_running_loop().run_in_executor(None, check, user, token)
        self.owner._record_auth(mechanism, user, error is None)
        if error is None:
            return AuthResult(success=True, auth_data=user)
        if self.owner.bearer_style == "google" or mechanism == "OAUTHBEARER":
            detail = json.dumps({"status": "401", "schemes": "bearer", "scope": "SMTP.Send"})
            await server.challenge_auth(detail.encode())
            await server.push("535 5.7.8 Username and Password not accepted (" + error + ")")
        else:
            await server.push("535 5.7.3 Authentication unsuccessful [" + error + "]")
        return AuthResult(success=False, handled=True)


class _TestController(Controller):
    """Controller serving on a socket we bound ourselves, creating our SMTP per connection.

    Binding first (port 0 -> free port) and handing the socket to asyncio avoids both
    ``Controller(port=0)``, which cannot work (aiosmtpd connects to the port it was given to
    check the server is up), and the race of probing for a free port and binding it later.
    """

    def __init__(
        self,
        owner: SMTPTestServer,
        sock: socket.socket,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(
            owner._handler,
            hostname=LOCALHOST,
            port=sock.getsockname()[1],
            ssl_context=ssl_context,
        )
        self.owner = owner
        self.sock = sock

    def _create_server(self) -> Awaitable[asyncio.AbstractServer]:
        return self.loop.create_server(self._factory_invoker, sock=self.sock, ssl=self.ssl_context)

    def factory(self) -> SMTP:
        return self.owner._make_smtp(self.loop)


# --------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------


class SMTPTestServer:
    """One aiosmtpd server on 127.0.0.1 with a free port, its own loop thread, and faults.

    Modes: "plain" (AUTH offered in clear text, if ``users`` is given), "starttls" (STARTTLS
    offered; AUTH offered only after it), "implicit" (TLS from the first byte, SMTPS).
    PIPELINING is offered unless ``pipelining=False``.

    ``received``, ``auth_attempts`` and ``connections`` accumulate over the server's life,
    including across ``stop()``/``start()``; a restarted server listens on the same port.
    """

    host: str
    received: list[ReceivedMessage]
    auth_attempts: list[tuple[str, str, bool]]

    def __init__(
        self,
        *,
        mode: str = "plain",
        tls: TLSFiles | None = None,
        require_starttls: bool = False,
        users: dict[str, str] | None = None,
        auth_required: bool = False,
        mechanisms: tuple[str, ...] = SUPPORTED_MECHANISMS,
        hostname: str = LOCALHOST,
        data_size_limit: int | None = None,
        pipelining: bool = True,
        client_ca: str | None = None,
        bearer_check: Callable[[str, str], str | None] | None = None,
        bearer_style: str = "microsoft",
    ) -> None:
        if client_ca is not None and mode != "implicit":
            raise ValueError("client_ca (asking for a client certificate) needs mode='implicit'")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if mode != "plain" and tls is None:
            raise ValueError(f"mode {mode!r} needs tls=make_tls_files(...)")
        if require_starttls and mode != "starttls":
            raise ValueError("require_starttls needs mode='starttls'")
        if auth_required and not (users or bearer_check):
            raise ValueError("auth_required needs users")
        unknown = set(mechanisms) - set(SUPPORTED_MECHANISMS)
        if unknown:
            raise ValueError(f"unsupported mechanisms {sorted(unknown)}")
        self.mode = mode
        self.tls = tls
        self.require_starttls = require_starttls
        self.users = dict(users) if users is not None else None
        self.auth_required = auth_required
        self.mechanisms = tuple(mechanisms)
        self.hostname = hostname
        self.data_size_limit = data_size_limit
        #: Offer PIPELINING (RFC 2920), as nearly every real server does.
        self.pipelining = pipelining
        # No accounts (or no mechanisms): no AUTH line in EHLO, and AUTH gets 502.
        self.offers_auth = self.users is not None and bool(self.mechanisms)
        #: ``bearer_check(user, token)``: None when the token may log in as ``user``, else
        #: the OAuth error (checked at the authorization server, as real providers do).
        self.bearer_check = bearer_check
        #: How a refused token is answered: "microsoft" (535 5.7.3) or "google" (334 and a
        #: base64 JSON error, then 535 5.7.8 once the client answers).
        self.bearer_style = bearer_style
        if bearer_check is not None:
            self.offers_auth = True

        self.host = LOCALHOST
        self.received = []
        self.auth_attempts = []
        self._port = 0
        self._connections = 0
        self._messages_started = 0
        self._faults: list[_ArmedFault] = []
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._live: set[_TestSMTP] = set()  # touched only from the loop thread
        self._peak_live = 0
        # Gather faults' meeting points, by fault; touched only from the loop thread.
        self._gatherings: dict[int, tuple[list[int], asyncio.Event]] = {}
        self._counting = False
        self._handler = _Handler(self)
        self._controller: _TestController | None = None
        # Built once: loading the chain is the slow part of a TLS context.
        self._server_context = tls.server_context() if tls is not None else None
        #: CA file of the client certificates to require (implicit TLS only); the
        #: subjects presented are kept in ``client_certificates``.
        self.client_ca = client_ca
        self.client_certificates: list[dict[str, Any]] = []
        if client_ca is not None and self._server_context is not None:
            self._server_context.verify_mode = ssl.CERT_REQUIRED
            self._server_context.load_verify_locations(cafile=client_ca)
        if mode == "implicit" and self._server_context is not None:
            # The handshake runs before aiosmtpd sees the connection; this callback is
            # the one hook inside it.
            self._server_context.sni_callback = self._on_client_hello

    # -- public API ------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (fixed at the first ``start()``)."""
        if not self._port:
            raise RuntimeError("server not started yet")
        return self._port

    @property
    def connections(self) -> int:
        """TCP connections accepted (aiosmtpd's own start-up probe not included)."""
        with self._lock:
            return self._connections

    @property
    def peak_connections(self) -> int:
        """The most client connections that were open at the same moment: proves that
        clients ran concurrently without timing them."""
        with self._lock:
            return self._peak_live

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._controller is not None

    def add_fault(self, fault: Fault) -> None:
        """Arm a fault; safe while the server runs.  Earlier faults take precedence."""
        with self._lock:
            self._faults.append(_ArmedFault(fault, fault.times))

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._faults.clear()

    def start(self) -> SMTPTestServer:
        """Bind (a free port, or the previous one on restart) and serve; returns self."""
        if self._controller is not None:
            raise RuntimeError("server already running")
        sock = self._bind()
        self._port = sock.getsockname()[1]
        ssl_context = self._server_context if self.mode == "implicit" else None
        controller = _TestController(self, sock, ssl_context)
        try:
            controller.start()
        except BaseException:
            with contextlib.suppress(Exception):
                controller.stop(no_assert=True)
            if not controller.loop.is_running() and not controller.loop.is_closed():
                controller.loop.close()
            sock.close()
            raise
        # aiosmtpd connected once to check the server is up; count only what comes after.
        # Its factory() call has happened by now: Controller.start() waits for it.
        with self._lock:
            self._counting = True
        self._controller = controller
        return self

    def stop(self) -> None:
        """Abort open client connections, stop the loop and free the port.  Idempotent.

        Connections are aborted first so that stopping never waits for a client that keeps
        its session open (or for a TLS close handshake it will not answer).
        """
        controller = self._controller
        if controller is None:
            return
        self._controller = None
        with self._lock:
            self._counting = False
        future = asyncio.run_coroutine_threadsafe(self._abort_all(), controller.loop)
        future.result(timeout=10)
        controller.stop()
        self._live.clear()  # the loop thread is gone; drop what it did not get to forget

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were accepted; return a copy of them all.

        Raises TimeoutError (saying how many did arrive) after ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.received) >= count, timeout):
                raise TimeoutError(
                    f"{self!r}: {len(self.received)} message(s) after {timeout}s, wanted {count}"
                )
            return list(self.received)

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "unbound"
        return f"<SMTPTestServer {self.mode} {where}>"

    # -- used by the loop thread ---------------------------------------------------------

    def _bind(self) -> socket.socket:
        """A listening-ready socket on 127.0.0.1: a free port first, the same one later."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            # So a restart can take the port back while old connections sit in TIME_WAIT.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((LOCALHOST, self._port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _make_smtp(self, loop: asyncio.AbstractEventLoop) -> _TestSMTP:
        """Create the protocol object for one new connection (runs in the loop thread)."""
        with self._lock:
            if self._counting:
                self._connections += 1
            connection_no = self._connections
        excluded = [m for m in SUPPORTED_MECHANISMS if m not in self.mechanisms]
        if not self.users:
            excluded = list(SUPPORTED_MECHANISMS)
        if self.bearer_check is None:
            excluded += BEARER_MECHANISMS
        smtp = _TestSMTP(
            self._handler,
            owner=self,
            connection_no=connection_no,
            auth_required=self.auth_required,
            loop=loop,
            hostname=self.hostname,
            data_size_limit=self.data_size_limit,
            enable_SMTPUTF8=True,
            tls_context=self._server_context if self.mode == "starttls" else None,
            require_starttls=self.require_starttls,
            # STARTTLS mode: AUTH only once encrypted, like real submission servers.
            # Implicit mode: aiosmtpd cannot tell the socket is TLS and would never offer
            # AUTH.  Plain mode: accounts would be useless otherwise.
            auth_require_tls=self.mode == "starttls",
            auth_exclude_mechanism=excluded,
            authenticator=self._handler.authenticate,
        )
        self._live.add(smtp)
        with self._lock:
            self._peak_live = max(self._peak_live, len(self._live))
        return smtp

    def _on_client_hello(
        self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext
    ) -> int | None:
        """``sni_callback`` of implicit mode: OpenSSL calls it for every ClientHello (with
        ``server_name`` None when the client sent no SNI, as for 127.0.0.1).  Returning an
        alert aborts the handshake: how a break_tls fault acts in this mode."""
        if self._take_fault("TLS", self.connections, self._upcoming()) is None:
            return None
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE

    def _record_client_cert(self, certificate: dict[str, Any] | None) -> None:
        with self._lock:
            self.client_certificates.append(certificate or {})

    def _forget(self, smtp: _TestSMTP) -> None:
        self._live.discard(smtp)

    async def _abort_all(self) -> None:
        for smtp in list(self._live):
            transport = smtp.transport
            if isinstance(transport, asyncio.WriteTransport):
                transport.abort()
            elif transport is not None:
                transport.close()

    def _next_message_no(self) -> int:
        with self._lock:
            self._messages_started += 1
            return self._messages_started

    def _upcoming(self) -> int:
        """Number the next message will get; what EHLO/AUTH-stage faults match against."""
        with self._lock:
            return self._messages_started + 1

    def _take_fault(
        self, point: str, connection_no: int, message_no: int, recipient: str | None = None
    ) -> Fault | None:
        """The first armed fault due at ``point`` for this message, counted down; or None."""
        key = (connection_no, message_no)
        with self._lock:
            for armed in self._faults:
                fault = armed.fault
                if fault._point != point:
                    continue
                if point == "RCPT" and fault.recipient is None and key in armed.fired_for:
                    return fault  # the rest of a message whose first RCPT was hit
                if armed.remaining == 0:
                    continue
                if fault.on_message is not None and fault.on_message != message_no:
                    continue
                if fault.recipient is not None and (
                    recipient is None or fault.recipient.lower() != recipient.lower()
                ):
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                armed.fired_for.add(key)
                return fault
        return None

    async def _gather(self, fault: Fault) -> str | None:
        """Wait until ``fault.count`` sessions reached this fault; 451 if they never do."""
        arrived, everyone = self._gatherings.setdefault(id(fault), ([0], asyncio.Event()))
        arrived[0] += 1
        if arrived[0] >= fault.count:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), fault.seconds)
        except TimeoutError:
            return f"451 4.3.0 Gathered {arrived[0]} of {fault.count} sessions"
        return None

    def _record(self, message: ReceivedMessage) -> None:
        with self._arrived:
            self.received.append(message)
            self._arrived.notify_all()

    def _record_auth(self, mechanism: str, login: str, success: bool) -> None:
        with self._lock:
            self.auth_attempts.append((mechanism, login, success))
