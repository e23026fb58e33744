"""A misbehaving server must never poison a batch (issue #12).

The client is driven against :class:`HostileServer`: a raw-socket SMTP server on
127.0.0.1, in its own thread, that plays a script instead of speaking SMTP properly:
garbage bytes, text that is not UTF-8, NUL bytes, a wrong reply code in every position
(greeting, EHLO, MAIL, RCPT, DATA, end of data), replies nobody asked for, floods,
half-closed sockets, TLS followed by garbage. For each, whatever path the message takes
(a direct send, the outbox worker, the admin's and the self-service page's connection
tests), these hold:

* bounded time: short account timeouts, and the test measures the wall clock (no sleeps);
* bounded memory: the flood is measured with ``tracemalloc``;
* the message is neither lost nor counted as delivered: it is refused to the caller, or
  waits in the outbox, or goes through another account; the delivery log row says
  ``protocol_error`` with no reply code (NULL) when the server broke the protocol;
* the batch is unharmed: the other messages go out through a healthy second account;
* every text the server sent is stored and shown as valid, bounded text.

The reader's own unit tests are in ``test_pipelining.py``; form input in
``test_hostile_input.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from django.core.mail import EmailMessage
from django.core.management import call_command
from django.test import Client

from django_multismtp import ops, worker
from django_multismtp.exceptions import SendFailed
from django_multismtp.models import DeliveryLog, OutboxMessage, SmtpAccount
from django_multismtp.replies import HINTS, Outcome
from django_multismtp.transport import AuthMethod, Security, ServerConfig, Session
from tests.factories import SmtpAccountFactory, UserFactory
from tests.mailers import get_mailer, use_mailers
from tests.smtp_servers import SMTPTestServer, TLSFiles

pytestmark = pytest.mark.django_db

#: The hint of a protocol error, as the issue words it.
PROTOCOL_HINT = "this port does not speak SMTP; check the port and security mode"
#: A direct send, a worker pass or a test action takes no longer than this (the account
#: timeouts are 1 s; a server that says nothing makes one of them run out).
TIME_BOUND = 6.0
Status = OutboxMessage.Status


# ---------------------------------------------------------------------------------------
# The hostile server
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Flood:
    """Write ``line`` over and over, not reading any more, until the client hangs up (or
    ``limit`` bytes went out, so the test ends even against a client that never does)."""

    line: bytes
    limit: int = 8 * 2**20


@dataclasses.dataclass(frozen=True)
class Read:
    """Read ``size`` bytes of what the client sends (part of a message), then go on."""

    size: int


@dataclasses.dataclass(frozen=True)
class HalfClose:
    """Shut the server's side for writing (the client reads EOF) but keep reading."""


@dataclasses.dataclass(frozen=True)
class Silent:
    """Say nothing, read nothing: the client's timeout must end it."""


Step = bytes | Flood | Read | HalfClose | Silent

EHLO = b"250-hostile.test\r\n250-PIPELINING\r\n250 SIZE 100000000\r\n"
DEFAULTS: dict[str, bytes] = {
    "GREETING": b"220 hostile.test ESMTP\r\n",
    "EHLO": EHLO,
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "END": b"250 2.0.0 Ok: queued\r\n",
    "RSET": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}


