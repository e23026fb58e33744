"""Talk SMTP with aiosmtplib: security modes, AUTH methods, EHLO name, timeouts.

Knows nothing of Django models: a plain :class:`ServerConfig` goes in, a
:class:`~django_multismtp.replies.Failure` (or nothing, on success) comes out. That
keeps the protocol testable against local servers alone and reusable by the backend,
the admin's *test connection* and the commands.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import enum
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosmtplib
from cryptography import x509

from .netguard import public_addresses
from .oauth.hints import for_bearer_refusal
from .pipelining import ProtocolError, Wire
from .replies import (
    HINTS,
    NO_CONTEXT,
    Context,
    Failure,
    Outcome,
    classify_exception,
    provider_for_host,
)
from .safetext import safe_text


class Security(enum.StrEnum):
    NONE = "none"  # plain SMTP, never upgrade
    STARTTLS = "starttls"  # STARTTLS required
    TLS = "tls"  # implicit TLS (SMTPS, usually port 465)
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, plain otherwise


class AuthMethod(enum.StrEnum):
    NONE = "none"
    AUTO = "auto"  # the best mechanism the server offers
    PLAIN = "plain"
    LOGIN = "login"
    CRAM_MD5 = "cram-md5"
    XOAUTH2 = "xoauth2"  # OAuth 2.0 bearer token (Microsoft 365, Google)
    OAUTHBEARER = "oauthbearer"  # the same, as standardised in RFC 7628


#: Login methods that send an OAuth 2.0 access token instead of a password.
BEARER_METHODS = frozenset({AuthMethod.XOAUTH2, AuthMethod.OAUTHBEARER})

#: ``token_provider(force_refresh)`` returns a current access token. It may block (it
#: talks to the database and the token endpoint), so the transport runs it in a thread.
TokenProvider = Callable[[bool], str]


class TokenUnavailable(Exception):  # noqa: N818
    """No access token can be had now; ``permanent`` when only reconnecting helps."""

    def __init__(self, message: str, hint: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.hint = hint
        self.permanent = permanent


class UndecryptablePassword(Exception):  # noqa: N818
    """The stored password could not be decrypted (see ``fields.EncryptedPasswordField``)."""


class InvalidSetting(ValueError):
    """A stored setting cannot be used (a CA file that is not there): our side, not the
    server's, so it is reported as a configuration error naming the setting."""


def tls_file_error(path: str, *, ca: bool = True) -> str | None:
    """Why ``path`` cannot be used as a CA bundle (``ca``) or a PEM file; None if it can.

    For the account's validation and for connecting: a missing CA file must not look
    like a server that refuses connections.
    """
    try:
        if ca:
            ssl.create_default_context(cafile=path)
        else:
            with open(path, "rb") as file:
                file.read(1)
    except ssl.SSLError as exc:
        return f"{path} holds no PEM certificate ({exc.reason or exc})"
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror or exc}"
    except ValueError as exc:  # a NUL byte in the path
        return f"{path!r} is not a file name ({exc})"
    return None


