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
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.utils import DNS_NAME
from django.db import connections

from .. import compat, conf
from ..engine import FALLBACK, QUEUED, Engine, account_config, load_accounts
from ..exceptions import MultiSMTPConfigurationError
from ..hints import Hints
from ..outgoing import Outgoing
from ..transport import AuthMethod, Security, ServerConfig

if TYPE_CHECKING:
    from django.core.mail import EmailMessage

__all__ = ["FALLBACK", "QUEUED", "EmailBackend", "account_config", "load_accounts"]


class EmailBackend(BaseEmailBackend):
    """Send each message through the SMTP account chosen for it (see :mod:`selection`)."""

    #: The engine that sends; the test backend swaps in one that records instead.
    engine_class: type[Engine] = Engine

    def __init__(
        self,
        *,
        fail_silently: bool = False,
        account: Any = None,
        user: Any = None,
        purpose: str | None = None,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        use_tls: bool | None = None,
        use_ssl: bool | None = None,
        timeout: float | None = None,
        ssl_keyfile: str | None = None,
        ssl_certfile: str | None = None,
        **kwargs: Any,
    ) -> None:
        # Django 6.1 rejects unknown OPTIONS itself; 5.2 and 6.0 drop them silently, so a
        # typo ("purpse") would route mail wrongly without a word. Refuse them everywhere.
        ignored = set(kwargs.get("_ignore_unknown_kwargs") or ())
        unknown = sorted(set(kwargs) - {"alias", "_ignore_unknown_kwargs"} - ignored)
        if unknown:
            raise MultiSMTPConfigurationError(
                "Unknown options " + ", ".join(repr(name) for name in unknown) + ". Known: "
                "account, user, purpose, fail_silently, host, port, username, password, "
                "use_tls, use_ssl, timeout, ssl_keyfile, ssl_certfile.",
                alias=kwargs.get("alias"),
            )
        super().__init__(**kwargs)
        self.fail_silently = bool(fail_silently)
        self.alias: str | None = getattr(self, "alias", None)
        if purpose is not None and purpose not in conf.purposes():
            raise MultiSMTPConfigurationError(
                f"Unknown purpose {purpose!r}. Known purposes: {', '.join(conf.purposes())}; "
                'add more with MULTISMTP["PURPOSES"].',
                alias=self.alias,
            )
        self.hints = Hints(account=account, user=user, purpose=purpose)
        self.fallback = self._fallback_server(
            host=host,
            port=port,
            username=username,
            password=password,
            use_tls=use_tls,
            use_ssl=use_ssl,
            timeout=timeout,
            ssl_keyfile=ssl_keyfile,
            ssl_certfile=ssl_certfile,
        )
        self.engine = self.engine_class(self)
        self._is_open = False
        self._lock = threading.RLock()

    # -- configuration ----------------------------------------------------------------
    def _fallback_server(self, **options: Any) -> ServerConfig | None:
        """The server used when no account matches: OPTIONS, else Django's EMAIL_*."""
        if not conf.get_setting("USE_FALLBACK_SERVER"):
            return None
        if self.alias is None and not compat.mailers_configured():
            defaults = {
                "host": "EMAIL_HOST",
                "port": "EMAIL_PORT",
                "username": "EMAIL_HOST_USER",
                "password": "EMAIL_HOST_PASSWORD",
                "use_tls": "EMAIL_USE_TLS",
                "use_ssl": "EMAIL_USE_SSL",
                "timeout": "EMAIL_TIMEOUT",
                "ssl_keyfile": "EMAIL_SSL_KEYFILE",
                "ssl_certfile": "EMAIL_SSL_CERTFILE",
            }
            for option, setting in defaults.items():
                if options[option] is None:
                    options[option] = compat.email_setting(setting)
            if not options["host"]:
                options["host"] = "localhost"
        if options["use_tls"] and options["use_ssl"]:
            raise MultiSMTPConfigurationError(
                "The 'use_tls' and 'use_ssl' options are mutually exclusive: set at most one "
                "of them to True.",
                alias=self.alias,
            )
        if not options["host"]:
            return None
        port = options["port"]
        if port is None:
            port = 465 if options["use_ssl"] else 587 if options["use_tls"] else 25
        try:
            port = int(port)
        except (TypeError, ValueError):
            port = -1
        if not 0 < port < 65536:
            raise MultiSMTPConfigurationError(
                f"Port {options['port']!r} is not a TCP port (1-65535).", alias=self.alias
            )
        username, password = options["username"] or "", options["password"] or ""
        return ServerConfig(
            host=str(options["host"]),
            port=port,
            security=Security.TLS
            if options["use_ssl"]
            else Security.STARTTLS
            if options["use_tls"]
            else Security.NONE,
            timeout=float(options["timeout"] or conf.get_setting("DEFAULT_TIMEOUT")),
            auth_method=AuthMethod.AUTO if username and password else AuthMethod.NONE,
            username=username,
            password=password,
            client_cert=options["ssl_certfile"] or "",
            client_key=options["ssl_keyfile"] or "",
            ehlo_hostname=DNS_NAME.get_fqdn(),
            key=FALLBACK,
        )

    # -- Django's contract ------------------------------------------------------------
    def open(self) -> bool:
        """Start reusing connections until :meth:`close`; True if this call started it.

        Connections themselves are made lazily, per account, when a message needs one.
        """
        with self._lock:
            if self._is_open:
                return False
            self._is_open = True
            return True

    def close(self) -> None:
        with self._lock:
            self._is_open = False
            self.engine.pool.close()

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        if not email_messages:
            return 0
        messages = list(email_messages)
        if not messages:
            return 0
        if _event_loop_running():
            # Sync code called from a coroutine (an async view, an async test): the ORM
            # refuses to run in this thread, so the batch runs in a worker thread while
            # the caller waits, as it would for any blocking call.
            return int(_in_worker_thread(self._send_locked, messages))
        return self._send_locked(messages)

    def _send_locked(self, messages: list[EmailMessage]) -> int:
        with self._lock:
            created = self.open()
            try:
                return self.engine.send(messages)
            finally:
                if created:
                    self.close()

    async def asend_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        """``send_messages`` for async code: database work in a thread, SMTP on our loop."""
        return await sync_to_async(self.send_messages, thread_sensitive=True)(email_messages)

    def send_queued(self, rows: Sequence[Any]) -> list[Outgoing]:
        """Send claimed outbox rows through this mailer's engine (see
        :meth:`Engine.send_queued`), reusing connections while the backend is open."""
        with self._lock:
            created = self.open()
            try:
                return self.engine.send_queued(rows)
            finally:
                if created:
                    self.close()


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