class HostileServer:
    """Plays ``script`` on every connection: stage -> steps.

    Stages: GREETING, EHLO (EHLO and HELO), MAIL, RCPT, DATA, END (after the message's
    final dot), RSET, QUIT. A stage not in the script gets a proper answer. After a 354
    to DATA the server reads the message, unless a step (a flood) ended the session.
    """

    def __init__(
        self,
        script: dict[str, Step | Sequence[Step]] | None = None,
        *,
        tls: TLSFiles | None = None,
        receive_buffer: int | None = None,
    ) -> None:
        self.script = script or {}
        self.tls = tls
        self.receive_buffer = receive_buffer
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0
        self.commands: list[str] = []
        #: Messages the client finished (its final dot arrived), whatever was answered.
        self.messages: list[bytes] = []
        self.flooded = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()

    # -- life cycle ---------------------------------------------------------------------
    def __enter__(self) -> HostileServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _start(self) -> None:
        self._stopped = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.receive_buffer:  # before listen(): the window the client sees is small
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        context = self.tls.server_context() if self.tls else None
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=context)

    async def _stop(self) -> None:
        assert self._stopped is not None and self._server is not None
        self._stopped.set()
        self._server.close()
        # Sessions still reading must end on this loop, before it closes.
        for task in self._sessions:
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    # -- one connection -----------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        finally:
            writer.close()
            self._sessions.discard(task)

    async def _play(
        self, stage: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[bool, bytes]:
        """Play the stage's steps: (go on with the session, bytes written)."""
        steps = self.script.get(stage, DEFAULTS[stage])
        if not isinstance(steps, list | tuple):
            steps = [steps]
        written = b""
        for step in steps:
            if isinstance(step, bytes):
                writer.write(step)
                await writer.drain()
                written += step
            elif isinstance(step, Read):
                await reader.readexactly(step.size)
            elif isinstance(step, Flood):
                chunk = step.line * max(1, 65536 // len(step.line))
                while self.flooded < step.limit and not writer.is_closing():
                    writer.write(chunk)
                    await writer.drain()
                    self.flooded += len(chunk)
                return False, written
            elif isinstance(step, HalfClose):
                writer.write_eof()
                while await reader.read(65536):
                    pass
                return False, written
            else:
                assert self._stopped is not None
                await self._stopped.wait()
                return False, written
        return True, written

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        go_on, _ = await self._play("GREETING", reader, writer)
        while go_on:
            line = await reader.readline()
            if not line:
                return
            command = line.decode("ascii", "replace").rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            stage = {"HELO": "EHLO", "EHLO": "EHLO"}.get(verb, verb)
            if stage not in DEFAULTS or stage in ("GREETING", "END"):
                writer.write(b"502 5.5.2 Error: command not recognized\r\n")
                continue
            go_on, written = await self._play(stage, reader, writer)
            if stage == "QUIT":
                return
            if go_on and stage == "DATA" and written.startswith(b"354"):
                body = b""
                while (data := await reader.readline()) != b".\r\n":
                    if not data:
                        return
                    body += data
                self.messages.append(body)
                go_on, _ = await self._play("END", reader, writer)


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``hostile(script, **options)`` starts a server; all stop at the end of the test."""
    with contextlib.ExitStack() as stack:

        def start(script: dict[str, Any] | None = None, **options: Any) -> HostileServer:
            return stack.enter_context(HostileServer(script, **options))

        yield start


def hostile_account(server: HostileServer, **kwargs: Any) -> SmtpAccount:
    defaults: dict[str, Any] = {
        "name": "H",
        "host": server.host,
        "port": server.port,
        "security": "tls" if server.tls else "none",
        "timeout": 1,
        "is_site_default": True,
        "priority": 1,
    }
    if server.tls is not None:
        defaults["ca_file"] = server.tls.cert_path
    defaults.update(kwargs)
    return SmtpAccountFactory(**defaults)


def message(n: int = 1) -> EmailMessage:
    return EmailMessage(f"Message {n}", f"Body {n}\n", to=["to@example.test"])


def log_rows(account: str | None = None) -> list[tuple[str, str, int | None]]:
    rows = DeliveryLog.objects.order_by("id")
    if account is not None:
        rows = rows.filter(account_name=account)
    return list(rows.values_list("account_name", "outcome", "reply_code"))


@contextlib.contextmanager
def bounded_time(seconds: float = TIME_BOUND) -> Iterator[None]:
    started = time.monotonic()
    yield
    assert time.monotonic() - started < seconds


# ---------------------------------------------------------------------------------------
# The cases: a protocol broken at every stage
# ---------------------------------------------------------------------------------------

SSH_BANNER = b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"

#: Scripts after which the server is known to break the protocol: protocol_error, NULL.
BROKEN: dict[str, dict[str, Any]] = {
    "greeting-ssh-banner": {"GREETING": SSH_BANNER},
    "greeting-garbage-bytes": {"GREETING": b"\x00\xff\xfe\x80garbage\r\n"},
    "greeting-250": {"GREETING": b"250 hostile.test ready\r\n"},
    "greeting-code-999": {"GREETING": b"999 hostile.test\r\n"},
    "greeting-continuation-flood": {"GREETING": Flood(b"220-hostile.test\r\n")},
    "ehlo-354": {"EHLO": b"354 go ahead\r\n"},
    "ehlo-garbage-not-utf8": {"EHLO": b"\xe9\xe8\xff\x00 nonsense\r\n"},
    "mail-354": {"MAIL": b"354 Start mail input\r\n"},
    "mail-garbage": {"MAIL": b"hello there\r\n"},
    "mail-continuation-flood": {"MAIL": Flood(b"250-2.1.0 Ok\r\n")},
    "rcpt-354": {"RCPT": b"354 go ahead\r\n"},
    "rcpt-code-000": {"RCPT": b"000 what\r\n"},
    "data-250": {"DATA": b"250 2.0.0 Ok\r\n"},
    "data-220": {"DATA": b"220 hostile.test ESMTP\r\n"},
    "end-354": {"END": b"354 more please\r\n"},
    "end-garbage-not-utf8": {"END": b"\xff\xfe\x00\x01 \xe9\r\n"},
    "end-code-199": {"END": b"199 hmm\r\n"},
    # Two replies to MAIL: every later reply is taken for the next command's, and DATA
    # gets a 250 where a 354 was due.
    "unsolicited-replies": {"MAIL": b"250 2.1.0 Ok\r\n250 2.1.0 Ok again\r\n"},
    # Stops reading after 354 and streams 250s while the client waits to write.
    "data-flood-of-250": {"DATA": [b"354 go\r\n", Flood(b"250 2.0.0 Ok\r\n")]},
}


@pytest.fixture
def healthy(second_server: SMTPTestServer) -> SMTPTestServer:
    """G: a proper server, same purpose, tried after H."""
    SmtpAccountFactory.for_server(second_server, name="G", priority=2, timeout=1)
    return second_server


@pytest.mark.parametrize("script", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_protocol_fails_over_and_the_batch_is_delivered(
    mailer: None, hostile: Any, healthy: SMTPTestServer, clock: Any, script: dict[str, Any]
) -> None:
    server = hostile(script)
    account = hostile_account(server)
    messages = [message(n) for n in range(3)]

    with bounded_time():
        assert get_mailer().send_messages(messages) == 3

    statuses = [m.multismtp_status for m in messages]
    assert [(s.outcome, s.account) for s in statuses] == [("sent", "G")] * 3
    assert len(healthy.received) == 3
    # H broke the protocol once and was left alone for the rest of the batch.
    assert log_rows("H") == [("H", "protocol_error", None)]
    assert log_rows("G") == [("G", "sent", 250)] * 3
    account.refresh_from_db()
    assert account.last_error_code is None
    assert PROTOCOL_HINT in account.last_error
    assert "\x00" not in account.last_error
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize("script", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_protocol_alone_queues_the_message(
    mailer: None, hostile: Any, clock: Any, script: dict[str, Any]
) -> None:
    """No other account: the message waits in the outbox, never counted as delivered."""
    server = hostile(script)
    hostile_account(server)
    msg = message()

    with bounded_time():
        assert get_mailer().send_messages([msg]) == 1  # accepted for later

    status = msg.multismtp_status
    assert (status.outcome, status.queued) == ("queued", True)
    assert log_rows() == [("H", "protocol_error", None)]
    row = OutboxMessage.objects.get()
    assert (row.status, row.attempts, row.last_error_code) == (Status.QUEUED, 1, None)
    assert PROTOCOL_HINT in row.last_error


@pytest.mark.parametrize("fail_silently", [False, True], ids=["raises", "fail-silently"])
@pytest.mark.parametrize("script", ["mail-354", "data-250", "end-354"])
def test_without_the_outbox_a_broken_protocol_is_a_failure_not_a_delivery(
    settings: Any, hostile: Any, clock: Any, script: str, fail_silently: bool
) -> None:
    use_mailers(settings, default={"OPTIONS": {"fail_silently": fail_silently}})
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "off"}
    server = hostile(BROKEN[script])
    hostile_account(server)
    msg = message()

    with bounded_time():
        if fail_silently:
            assert get_mailer().send_messages([msg]) == 0
        else:
            with pytest.raises(SendFailed) as caught:
                get_mailer().send_messages([msg])
            assert caught.value.failure is not None
            assert caught.value.failure.outcome == Outcome.PROTOCOL_ERROR
            assert PROTOCOL_HINT in str(caught.value)
    assert msg.multismtp_status.outcome == "protocol_error"
    assert log_rows() == [("H", "protocol_error", None)]
    if script != "end-354":
        # No content went out; after a 354 to MAIL the client did not end an (empty)
        # message the server would deliver.
        assert server.messages == []


def test_a_354_to_mail_sends_no_empty_message(hostile: Any) -> None:
    """At the transport: after a 354 to MAIL the client hangs up; it never ends a message."""
    server = hostile({"MAIL": b"354 go ahead\r\n", "DATA": b"354 go\r\n"})
    config = ServerConfig(
        host=server.host,
        port=server.port,
        security=Security.NONE,
        auth_method=AuthMethod.NONE,
        timeout=1,
    )

    async def send() -> Any:
        session = Session(config)
        try:
            return await session.send("a@example.test", ["b@example.test"], b"Subject: x\r\n\r\nx")
        finally:
            await session.close()

    delivery = asyncio.run(send())
    assert delivery.failure is not None
    assert (delivery.failure.outcome, delivery.failure.code, delivery.code) == (
        Outcome.PROTOCOL_ERROR,
        None,
        None,
    )
    assert server.messages == []


# ---------------------------------------------------------------------------------------
# Text that is not UTF-8, NUL bytes, over-long text
# ---------------------------------------------------------------------------------------

LATIN1_REFUSAL = "Exp\xe9diteur refus\xe9".encode("latin-1")


@pytest.mark.parametrize("fail_silently", [False, True], ids=["raises", "fail-silently"])
def test_a_latin1_refusal_is_stored_with_replacement_characters(
    settings: Any, hostile: Any, clock: Any, fail_silently: bool
) -> None:
    use_mailers(settings, default={"OPTIONS": {"fail_silently": fail_silently}})
    server = hostile({"MAIL": b"550 5.7.1 " + LATIN1_REFUSAL + b"\x00 \x1b[31m\r\n"})
    hostile_account(server)
    msg = message()

    if fail_silently:
        assert get_mailer().send_messages([msg]) == 0
    else:
        with pytest.raises(SendFailed) as caught:
            get_mailer().send_messages([msg])
        assert "Exp\ufffdditeur refus\ufffd" in str(caught.value)
    [row] = DeliveryLog.objects.all()
    assert (row.outcome, row.reply_code) == ("permanent", 550)
    assert "5.7.1 Exp\ufffdditeur refus\ufffd" in row.reply_text
    assert "\x00" not in row.reply_text and "\x1b" not in row.reply_text
    assert msg.multismtp_status.error.startswith("550 5.7.1 Exp\ufffdditeur")


def test_a_latin1_greeting_refusal_is_stored_on_the_account_the_log_and_the_outbox(
    mailer: None, hostile: Any, clock: Any
) -> None:
    server = hostile({"GREETING": b"554 5.7.1 Acc\xe8s refus\xe9 \x00\xff\r\n"})
    account = hostile_account(server)
    msg = message()

    assert get_mailer().send_messages([msg]) == 1  # queued: the account refused service
    account.refresh_from_db()
    row = OutboxMessage.objects.get()
    [log] = DeliveryLog.objects.all()
    for text in (account.last_error, row.last_error, log.reply_text):
        assert "Acc\ufffds refus\ufffd" in text
        assert "\x00" not in text
    assert account.last_error_code == row.last_error_code == log.reply_code == 554


def test_an_over_long_reply_is_stored_bounded(mailer: None, hostile: Any, clock: Any) -> None:
    lines = b"".join(b"550-5.7.1 " + b"\xe9" * 500 + b"\r\n" for _ in range(20))
    server = hostile({"RCPT": lines + b"550 5.7.1 end\r\n"})
    hostile_account(server)

    with pytest.raises(SendFailed):
        get_mailer().send_messages([message()])
    [log] = DeliveryLog.objects.all()
    assert log.reply_code == 550
    assert len(log.reply_text) <= 2000


def test_the_storage_layer_cleans_what_a_caller_forgot() -> None:
    """Whatever path writes them (save, update, the bulk insert of the log), reply texts
    are stored valid and NUL-free (PostgreSQL refuses NUL), and invalid codes as NULL."""
    from django_multismtp.bulk import insert_rows
    from django_multismtp.clock import now

    raw = "5.7.1 Exp\udce9diteur\x00 " + "x" * 5000

    def entry(code: int) -> DeliveryLog:
        return DeliveryLog(
            account_name="H",
            message_id="<m@x>",
            outcome="protocol_error",
            reply_code=code,
            reply_text=raw,
            created_at=now(),
        )

    insert_rows(DeliveryLog, [entry(-1)])  # one row: one INSERT with its values
    insert_rows(DeliveryLog, [entry(999), entry(-1)])  # more: one array per column
    account = SmtpAccountFactory(last_error=raw, last_error_code=999)
    SmtpAccount.objects.filter(pk=account.pk).update(last_error=raw, last_error_code=-1)
    logs = list(DeliveryLog.objects.all())
    assert len(logs) == 3
    account.refresh_from_db()
    for text, code in (
        *((log.reply_text, log.reply_code) for log in logs),
        (account.last_error, account.last_error_code),
    ):
        assert code is None
        assert text.startswith("5.7.1 Exp\ufffdditeur\ufffd x")
        assert len(text) <= 2000


# ---------------------------------------------------------------------------------------
# Half-closed sockets and silence: bounded by the timeouts, queued
# ---------------------------------------------------------------------------------------

DISCONNECTED: dict[str, dict[str, Any]] = {
    "half-closed-at-greeting": {"GREETING": HalfClose()},
    "half-closed-at-mail": {"MAIL": HalfClose()},
    "half-closed-at-end": {"END": HalfClose()},
    "silent-at-end": {"END": Silent()},
}


@pytest.mark.parametrize("script", DISCONNECTED.values(), ids=DISCONNECTED.keys())
def test_a_half_closed_or_silent_server_costs_one_timeout_and_the_batch_goes_on(
    mailer: None, hostile: Any, healthy: SMTPTestServer, clock: Any, script: dict[str, Any]
) -> None:
    server = hostile(script)
    hostile_account(server)
    messages = [message(n) for n in range(3)]

    with bounded_time():
        assert get_mailer().send_messages(messages) == 3

    assert [m.multismtp_status.account for m in messages] == ["G"] * 3
    assert log_rows("H") == [("H", "connection_failed", None)]
    assert len(healthy.received) == 3


# ---------------------------------------------------------------------------------------
# TLS, then garbage
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [{"GREETING": b"\x16\x03\x01garbage\xff\r\n"}, {"END": b"\xff\xff not smtp\r\n"}],
    ids=["greeting", "end-of-data"],
)
def test_tls_then_garbage_is_a_protocol_error(
    mailer: None,
    hostile: Any,
    healthy: SMTPTestServer,
    tls_files: TLSFiles,
    clock: Any,
    script: dict[str, Any],
) -> None:
    server = hostile(script, tls=tls_files)
    hostile_account(server)
    messages = [message(n) for n in range(2)]

    with bounded_time():
        assert get_mailer().send_messages(messages) == 2

    assert log_rows("H") == [("H", "protocol_error", None)]
    assert [m.multismtp_status.account for m in messages] == ["G", "G"]


# ---------------------------------------------------------------------------------------
# Floods: bounded memory
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mib", [1, 4])
def test_a_flood_of_replies_while_the_client_waits_to_write_keeps_memory_bounded(
    hostile: Any, mib: int
) -> None:
    """The server stops reading a large message and streams 250s: the reader keeps a
    bounded number of them, then hangs up; nothing is counted as delivered.

    (Unbounded, the first 250 was taken for the answer to the message, which was counted
    as delivered, or, while the client still waited to write, the replies piled up until
    the timeout: memory grew with the flood.)"""
    flood = Flood(b"250 2.0.0 Ok\r\n", limit=64 * 2**20)
    server = hostile(
        {"DATA": [b"354 go\r\n", Read(2**16), flood]},
        receive_buffer=4096,
    )
    config = ServerConfig(
        host=server.host,
        port=server.port,
        security=Security.NONE,
        auth_method=AuthMethod.NONE,
        timeout=60,
    )
    size = mib * 2**20
    data = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (size // 1000)

    async def send() -> Any:
        session = Session(config)
        try:
            return await session.send("a@example.test", ["b@example.test"], data)
        finally:
            await session.close()

    tracemalloc.start()
    try:
        started = time.monotonic()
        delivery = asyncio.run(send())
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.PROTOCOL_ERROR
    assert delivery.code is None
    # The message is copied once (dot-stuffing) and may sit in the transport's buffer:
    # two copies, and little besides. Unbounded, the replies take hundreds of MiB.
    assert peak < 2 * len(data) + 2**20, f"peak {peak / 2**20:.1f} MiB"
    # Closed at the bound, not at the timeout (a timeout is not a protocol error either):
    # the timeout is far beyond what a loaded CI machine takes to read the bounded flood.
    assert elapsed < 30
    assert server.messages == []


def test_a_250_before_the_end_of_the_message_reached_the_server_is_no_delivery(
    hostile: Any,
) -> None:
    """The server reads a little of a large message, says 250, reads the rest and refuses
    it: the early 250 answered nothing (the final dot was still in the client's buffer)."""
    server = hostile(
        {"DATA": [b"354 go\r\n", Read(2**16), b"250 2.0.0 Ok\r\n"], "END": b"554 5.7.1 No\r\n"},
        receive_buffer=4096,
    )
    config = ServerConfig(
        host=server.host,
        port=server.port,
        security=Security.NONE,
        auth_method=AuthMethod.NONE,
        timeout=2,
    )
    data = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 2**12

    async def send() -> Any:
        session = Session(config)
        try:
            return await session.send("a@example.test", ["b@example.test"], data)
        finally:
            await session.close()

    delivery = asyncio.run(send())
    assert delivery.failure is not None
    assert (delivery.failure.outcome, delivery.code) == (Outcome.PROTOCOL_ERROR, None)
    assert "before the end of the message" in delivery.failure.text


# ---------------------------------------------------------------------------------------
# The outbox worker
# ---------------------------------------------------------------------------------------

WORKER_CASES = ["greeting-ssh-banner", "data-250", "end-354", "end-garbage-not-utf8"]


@pytest.fixture
def always_queue(settings: Any, mailer: None) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "OUTBOX": "always"}


@pytest.mark.parametrize("script", WORKER_CASES)
def test_the_worker_fails_over_and_delivers_the_batch(
    always_queue: None, hostile: Any, healthy: SMTPTestServer, clock: Any, script: str
) -> None:
    server = hostile(BROKEN[script])
    hostile_account(server)
    assert get_mailer().send_messages([message(n) for n in range(3)]) == 3

    with bounded_time():
        result = worker.drain()

    assert (result.sent, result.retrying, result.failed) == (3, 0, 0)
    assert len(healthy.received) == 3
    assert log_rows("H") == [("H", "protocol_error", None)]
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {Status.SENT}


@pytest.mark.parametrize("script", WORKER_CASES)
def test_the_worker_keeps_the_message_and_stores_the_failure(
    always_queue: None, hostile: Any, clock: Any, script: str
) -> None:
    server = hostile(BROKEN[script])
    hostile_account(server)
    assert get_mailer().send_messages([message(1), message(2)]) == 2

    with bounded_time():
        call_command("send_queued_mail", stdout=io.StringIO())

    rows = list(OutboxMessage.objects.order_by("id"))
    # The first reached H and failed; the second was never tried on it (H was out).
    assert [(r.status, r.last_error_code) for r in rows] == [(Status.QUEUED, None)] * 2
    assert all(PROTOCOL_HINT in r.last_error for r in rows)
    assert sorted(r.attempts + r.deferrals for r in rows) == [1, 1]
    assert log_rows() == [("H", "protocol_error", None)]


# ---------------------------------------------------------------------------------------
# "Test connection" (admin) and "Test settings" (self-service): a page, never a 500
# ---------------------------------------------------------------------------------------

TEST_CASES = ["greeting-ssh-banner", "greeting-250", "ehlo-garbage-not-utf8"]


@pytest.mark.parametrize("script", TEST_CASES)
def test_the_admin_test_action_shows_the_hint(
    admin_client: Client, hostile: Any, clock: Any, script: str
) -> None:
    server = hostile(BROKEN[script])
    account = hostile_account(server)

    with bounded_time():
        response = admin_client.post(
            "/admin/django_multismtp/smtpaccount/",
            {"action": "test_connection", "_selected_action": [account.pk]},
        )

    assert response.status_code == 200
    assert PROTOCOL_HINT in response.content.decode()
    account.refresh_from_db()
    assert account.last_error_code is None
    assert PROTOCOL_HINT in account.last_error


@pytest.mark.parametrize(
    "greeting",
    [SSH_BANNER, b"554 5.7.1 Acc\xe8s refus\xe9 \x00\xff\r\n"],
    ids=["ssh-banner", "latin1-refusal"],
)
def test_the_self_service_test_shows_the_hint(
    settings: Any, hostile: Any, clock: Any, greeting: bytes
) -> None:
    settings.MULTISMTP = {**settings.MULTISMTP, "ALLOW_INTERNAL_HOSTS": True}
    user = UserFactory(username="sam")
    client = Client()
    client.force_login(user)
    server = hostile({"GREETING": greeting})
    account = hostile_account(server, owner=user, is_site_default=False, public_host_only=True)

    with bounded_time():
        response = client.post(f"/smtp/{account.pk}/test/", follow=True)

    assert response.status_code == 200
    page = response.content.decode()
    assert "The test failed" in page
    if greeting == SSH_BANNER:
        assert PROTOCOL_HINT in page
    else:
        assert "Acc\ufffds refus\ufffd" in page


def test_a_test_is_bounded_by_test_timeout_whatever_the_account_timeout(
    settings: Any, hostile: Any, clock: Any
) -> None:
    """An HTTP port says nothing until it hears a request: the test must not wait out
    the account's 10-minute timeout."""
    settings.MULTISMTP = {**settings.MULTISMTP, "TEST_TIMEOUT": 0.5}
    server = hostile({"GREETING": Silent()})
    account = hostile_account(server, timeout=600)

    with bounded_time(3):
        result = ops.test_connection(account)

    assert not result.ok
    assert result.outcome == "connection_failed"
    assert result.hint == HINTS["timeout"]


# ---------------------------------------------------------------------------------------
# A CA file that is not there
# ---------------------------------------------------------------------------------------


def test_a_missing_ca_file_is_a_configuration_error_naming_the_file(
    mailer: None, hostile: Any, tls_files: TLSFiles, clock: Any, tmp_path: Any
) -> None:
    server = hostile(tls=tls_files)
    missing = str(tmp_path / "no-such-ca.pem")
    account = hostile_account(server, ca_file=missing)

    result = ops.test_connection(account)
    assert (result.outcome, result.code) == ("config_error", None)
    assert missing in result.reply
    assert "Nothing accepts connections" not in result.hint

    # A configuration error needs a person: it raises now instead of waiting in the
    # outbox (issue #13; OUTBOX_QUEUE_CONFIG_ERRORS would queue it).
    msg = message()
    with pytest.raises(SendFailed) as caught:
        get_mailer().send_messages([msg])
    assert missing in str(caught.value)
    assert missing in msg.multismtp_status.error
    assert msg.multismtp_status.queued is False
    assert log_rows() == [("H", "config_error", None)]
    assert server.connections == 0