@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to reach and log in to one SMTP server."""

    host: str
    port: int
    security: Security = Security.STARTTLS
    verify_certificates: bool = True
    ca_file: str = ""
    ehlo_hostname: str = ""
    #: Seconds per connect and per reply; None waits as long as the server takes, as
    #: Django's backend does with no timeout set.
    timeout: float | None = 30.0
    auth_method: AuthMethod = AuthMethod.AUTO
    username: str = ""
    password: str = field(default="", repr=False)
    password_error: bool = False
    client_cert: str = ""
    client_key: str = ""
    max_messages_per_connection: int | None = None
    #: Connections one batch may open to this server at once.
    max_connections: int = 1
    #: Connect only to public addresses (hosts typed by users; see ``netguard``).
    public_only: bool = False
    #: Stable key for connection reuse (an account pk, or "fallback").
    key: str = ""
    #: A ready TLS context to use instead of building one (a backend subclass's own
    #: ``ssl_context``); not part of the server's identity.
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)
    #: For XOAUTH2/OAUTHBEARER: where the access token comes from (never compared, so
    #: configs of one account stay equal).
    token_provider: TokenProvider | None = field(default=None, compare=False, repr=False)

    @property
    def logs_in(self) -> bool:
        """Whether connecting includes AUTH (and so needs the password)."""
        return not (
            self.auth_method == AuthMethod.NONE
            or (self.auth_method == AuthMethod.AUTO and not self.username)
        )

    def tls_context(self) -> ssl.SSLContext | None:
        if self.security == Security.NONE:
            return None
        if self.ssl_context is not None:
            return self.ssl_context
        if not self.verify_certificates:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            try:
                context = ssl.create_default_context(cafile=self.ca_file or None)
            except OSError as exc:  # ssl.SSLError too
                problem = tls_file_error(self.ca_file) or str(exc)
                raise InvalidSetting(f"The CA file {problem}") from exc
        if self.client_cert:
            try:
                context.load_cert_chain(self.client_cert, self.client_key or None)
            except OSError as exc:
                raise InvalidSetting(
                    f"The client certificate {self.client_cert} or its key cannot be used: {exc}"
                ) from exc
        return context


@dataclass
class Delivery:
    """The outcome of sending one message: ``failure`` is None when it was accepted."""

    failure: Failure | None
    code: int | None = None
    reply: str = ""
    refused: dict[str, str] = field(default_factory=dict)
    duration: float = 0.0


class Session:
    """One open, authenticated SMTP connection, reused for several messages.

    aiosmtplib opens it (TCP, TLS or STARTTLS, EHLO, AUTH); the mail transactions then run
    on our own :class:`~django_multismtp.pipelining.Wire`, which pipelines them.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.client: aiosmtplib.SMTP | None = None
        self.wire: Wire | None = None
        self.sent_on_connection = 0
        #: The AUTH mechanism the last login used ("PLAIN", "LOGIN", "CRAM-MD5"), or "".
        self.auth_mechanism = ""
        #: The AUTH mechanisms of the server's last EHLO (None before one), for hints.
        self.offered_auth: tuple[str, ...] | None = None

    def context(self) -> Context:
        """What a failure's hint may name: provider, port, security mode, AUTH offered."""
        config = self.config
        return Context(
            provider=provider_for_host(config.host),
            port=config.port,
            security=config.security.value,
            offered_auth=self.offered_auth,
        )

    @property
    def connected(self) -> bool:
        return self.wire is not None and self.wire.is_connected

    async def open(self) -> None:
        """Connect, negotiate TLS and log in; raises on any failure (closing first)."""
        config = self.config
        if config.password_error and config.logs_in:
            raise UndecryptablePassword("the stored password cannot be decrypted")
        start_tls: bool | None = {
            Security.NONE: False,
            Security.STARTTLS: True,
            Security.TLS: False,
            Security.OPPORTUNISTIC: None,
        }[config.security]
        self.offered_auth = None
        sock = await _connect_public(config) if config.public_only else None
        client = aiosmtplib.SMTP(
            hostname=config.host,
            port=None if sock is not None else config.port,
            sock=sock,
            use_tls=config.security == Security.TLS,
            start_tls=start_tls,
            validate_certs=config.verify_certificates,
            tls_context=config.tls_context(),
            local_hostname=config.ehlo_hostname or None,
            timeout=config.timeout,
        )
        try:
            await client.connect()
            await self._login(client)
            # After STARTTLS the server wants EHLO again, and the extensions it lists now
            # (PIPELINING, SIZE) are the ones the Wire goes by.
            await client._ehlo_or_helo_if_needed()
            wire = Wire(client, config.timeout)
        except BaseException:
            client.close()
            raise
        self.client, self.wire = client, wire
        self.sent_on_connection = 0

    async def _login(self, client: aiosmtplib.SMTP) -> None:
        config = self.config
        method = config.auth_method
        self.auth_mechanism = ""
        if not config.logs_in:
            return
        # After STARTTLS the server's extensions must be asked for again before AUTH;
        # aiosmtplib's explicit auth_* methods do not do it themselves.
        await client._ehlo_or_helo_if_needed()
        self.offered_auth = tuple(client.server_auth_methods)
        if method == AuthMethod.AUTO:
            self.auth_mechanism = await _login_auto(client, config.username, config.password)
            return
        if method == AuthMethod.PLAIN:
            await client.auth_plain(config.username, config.password)
        elif method == AuthMethod.LOGIN:
            await client.auth_login(config.username, config.password)
        elif method == AuthMethod.CRAM_MD5:
            await client.auth_crammd5(config.username, config.password)
        elif method in BEARER_METHODS:
            await self._bearer_login(client)
        self.auth_mechanism = method.value.upper()

    async def _bearer_login(self, client: aiosmtplib.SMTP) -> None:
        """AUTH XOAUTH2 / OAUTHBEARER; a refused token is refreshed once and tried again.

        The cached token may have been revoked or may have expired early (clock skew, a
        password change at the provider): one forced refresh tells that apart from an
        account that really cannot log in.
        """
        config = self.config
        provider = config.token_provider
        if provider is None:
            raise TokenUnavailable(
                "no OAuth token source for this account",
                "Connect the account to its OAuth provider first.",
                permanent=True,
            )
        token = await asyncio.to_thread(provider, False)
        try:
            await bearer_auth(client, config.auth_method, config.username, token, config)
        except aiosmtplib.SMTPAuthenticationError:
            token = await asyncio.to_thread(provider, True)
            try:
                await bearer_auth(client, config.auth_method, config.username, token, config)
            except aiosmtplib.SMTPAuthenticationError as exc:
                reply = f"{exc.code} {exc.message}"
                raise TokenUnavailable(reply, for_bearer_refusal(reply), permanent=True) from exc

    async def ensure_open(self) -> None:
        limit = self.config.max_messages_per_connection
        if self.connected and limit and self.sent_on_connection >= limit:
            await self.close()
        if not self.connected:
            await self.open()

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        data: bytes,
        following: tuple[str, Sequence[str]] | None = None,
        *,
        again: bool = True,
    ) -> Delivery:
        """Send one message, opening (or re-opening) the connection as needed.

        Never raises for SMTP problems: the failure is classified and returned, and a
        connection that is no longer usable is dropped so the next call reconnects.

        A connection kept open from an earlier message (a backend left open, a parked
        one, a looping worker's) may have been closed by the server meanwhile (an idle
        timeout). Found closed before any of this message's content went out, it is
        opened again and the message sent on the new one (``again``: once): nothing of
        it was sent, so nothing can go twice, and the message is not deferred for a
        connection nobody could have known was gone.

        ``following``: sender and recipients of the message this session sends next,
        when the caller knows it; its envelope may then go out with this message's
        content (see :meth:`~django_multismtp.pipelining.Wire.send`).
        """
        started = time.perf_counter()
        stage = "CONNECT"
        reused = self.connected and self.sent_on_connection > 0
        try:
            if self.wire is not None and not self.wire.expects(sender, recipients):
                await self.wire.abandon()
            await self.ensure_open()
            assert self.wire is not None
            stage = "DATA"
            limit = self.config.max_messages_per_connection
            if limit and self.sent_on_connection + 1 >= limit:
                following = None  # this connection closes after this message
            refused, reply = await self.wire.send(sender, recipients, data, following)
        except UndecryptablePassword as exc:
            failure = Failure(Outcome.CONFIG_ERROR, None, str(exc), HINTS["undecryptable"])
            return Delivery(failure, duration=time.perf_counter() - started)
        except TokenUnavailable as exc:
            await self.close()
            return Delivery(token_failure(exc), duration=time.perf_counter() - started)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            if (
                again
                and reused
                and stage == "DATA"
                and isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError)
                # A wire gone, the content's fate unknown: not sent again.
                and self.wire is not None
                and not self.wire.content_sent
            ):
                await self.close()
                return await self.send(sender, recipients, data, following, again=False)
            failure = classify(exc, stage=stage, context=self.context())
            if failure.account_level or not self.connected:
                await self.close()
            else:
                await self._reset()
            return Delivery(
                failure,
                code=failure.code,
                reply=failure.text,
                duration=time.perf_counter() - started,
            )
        except ValueError as exc:  # a stored setting aiosmtplib refuses (e.g. the EHLO name)
            # (after the handler above: certificate errors are ValueErrors too)
            failure = _invalid_setting(exc)
            return Delivery(failure, duration=time.perf_counter() - started)
        self.sent_on_connection += 1
        return Delivery(
            None,
            code=reply.code,
            reply=reply.message,
            refused={addr: f"{r.code} {r.message}" for addr, r in refused.items()},
            duration=time.perf_counter() - started,
        )

    async def _reset(self) -> None:
        if self.wire is not None and self.wire.is_connected:
            await self.wire.reset()
        if not self.connected:
            await self.close()

    async def close(self) -> None:
        client, self.client = self.client, None
        wire, self.wire = self.wire, None
        try:
            if wire is not None:
                await wire.quit()
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError):
            pass
        finally:
            if client is not None:
                client.close()


