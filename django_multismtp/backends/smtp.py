"""The email backend: Django's contract, over the delivery engine.

Follows Django's backend contract on 5.2, 6.0 and 6.1: options are explicit keyword
arguments (they are the ``MAILERS`` OPTIONS), everything else goes to
``BaseEmailBackend`` (6.1's ``alias`` included), ``fail_silently`` swallows transport
errors only, ``open()``/``close()`` bracket connection reuse, ``send_messages()``
returns the number sent. Choosing accounts, limits, sending, failover and the delivery
log are the engine's (:mod:`django_multismtp.engine`), which the outbox worker uses too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import ssl
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.utils import DNS_NAME
from django.db import close_old_connections, connections
from django.utils.functional import cached_property

from .. import addresses, compat, conf, gate, parking
from ..engine import FALLBACK, QUEUED, Engine, account_config, load_accounts
from ..eventloop import smtp_loop
from ..exceptions import (
    MultiSMTPConfigurationError,
    MultiSMTPError,
    MutuallyExclusiveOptions,
    SendFailed,
    send_error,
)
from ..hints import Hints
from ..models import SmtpAccount
from ..outgoing import Outgoing
from ..transport import AuthMethod, Security, ServerConfig, Session, classify

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

__all__ = ["FALLBACK", "QUEUED", "EmailBackend", "account_config", "load_accounts"]


class EmailBackend(BaseEmailBackend):
    """Send each message through the SMTP account chosen for it (see :mod:`selection`).

    With no account for a message it sends to the mailer's own server (the fallback),
    configured and reached as Django's SMTP backend does: the same options and defaults,
    the same attributes (``host``, ``port``, ``username``, ``password``, ``use_tls``,
    ``use_ssl``, ``timeout``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_context``,
    ``connection``), ``open()`` connecting and logging in, and the same exception classes.
    See docs/migrating.rst for what differs.
    """

    #: The engine that sends; the test backend swaps in one that records instead.
    engine_class: type[Engine] = Engine
    #: Whether ``open()`` connects to the fallback server and a ``MAILERS`` alias needs
    #: a host, as Django's backend; the test backend, which never connects, needs neither.
    uses_network = True

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        fail_silently: bool = False,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        *,
        account: Any = None,
        user: Any = None,
        purpose: str | None = None,
        pool: str | None = None,
        fallback: bool = True,
        **kwargs: Any,
    ) -> None:
        if "alias" not in kwargs and self.uses_network:
            compat.warn_direct_construction()  # as Django 6.1 for its SMTP backend
        # Unknown options go to Django, which treats them as it does for its own
        # backend: InvalidMailer under MAILERS (6.1), a deprecation warning when built
        # directly (6.1), ignored before. Our system check names the likely typo.
        super().__init__(**kwargs)
        self.fail_silently = bool(fail_silently)
        self.alias: str | None = getattr(self, "alias", None)
        if purpose is not None and purpose not in conf.purposes():
            raise MultiSMTPConfigurationError(
                f"Unknown purpose {purpose!r}. Known purposes: {', '.join(conf.purposes())}; "
                'add more with MULTISMTP["PURPOSES"].',
                alias=self.alias,
            )
        if pool is not None and pool not in conf.POOL_POLICIES:
            raise MultiSMTPConfigurationError(
                f"Unknown pool policy {pool!r}. Use one of {', '.join(conf.POOL_POLICIES)}.",
                alias=self.alias,
            )
        self.hints = Hints(account=account, user=user, purpose=purpose, pool=pool)
        #: ``"fallback": False`` in OPTIONS: this mailer sends through accounts only,
        #: so it needs no host.
        self.uses_fallback = fallback is not False
        self._configure_server(
            host, port, username, password, use_tls, use_ssl, timeout, ssl_keyfile, ssl_certfile
        )
        #: The fallback server's open connection, as Django's ``connection``: set by
        #: :meth:`open`, None otherwise (see :class:`FallbackConnection`).
        self.connection: FallbackConnection | None = None
        self._partial_connection: Any = None  # Django's name; we never keep one
        self.engine = self.engine_class(self)
        self._is_open = False
        #: Set by open() when it swallowed a connection error under fail_silently.
        self._open_failed_silently = False
        self._lock = threading.RLock()

    # -- configuration ----------------------------------------------------------------
    def _configure_server(
        self,
        host: str | None,
        port: int | None,
        username: str | None,
        password: str | None,
        use_tls: bool | None,
        use_ssl: bool | None,
        timeout: float | None,
        ssl_keyfile: str | None,
        ssl_certfile: str | None,
    ) -> None:
        """Set the stock attributes exactly as Django's SMTP backend on this line does.

        Built directly or by ``get_connection()`` (every line before 6.1, and 6.1
        without ``MAILERS``): unset options come from the ``EMAIL_*`` settings. Under
        ``MAILERS``: from OPTIONS alone, the port following the security option.
        """
        if self.alias is None and not compat.mailers_configured():
            setting = compat.email_setting
            self.host = host or setting("EMAIL_HOST", "localhost")
            self.port = port or setting("EMAIL_PORT", 25)
            self.username = setting("EMAIL_HOST_USER", "") if username is None else username
            self.password = setting("EMAIL_HOST_PASSWORD", "") if password is None else password
            self.use_tls = setting("EMAIL_USE_TLS", False) if use_tls is None else use_tls
            self.use_ssl = setting("EMAIL_USE_SSL", False) if use_ssl is None else use_ssl
            self.timeout = setting("EMAIL_TIMEOUT") if timeout is None else timeout
            self.ssl_keyfile = setting("EMAIL_SSL_KEYFILE") if ssl_keyfile is None else ssl_keyfile
            self.ssl_certfile = (
                setting("EMAIL_SSL_CERTFILE") if ssl_certfile is None else ssl_certfile
            )
            if self.use_ssl and self.use_tls:
                raise MutuallyExclusiveOptions(
                    "EMAIL_USE_TLS/EMAIL_USE_SSL are mutually exclusive, so only set one "
                    "of those settings to True."
                )
        else:
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.use_tls = use_tls if use_tls is not None else False
            self.use_ssl = use_ssl if use_ssl is not None else False
            self.timeout = timeout
            self.ssl_keyfile = ssl_keyfile
            self.ssl_certfile = ssl_certfile
            needs_host = self.uses_fallback and self.uses_network and self.alias is not None
            if self.host is None and needs_host and conf.get_setting("USE_FALLBACK_SERVER"):
                raise MultiSMTPConfigurationError(
                    "OPTIONS must define 'host'. (A mailer that sends through SMTP accounts "
                    'only says so with "fallback": False.)',
                    alias=self.alias,
                )
            if self.use_ssl and self.use_tls:
                raise MultiSMTPConfigurationError(
                    "The 'use_ssl' and 'use_tls' OPTIONS are incompatible. "
                    "Set at most one of them to True.",
                    alias=self.alias,
                )
            if self.port is None:
                self.port = 465 if self.use_ssl else 587 if self.use_tls else 25
        try:
            valid_port = 0 < int(self.port) < 65536
        except (TypeError, ValueError):
            valid_port = False
        if not valid_port:
            raise MultiSMTPConfigurationError(
                f"Port {self.port!r} is not a TCP port (1-65535).", alias=self.alias
            )

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """Django's: with a client certificate, a TLS client context holding it."""
        if self.ssl_certfile or self.ssl_keyfile:
            context = ssl.SSLContext(protocol=ssl.PROTOCOL_TLS_CLIENT)
            context.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
            return context
        return ssl.create_default_context()

    @property
    def fallback(self) -> ServerConfig | None:
        """The server used when no account matches, from the attributes above (None:
        this mailer has none). Read when sending, so changed attributes apply."""
        if not self.uses_fallback or not conf.get_setting("USE_FALLBACK_SERVER"):
            return None
        if not self.host:
            return None
        username, password = self.username or "", self.password or ""
        # A subclass's own ssl_context (Django's documented way to trust a private CA)
        # is used as it is; otherwise the transport builds the same context, plus the
        # system's CAs, which Django's context for a client certificate lacks.
        own_context = type(self).ssl_context is not EmailBackend.ssl_context
        secure = self.use_ssl or self.use_tls
        return ServerConfig(
            host=str(self.host),
            port=int(self.port),
            security=Security.TLS
            if self.use_ssl
            else Security.STARTTLS
            if self.use_tls
            else Security.NONE,
            timeout=None if self.timeout is None else float(self.timeout),
            auth_method=AuthMethod.AUTO if username and password else AuthMethod.NONE,
            username=username,
            password=password,
            client_cert=self.ssl_certfile or "",
            client_key=self.ssl_keyfile or "",
            ehlo_hostname=DNS_NAME.get_fqdn(),
            ssl_context=self.ssl_context if own_context and secure else None,
            key=FALLBACK,
        )

    def prep_address(self, address: Any, force_ascii: bool = True) -> str:
        """Django 6.0's ``prep_address``: the addr-spec, IDNA-encoded, or ValueError."""
        return addresses.prep_address(address, force_ascii=force_ascii)

    # -- Django's contract ------------------------------------------------------------
    def open(self) -> bool | None:
        """Open the backend for connection reuse until :meth:`close`, as Django's does.

        When every message will go to the fallback server (the mailer has one and the
        database holds no active account), connect to it now, with TLS and login, as
        Django's backend: True when this call opened the connection, False when it was
        open already; connection, TLS and login errors are raised (None under
        ``fail_silently``). Otherwise nothing is known yet about where mail goes: the
        connection to each account (and to the fallback) is made when a message needs
        it, and True means this call opened the backend.
        """
        with self._lock:
            if self.connection:
                return False
            config = self.fallback
            if config is None or not self.uses_network or _accounts_exist():
                if self._is_open:
                    return False
                self._is_open = True
                return True
            session = self.engine.pool.sessions(config, 1)[0]
            try:
                smtp_loop.run(session.ensure_open())
            except Exception as exc:
                failure = classify(exc, stage="CONNECT", context=session.context())
                error = send_error(
                    SendFailed,
                    f"{failure.summary().rstrip('.')}. {failure.hint}".strip(),
                    failure=failure,
                    account=FALLBACK,
                )
                if self.fail_silently and isinstance(error, OSError):
                    self._open_failed_silently = True
                    return None
                raise error from exc
            self.connection = FallbackConnection(session)
            self._is_open = True
            return True

    def close(self) -> None:
        """Quit every open connection (the fallback's and the accounts')."""
        with self._lock:
            self._is_open = False
            self.connection = None
            self.engine.pool.close()

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        if not email_messages:
            return 0
        messages = list(email_messages)
        if _nothing_to_send(messages):
            return 0
        if _event_loop_running():
            # Sync code called from a coroutine (an async view, an async test): the ORM
            # refuses to run in this thread, so the batch runs in a worker thread while
            # the caller waits, as it would for any blocking call.
            return int(_in_worker_thread(self._send_locked, messages))
        return self._send_locked(messages)

    def _send_locked(self, messages: list[EmailMessage], *, keep_open: bool = False) -> int:
        """Send under the lock, opening the backend for the batch if it is not open;
        ``keep_open``: leave it open afterwards (an async call parks it, see
        :mod:`parking`)."""
        with self._lock:
            was_open = self._is_open
            self._open_failed_silently = False
            try:
                created = self.open()
            except MultiSMTPError:
                if conf.outbox_mode() == "off":
                    raise  # as Django's backend: the caller learns at once
                # The outbox may keep this mail: the engine tries the server again,
                # records the failure and queues what may be retried.
                created = False
            else:
                if created is None and not self._open_failed_silently:
                    # An open() of a subclass's (or a test's) says it failed silently:
                    # as Django's backend, nothing is sent.
                    return 0
            # Our own open() failed (silently, or the outbox may keep the mail): the
            # engine connects again, records the failure (the log, multismtp_status) and
            # queues what may be retried, rather than dropping the batch unrecorded.
            try:
                return self.engine.send(messages)
            finally:
                if not was_open and not keep_open:
                    self.close()

    async def asend_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """``send_messages`` for async code: the batch's database work in a thread of our
        own small pool, its SMTP on our event loop, while the caller's loop goes on.

        Not ``thread_sensitive=True``: that runs every such call of the process, one after
        another, on asgiref's one shared thread, so concurrent sends (one per request of
        an async view, or ``asyncio.gather`` of several) would wait for each other. Calls
        on separate backends (``mail.mailers[...]``, ``get_connection()``) therefore send
        concurrently; one backend instance still sends one batch at a time, as Django's
        SMTP backend does. ``sending_as()`` hints travel with the call (asgiref copies
        the context).

        A backend the call opens is not closed at its end but parked (:mod:`parking`):
        the next call of an equal backend borrows it with its connections and slots
        ready. A backend the caller opened is the caller's to close, as always."""
        messages = list(email_messages)
        key = None if self._is_open else parking.key_of(self)
        backend = (parking.park.borrow(key) if key is not None else None) or self
        return int(
            await sync_to_async(
                _with_fresh_connections(_send_and_park),
                thread_sensitive=False,
                executor=_async_executor(),
            )(backend, messages, key)
        )

    def send_queued(
        self, rows: Sequence[Any], *, keep_open: bool = False, **options: Any
    ) -> list[Outgoing]:
        """Send claimed outbox rows through this mailer's engine (see
        :meth:`Engine.send_queued`, which takes the ``options``), reusing connections
        while the backend is open. ``keep_open``: leave the backend open afterwards (a
        worker's next batch reuses the connections; the worker calls :meth:`close`)."""
        with self._lock:
            # Not open(): a worker must settle its rows whatever the server does, so the
            # engine connects (and records failures) per row, never raising.
            created = not self._is_open and not keep_open
            self._is_open = True
            try:
                return self.engine.send_queued(rows, **options)
            finally:
                if created:
                    self.close()


