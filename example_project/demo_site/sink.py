"""The demo's SMTP sink: local aiosmtpd servers that accept mail and write it down.

One plain-SMTP server per demo account, each on its own port of 127.0.0.1, so the port
alone says which account a message went through. Each server requires AUTH (PLAIN or
LOGIN, allowed over plain text: nothing leaves this machine) with the login and password
the demo stored on its account; the OAuth mailbox's server takes ``AUTH XOAUTH2`` instead
and asks the demo's authorization server about the bearer token (see ``oauth_server``),
refusing a bad one with Microsoft's ``535 5.7.3``. Every accepted message becomes one JSON line in
``settings.DEMO_SINK_LOG`` (shown at /sink/) and one line on the terminal.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import email
import email.policy
import json
import logging
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"

# aiosmtpd logs a deprecation notice on every successful AUTH, and warns that AUTH is
# required without TLS: both are expected in this local demo.
logging.getLogger("mail.log").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)


@dataclass(frozen=True)
class Mailbox:
    """One sink server: the account it stands for and the credentials it accepts."""

    account: str
    #: None: any user name is accepted (the port for accounts made in the demo).
    login: str | None
    password: str
    port: int = 0
    #: For an OAuth mailbox: ``(user, token) -> None`` when the token may send as the
    #: user, else the reason. Only ``AUTH XOAUTH2`` is then accepted.
    bearer_check: Callable[[str, str], str | None] | None = None


def can_bind(port: int) -> bool:
    """Could a server listen on ``port`` of 127.0.0.1 now?"""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As asyncio's server will: a port left in TIME_WAIT by an earlier run is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port of 127.0.0.1 the OS considers free right now.

    aiosmtpd's Controller cannot start on port 0 (it connects to its own port to check
    that the server is up), so ports are chosen here by binding a socket first.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def choose_ports(count: int, base: int | None = 2525, tries: int = 5) -> list[int]:
    """``count`` free ports: consecutive from ``base`` (or base+100, +200...) when possible,
    so the demo's ports are easy to read, else whatever the OS gives."""
    if base:
        for attempt in range(tries):
            block = [base + 100 * attempt + i for i in range(count)]
            if all(can_bind(port) for port in block):
                return block
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def read_log(path: Path) -> list[dict[str, Any]]:
    """Every message the sink has recorded, oldest first (skips unreadable lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


class _Handler:
    def __init__(self, sink: Sink, mailbox: Mailbox) -> None:
        self.sink = sink
        self.mailbox = mailbox

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if self.mailbox.bearer_check is not None:
            return AuthResult(success=False, handled=False)  # XOAUTH2 only
        if mechanism in ("PLAIN", "LOGIN") and isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            expected = self.mailbox.login
            if (expected is None or login == expected) and password == self.mailbox.password:
                return AuthResult(success=True, auth_data=login)
        # handled=False lets aiosmtpd answer 535; handled=True would leave the client waiting.
        return AuthResult(success=False, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "replace")
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        login = session.auth_data if isinstance(session.auth_data, str) else ""
        mechanism = "XOAUTH2" if self.mailbox.bearer_check is not None else "PLAIN/LOGIN"
        self.sink.record(
            {
                "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "port": self.mailbox.port,
                "account": self.mailbox.account,
                "login": login,
                "auth": mechanism,
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "from": str(parsed.get("From", "")),
                "subject": str(parsed.get("Subject", "")),
                "message_id": str(parsed.get("Message-ID", "")),
            }
        )
        return "250 2.0.0 OK: kept by the demo sink"


class _OAuthHandler(_Handler):
    """A handler whose server also offers ``AUTH XOAUTH2`` (aiosmtpd takes ``auth_*``
    methods from the handler)."""

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:  # noqa: N802
        """``user=<mailbox>^Aauth=Bearer <token>^A^A``, as Microsoft and Google take it."""
        check = self.mailbox.bearer_check
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
        user, token = "", ""
        for part in response.decode("utf-8", "replace").split("\x01"):
            if part.startswith("user="):
                user = part[5:]
            elif part.startswith("auth=Bearer "):
                token = part[len("auth=Bearer ") :]
        # The check may touch files or the network: not on the server's loop.
        error = await asyncio.get_running_loop().run_in_executor(None, check, user, token)
        if error is None:
            return AuthResult(success=True, auth_data=user)
        await server.push(f"535 5.7.3 Authentication unsuccessful [{error}]")
        return AuthResult(success=False, handled=True)


class Sink:
    """Start with :meth:`start`, stop with :meth:`stop` (or use it as a context manager)."""

    def __init__(
        self,
        mailboxes: Iterable[Mailbox],
        log_path: Path,
        echo: Callable[[str], None] | None = None,
        base_port: int | None = 2525,
    ) -> None:
        self.log_path = Path(log_path)
        self.echo = echo if echo is not None else _print
        self._lock = threading.Lock()
        self._controllers: list[Controller] = []
        wanted = list(mailboxes)
        ports = iter(choose_ports(sum(1 for m in wanted if not m.port), base_port))
        self.mailboxes = [dataclasses.replace(m, port=m.port or next(ports)) for m in wanted]

    def port_of(self, account: str) -> int:
        return next(m.port for m in self.mailboxes if m.account == account)

    def start(self, *, clear_log: bool = True) -> Sink:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if clear_log:
            self.log_path.write_text("", encoding="utf-8")
        try:
            for mailbox in self.mailboxes:
                handler = (_OAuthHandler if mailbox.bearer_check else _Handler)(self, mailbox)
                controller = Controller(
                    handler,
                    hostname=HOST,
                    port=mailbox.port,
                    authenticator=handler.authenticate,
                    auth_required=True,
                    auth_require_tls=False,
                    auth_exclude_mechanism=["LOGIN", "PLAIN"] if mailbox.bearer_check else None,
                    server_hostname="sink.demo.test",
                )
                controller.start()
                self._controllers.append(controller)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        controllers, self._controllers = self._controllers, []
        for controller in controllers:
            controller.stop()

    def __enter__(self) -> Sink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, ensure_ascii=False)
        with self._lock:
            with self.log_path.open("a", encoding="utf-8") as log:
                log.write(line + "\n")
        self.echo(
            f"[sink] {entry['time'][11:19]} port {entry['port']} ({entry['account']}) "
            f"AUTH {entry['auth']} login={entry['login'] or '-'} from={entry['mail_from']} "
            f"to={','.join(entry['rcpt_tos'])} subject={entry['subject']!r}"
        )


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