async def _login_auto(client: aiosmtplib.SMTP, username: str, password: str) -> str:
    """``client.login()``, but returning the mechanism that worked.

    Like aiosmtplib, try the best mechanism both sides support first and go on after a
    refusal (some servers list mechanisms they do not really accept). People checking
    an account want to know which one was used: PLAIN or LOGIN over a plain connection
    sends the password readable.
    """
    methods = client.supported_auth_methods if client.supports_extension("auth") else []
    if not methods:
        await client.login(username, password)  # raises aiosmtplib's own clear error
        return ""
    refused: aiosmtplib.SMTPAuthenticationError | None = None
    for name in methods:
        try:
            await getattr(client, f"auth_{name.replace('-', '')}")(username, password)
        except aiosmtplib.SMTPAuthenticationError as exc:
            refused = exc
            continue
        return name.upper()
    assert refused is not None
    raise refused


def classify(exc: BaseException, *, stage: str, context: Context = NO_CONTEXT) -> Failure:
    """:func:`~django_multismtp.replies.classify_exception`, guarded for any server.

    A server that breaks the protocol (our reader's :class:`ProtocolError`; in
    aiosmtplib's hands, during the greeting, EHLO or AUTH, a malformed line, code -1, or a
    positive code where a refusal was due) is a ``protocol_error`` with no reply code:
    never a refusal of the message, never a success. The text is made safe to store and
    show (:func:`~django_multismtp.safetext.safe_text`), and a code outside 400-599 is
    not kept.
    """
    if isinstance(exc, ProtocolError):
        failure = Failure(Outcome.PROTOCOL_ERROR, None, str(exc), HINTS["protocol"])
    elif isinstance(exc, aiosmtplib.SMTPResponseException) and not 400 <= exc.code < 600:
        text = exc.message if exc.code < 0 else f"The server answered {exc.code} {exc.message}"
        failure = Failure(Outcome.PROTOCOL_ERROR, None, text, HINTS["protocol"])
    else:
        failure = classify_exception(exc, stage=stage, context=context)
        if failure.outcome == Outcome.SENT:  # a success is never a failure
            failure = Failure(Outcome.PROTOCOL_ERROR, None, failure.text, HINTS["protocol"])
    code = failure.code if failure.code is not None and 400 <= failure.code < 600 else None
    return dataclasses.replace(failure, code=code, text=safe_text(failure.text))