class FallbackConnection:
    """What ``backend.connection`` holds while the fallback server's connection is open.

    Django's backend keeps an ``smtplib.SMTP`` there; ours talks SMTP through
    aiosmtplib on its own event loop, so this offers what callers read from it: the
    server, the timeout, and whether it is still connected.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.host = session.config.host
        self.port = session.config.port
        self.timeout = session.config.timeout

    @property
    def connected(self) -> bool:
        return self.session.connected

    def __repr__(self) -> str:
        state = "open" if self.connected else "closed"
        return f"<FallbackConnection {self.host}:{self.port} {state}>"


def _accounts_exist() -> bool:
    return SmtpAccount.objects.filter(is_active=True).exists()


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


#: Threads for asend_messages(): each runs one batch's database work at a time (its SMTP
#: waits on our event loop), so this many batches are prepared and recorded at once.
ASYNC_THREADS = 16
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _async_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=ASYNC_THREADS, thread_name_prefix="multismtp-async"
            )
        return _executor


def _nothing_to_send(messages: list[EmailMessage]) -> bool:
    """No message, or none with a recipient: no connection is opened, no query made."""
    return not any(message.recipients() for message in messages)


def _send_and_park(backend: EmailBackend, messages: list[EmailMessage], key: Any) -> int:
    """An async call's send, in its thread: with a ``key``, a backend it opened (or
    borrowed open) stays open and is parked for the next call, unless the send raised
    (then it is closed, as a plain ``send_messages()`` would close it)."""
    if key is None:
        return backend.send_messages(messages)
    if _nothing_to_send(messages):
        return 0
    try:
        sent = backend._send_locked(messages, keep_open=True)
    except BaseException:
        backend.close()
        raise
    if backend._is_open:
        parking.park.put(key, backend)
    return sent


def _with_fresh_connections(function: Any) -> Any:
    """``function`` bracketed as a request is: database connections that are too old
    (``CONN_MAX_AGE``, 0 by default) or broken are closed before and after, so a
    pooled thread neither reuses a dead connection nor keeps one open forever."""

    def call(*args: Any) -> Any:
        with gate.turn():
            close_old_connections()
            try:
                return function(*args)
            finally:
                close_old_connections()

    return call


def _in_worker_thread(function: Any, *args: Any) -> Any:
    """Run ``function(*args)`` in a new thread with the caller's context; wait for it."""
    context = contextvars.copy_context()  # sending_as() hints travel along

    def work() -> Any:
        try:
            return context.run(function, *args)
        finally:
            connections.close_all()  # this thread's connections only

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work).result()