def _invalid_setting(exc: ValueError) -> Failure:
    return Failure(Outcome.CONFIG_ERROR, None, safe_text(str(exc)), HINTS["invalid_setting"])


def bearer_initial_response(
    method: AuthMethod, user: str, token: str, host: str, port: int
) -> bytes:
    """The base64 initial client response of XOAUTH2 or OAUTHBEARER (RFC 7628 section 3.1)."""
    if method == AuthMethod.XOAUTH2:
        raw = f"user={user}\x01auth=Bearer {token}\x01\x01"
    else:
        raw = f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    return base64.b64encode(raw.encode("utf-8"))


async def bearer_auth(
    client: aiosmtplib.SMTP, method: AuthMethod, user: str, token: str, config: ServerConfig
) -> None:
    """Send the token; raise ``SMTPAuthenticationError`` with the server's final reply.

    A refused token may first be answered ``334 <base64 JSON error>`` (Google, RFC 7628):
    the client must then send an empty line to get the final 5xx reply.
    """
    mechanism = b"XOAUTH2" if method == AuthMethod.XOAUTH2 else b"OAUTHBEARER"
    response = await client.execute_command(
        b"AUTH",
        mechanism,
        bearer_initial_response(method, user, token, config.host, config.port),
    )
    if response.code == 334:
        detail = response.message
        try:
            detail = base64.b64decode(response.message).decode("utf-8", "replace")
        except ValueError:
            pass
        # RFC 7628: the client answers the error challenge with a dummy \x01 (OAUTHBEARER)
        # or an empty line (XOAUTH2) and the server replies with the final failure.
        final = await client.execute_command(
            base64.b64encode(b"\x01") if method == AuthMethod.OAUTHBEARER else b""
        )
        raise aiosmtplib.SMTPAuthenticationError(final.code, f"{final.message} {detail}".strip())
    if response.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)


async def _connect_public(config: ServerConfig) -> socket.socket:
    """Resolve once, refuse internal addresses, and connect to a checked address."""
    loop = asyncio.get_running_loop()
    addresses = await loop.run_in_executor(None, public_addresses, config.host, config.port)
    error: BaseException = OSError(f"{config.host} has no address")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, config.port)), config.timeout)
        except (OSError, TimeoutError) as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error


def token_failure(exc: TokenUnavailable) -> Failure:
    """No token: the account is unusable for now (temporary) or until reconnected."""
    outcome = Outcome.AUTH_FAILED if exc.permanent else Outcome.CONNECTION_FAILED
    return Failure(outcome, None, str(exc), exc.hint)


@dataclass(frozen=True)
class ServerFacts:
    """What a connection check learnt about a server, for a person deciding to trust it.

    Empty strings (and ``None``) for what does not apply: no TLS on a plain connection,
    no mechanism when the account does not log in.
    """

    summary: str = ""
    tls_version: str = ""  # "TLSv1.3"
    cipher: str = ""  # "TLS_AES_256_GCM_SHA384"
    certificate_subject: str = ""  # RFC 4514, "CN=mail.example.com"
    certificate_expires: dt.datetime | None = None  # aware, UTC
    auth_mechanism: str = ""  # "PLAIN", "LOGIN", "CRAM-MD5"


def _tls_facts(client: aiosmtplib.SMTP) -> dict[str, Any]:
    """TLS version, cipher and the server certificate's subject and expiry.

    The certificate is read in binary form, which the ``ssl`` module hands over even when
    certificate checks are off (its parsed form is then empty): an account that does not
    verify is exactly the one whose certificate a person should look at.
    """
    ssl_object = client.transport.get_extra_info("ssl_object") if client.transport else None
    if ssl_object is None:
        return {}
    facts: dict[str, Any] = {"tls_version": ssl_object.version() or ""}
    cipher = ssl_object.cipher()
    facts["cipher"] = cipher[0] if cipher else ""
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        try:
            certificate = x509.load_der_x509_certificate(der)
        except ValueError:  # a certificate cryptography cannot read: report the rest
            return facts
        facts["certificate_subject"] = safe_text(certificate.subject.rfc4514_string())
        facts["certificate_expires"] = certificate.not_valid_after_utc
    return facts


async def check_server(
    config: ServerConfig, within: float | None = None
) -> tuple[Failure | None, ServerFacts]:
    """Connect, negotiate TLS and authenticate without sending; for *test connection*.

    Returns ``(None, facts)`` on success, ``facts.summary`` naming the server greeting
    and extensions; ``(failure, empty facts)`` otherwise.

    ``within``: seconds the whole test may take, when a person (a web request) waits for
    it. The account's timeout bounds each step (connect, each reply); a test has several
    steps, and an account may allow minutes for each, so the test has its own bound.
    """
    if within is None:
        return await _check_server(config)
    bound = within if config.timeout is None else min(config.timeout, within)
    config = dataclasses.replace(config, timeout=bound)
    try:
        async with asyncio.timeout(within):
            return await _check_server(config)
    except TimeoutError:
        text = f"No complete answer within {within:g} seconds, the time a test may take"
        return Failure(Outcome.CONNECTION_FAILED, None, text, HINTS["timeout"]), ServerFacts()


async def _check_server(config: ServerConfig) -> tuple[Failure | None, ServerFacts]:
    session = Session(config)
    try:
        await session.open()
    except UndecryptablePassword as exc:
        failure = Failure(Outcome.CONFIG_ERROR, None, str(exc), HINTS["undecryptable"])
        return failure, ServerFacts()
    except TokenUnavailable as exc:
        await session.close()
        return token_failure(exc), ServerFacts()
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
        return classify(exc, stage="CONNECT", context=session.context()), ServerFacts()
    except ValueError as exc:  # after SSL errors, which are ValueErrors too
        return _invalid_setting(exc), ServerFacts()
    assert session.client is not None
    client = session.client
    extensions = ", ".join(sorted(client.esmtp_extensions)) if client.esmtp_extensions else ""
    tls = "TLS" if client.transport and client.transport.get_extra_info("sslcontext") else "plain"
    ehlo = client.last_ehlo_response
    greeting = ehlo.message.splitlines()[0] if ehlo is not None and ehlo.message else config.host
    summary = f"Connected ({tls}); server: {greeting}"
    if extensions:
        summary += f"; extensions: {extensions}"
    facts = ServerFacts(summary, auth_mechanism=session.auth_mechanism, **_tls_facts(client))
    await session.close()
    return None, dataclasses.replace(facts, summary=safe_text(summary))
