"""Mail transactions on our own reply reader (``django_multismtp.pipelining``).

aiosmtpd answers every command in turn and cannot be told to hold its replies, garble
them or trickle them out, so most tests here talk to :class:`ScriptedServer`: a small
SMTP server on 127.0.0.1, written out by hand, that answers what each test tells it to
and records what the client really sent. Holding every reply until a whole group
(MAIL, RCPT..., DATA) has arrived is how a test proves the client pipelines: a client
that waited for each reply would stall, and time out.

The aiosmtpd servers of the rest of the suite offer PIPELINING by default, so the whole
fault matrix runs on the pipelined path too; the last tests here send through the
backend to an aiosmtpd server that does not offer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence

import aiosmtplib
import pytest
from django.core import mail

from django_multismtp.pipelining import (
    MAX_UNSOLICITED,
    ProtocolError,
    ReplyReader,
    Wire,
    dot_stuffed,
    wire_format,
)
from django_multismtp.replies import Outcome
from django_multismtp.transport import AuthMethod, Security, ServerConfig, Session
from tests.conftest import USERS
from tests.factories import SmtpAccountFactory
from tests.mailers import get_mailer
from tests.smtp_servers import SMTPTestServer, TLSFiles

#: Sent instead of a reply: the server hangs up there.
DROP = "<drop>"
#: Sent instead of a reply: the server says nothing more, and keeps the connection open.
SILENT = "<silent>"

# ---------------------------------------------------------------------------------------
# The scripted server
# ---------------------------------------------------------------------------------------


class ScriptedServer:
    """A hand-written SMTP server for one test's connection(s).

    ``replies`` maps a verb ("MAIL", "RCPT", "DATA", "END" for the end of the message,
    "RSET") to the replies to give, in turn; when they run out, the server answers as a
    normal one would (DATA gets 354 only when MAIL and a RCPT were accepted).
    ``hold_groups``: read commands until DATA (or RSET/QUIT) before answering any, as a
    client that pipelines lets the server do. ``trickle``: write replies a byte at a time.
    """

    def __init__(
        self,
        *,
        pipelining: bool = True,
        size: bool = True,
        hold_groups: bool = False,
        trickle: bool = False,
        replies: dict[str, Sequence[str]] | None = None,
        ehlo_lines: Sequence[str] = (),
        deaf_after_354: bool = False,
        chatter: Sequence[str] = (),
        hold_end: int = 0,
    ) -> None:
        self.pipelining = pipelining
        self.size = size
        self.hold_groups = hold_groups
        self.trickle = trickle
        self.replies = {verb: deque(lines) for verb, lines in (replies or {}).items()}
        self.ehlo_lines = list(ehlo_lines)
        #: After 354, stop reading: the client's writes back up.
        self.deaf_after_354 = deaf_after_354
        self._done = asyncio.Event()
        #: Lines written, unasked, right after each end-of-data reply.
        self.chatter = list(chatter)
        #: For the first ``hold_end`` messages, answer the end of the content only once
        #: the next message's envelope (up to DATA) has arrived too.
        self.hold_end = hold_end
        self.connections = 0
        #: What arrived of messages whose connection closed before their end.
        self.aborted: list[bytes] = []
        self.commands: list[str] = []
        self.messages: list[bytes] = []
        #: The most commands the client had sent before getting a reply to the first.
        self.most_unanswered = 0
        self.port = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ScriptedServer]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._done.set()
            server.close()
            await server.wait_closed()

    def config(self, timeout: float = 5.0) -> ServerConfig:
        return ServerConfig(
            host="127.0.0.1",
            port=self.port,
            security=Security.NONE,
            auth_method=AuthMethod.NONE,
            timeout=timeout,
        )

    def _answer(self, verb: str, default: str) -> str:
        queued = self.replies.get(verb)
        return queued.popleft() if queued else default

    async def _write(self, writer: asyncio.StreamWriter, lines: list[str]) -> bool:
        """Write replies; False when one of them was DROP (the connection is closed)."""
        for line in lines:
            if line == DROP:
                writer.close()
                return False
            if line == SILENT:
                await self._done.wait()
                return False
            data = f"{line}\r\n".encode()
            if self.trickle:
                for index in range(len(data)):
                    writer.write(data[index : index + 1])
                    await writer.drain()
            else:
                writer.write(data)
        await writer.drain()
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await self._write(writer, ["220 scripted.test ESMTP"])
        pending: list[str] = []
        held: list[str] = []
        mail_ok = False
        recipients = 0
        while True:
            line = await reader.readline()
            if not line:
                return
            command = line.decode().rstrip("\r\n")
            self.commands.append(command)
            verb = command.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                features = [*self.ehlo_lines]
                if self.pipelining:
                    features.append("PIPELINING")
                if self.size:
                    features.append("SIZE 10000000")
                lines = ["scripted.test", *features]
                ehlo = [f"250-{text}" for text in lines[:-1]] + [f"250 {lines[-1]}"]
                await self._write(writer, ehlo)
                continue
            if verb == "QUIT":
                await self._write(writer, ["221 Bye"])
                return
            pending.append(verb)
            if (self.hold_groups or held) and verb not in ("DATA", "RSET", "NOOP"):
                continue
            self.most_unanswered = max(self.most_unanswered, len(pending))
            answers = []
            for waiting in pending:
                if waiting == "MAIL":
                    answer = self._answer("MAIL", "250 2.1.0 Ok")
                    mail_ok = answer.startswith("250")
                    recipients = 0
                elif waiting == "RCPT":
                    answer = self._answer("RCPT", "250 2.1.5 Ok")
                    recipients += answer.startswith("25")
                elif waiting == "DATA":
                    ready = mail_ok and recipients
                    answer = self._answer("DATA", "354 End data with <CR><LF>.<CR><LF>")
                    if not ready and answer == "354 End data with <CR><LF>.<CR><LF>":
                        answer = "503 5.5.1 No valid recipients"
                elif waiting == "RSET":
                    answer = self._answer("RSET", "250 2.0.0 Ok")
                    mail_ok, recipients = False, 0
                else:
                    answer = "500 5.5.2 Unknown command"
                answers.append(answer)
            pending = []
            if not await self._write(writer, held + answers):
                return
            held = []
            if answers and answers[-1] == DROP:
                return
            if answers and answers[-1].startswith("354"):
                if self.deaf_after_354:
                    await self._done.wait()
                    return
                body = b""
                while (data_line := await reader.readline()) != b".\r\n":
                    if not data_line:
                        self.aborted.append(body)
                        return
                    body += data_line[1:] if data_line.startswith(b"..") else data_line
                self.messages.append(body)
                mail_ok, recipients = False, 0
                end = [self._answer("END", "250 2.0.0 Ok: queued")]
                if len(self.messages) <= self.hold_end:
                    held = end
                elif not await self._write(writer, end + self.chatter):
                    return


async def _send_all(
    server: ScriptedServer,
    messages: Sequence[tuple[str, Sequence[str], bytes]],
    reply_timeout: float = 5.0,
) -> list:
    session = Session(server.config(reply_timeout))
    try:
        return [await session.send(sender, rcpts, data) for sender, rcpts, data in messages]
    finally:
        await session.close()


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nHello\r\n"


# ---------------------------------------------------------------------------------------
# Wire format
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "wire"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\n\nb\r", b"a\r\n\r\nb\r\n"),
        (b"", b"\r\n"),
    ],
)
def test_wire_format_makes_every_line_end_crlf(raw: bytes, wire: bytes) -> None:
    assert wire_format(raw) == wire


def test_dot_stuffing_doubles_leading_dots_only() -> None:
    assert dot_stuffed(b".a\r\nb.c\r\n.\r\n") == b"..a\r\nb.c\r\n..\r\n.\r\n"
    assert dot_stuffed(b"plain\r\n") == b"plain\r\n.\r\n"


# ---------------------------------------------------------------------------------------
# Pipelined and lock-step transactions
# ---------------------------------------------------------------------------------------


def test_pipelining_server_gets_the_envelope_in_one_group() -> None:
    server = ScriptedServer(hold_groups=True)
    recipients = ["b@example.com", "c@example.com", "d@example.com"]

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", recipients, MESSAGE)] * 2)

    first, second = run(scenario())
    assert first.failure is None and second.failure is None
    assert (first.code, first.reply) == (250, "2.0.0 Ok: queued")
    # MAIL, three RCPTs and DATA were all sent before the server answered any of them.
    assert server.most_unanswered == 5
    assert server.messages == [MESSAGE, MESSAGE]
    assert server.commands[1] == f"MAIL FROM:<a@example.com> SIZE={len(MESSAGE)}"


def test_without_pipelining_each_command_waits_for_its_reply() -> None:
    server = ScriptedServer(pipelining=False, size=False)

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)])

    [delivery] = run(scenario())
    assert delivery.failure is None
    assert server.most_unanswered == 1
    assert server.commands[1:4] == ["MAIL FROM:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"]


def test_a_client_that_did_not_pipeline_would_stall_a_holding_server() -> None:
    """The control for the test above: holding replies really does catch lock-step."""
    server = ScriptedServer(pipelining=False, hold_groups=True)

    async def scenario() -> list:
        async with server.running():
            return await _send_all(
                server, [("a@example.com", ["b@example.com"], MESSAGE)], reply_timeout=0.3
            )

    [delivery] = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.CONNECTION_FAILED
    assert "Timed out" in delivery.failure.text


def test_message_is_sent_in_wire_format_with_dots_stuffed() -> None:
    server = ScriptedServer()
    body = b"Subject: dots\n\n.leading dot\n..two\nlast line without newline"

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], body)])

    [delivery] = run(scenario())
    assert delivery.failure is None
    assert server.messages == [wire_format(body)]


def test_a_large_message_goes_through_flow_control_intact() -> None:
    server = ScriptedServer()
    body = b"Subject: big\r\n\r\n" + b"".join(b"%07d line of text\r\n" % n for n in range(60_000))

    async def scenario() -> list:
        async with server.running():
            # The timeout bounds a hang, it measures nothing: a busy CI machine (the
            # suite runs its environments in parallel) may take seconds for 1.2 MB.
            return await _send_all(
                server, [("a@example.com", ["b@example.com"], body)], reply_timeout=60.0
            )

    [delivery] = run(scenario())
    assert delivery.failure is None
    assert server.messages == [body]
    assert server.commands[1].endswith(f"SIZE={len(body)}")


def test_a_server_that_stops_reading_mid_message_times_out() -> None:
    server = ScriptedServer(deaf_after_354=True)
    # Far more than the socket buffers hold, so the transport must wait to write.
    body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n" * 1 + (b"y" * 998 + b"\r\n") * 12_000

    async def scenario() -> list:
        async with server.running():
            return await _send_all(
                server, [("a@example.com", ["b@example.com"], body)], reply_timeout=0.3
            )

    [delivery] = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.CONNECTION_FAILED
    assert "Timed out sending the message" in delivery.failure.text


def test_a_message_bigger_than_the_socket_buffers_waits_for_the_server_and_the_next_follows() -> (
    None
):
    """The client waits while the server reads a big message, then carries on: the next
    message on the same connection goes out without waiting for anything more."""
    server = ScriptedServer()
    # 8 MB: more than the kernel takes at once (Linux's send buffer grows to 4 MiB), so
    # the rest waits in the transport until the server has read its way through. Long
    # lines (this server does not mind) keep the server's reading quick.
    body = b"Subject: big\r\n\r\n" + (b"y" * 30_000 + b"\r\n") * 270
    messages = [
        ("a@example.com", ["b@example.com"], body),
        ("a@example.com", ["c@example.com"], MESSAGE),
    ]

    async def scenario() -> list:
        async with server.running():
            # The timeout bounds a hang (a busy machine may take seconds for 8 MB).
            return await _send_all(server, messages, reply_timeout=20.0)

    big, small = run(scenario())
    assert big.failure is None and small.failure is None
    assert server.messages == [body, MESSAGE]
    assert server.connections == 1


def test_a_server_that_answers_for_a_while_then_goes_silent_times_out() -> None:
    """The time limit holds for every reply, not only for the first ones: a server that
    answered MAIL and every RCPT at once and then never answers DATA must not hold the
    batch for ever."""
    server = ScriptedServer(pipelining=False, replies={"DATA": [SILENT]})
    # Lock-step, one round trip per recipient: the silence starts well after the first
    # reply, while that reply's time limit is still running.
    recipients = [f"r{n}@example.com" for n in range(500)]

    async def scenario() -> list:
        async with server.running():
            # The outer bound only turns a hang into a failure of this test.
            return await asyncio.wait_for(
                _send_all(server, [("a@example.com", recipients, MESSAGE)], 1.0), 20.0
            )

    [delivery] = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.CONNECTION_FAILED
    assert "Timed out" in delivery.failure.text
    assert server.commands.count("DATA") == 1
    assert server.messages == []


def test_replies_trickled_a_byte_at_a_time_and_multiline_are_read_whole() -> None:
    server = ScriptedServer(
        trickle=True,
        ehlo_lines=["8BITMIME", "ENHANCEDSTATUSCODES"],
        replies={"END": ["250-2.0.0 Ok\r\n250-queued as ABC\r\n250 thanks"]},
    )

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)] * 2)

    first, second = run(scenario())
    assert first.failure is None and second.failure is None
    assert first.reply == "2.0.0 Ok\nqueued as ABC\nthanks"
    assert second.reply == "2.0.0 Ok: queued"


def test_replies_nobody_asked_for_are_not_taken_for_answers() -> None:
    server = ScriptedServer(chatter=["550 5.0.0 unsolicited notice"])

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)] * 3)

    deliveries = run(scenario())
    assert [delivery.failure for delivery in deliveries] == [None, None, None]
    assert server.messages == [MESSAGE] * 3


# ---------------------------------------------------------------------------------------
# The next envelope rides with the content
# ---------------------------------------------------------------------------------------


async def _send_chain(
    server: ScriptedServer,
    messages: Sequence[tuple[str, Sequence[str], bytes]],
    config: ServerConfig | None = None,
) -> list:
    """Send on one session as the backend does: each send names the message after it."""
    session = Session(config or server.config(5.0))
    try:
        deliveries = []
        for index, (sender, recipients, data) in enumerate(messages):
            after = messages[index + 1] if index + 1 < len(messages) else None
            following = (after[0], after[1]) if after else None
            deliveries.append(await session.send(sender, recipients, data, following))
        return deliveries
    finally:
        await session.close()


def test_next_envelope_goes_out_with_the_content() -> None:
    # The server answers a message's end only after the next envelope has arrived: a
    # client that waited for that answer before sending the next MAIL would stall.
    server = ScriptedServer(hold_end=2)
    messages = [("a@example.com", [f"r{n}@example.com"], MESSAGE + b"%d\r\n" % n) for n in range(3)]

    async def scenario() -> list:
        async with server.running():
            return await _send_chain(server, messages)

    deliveries = run(scenario())
    assert [delivery.failure for delivery in deliveries] == [None, None, None]
    assert server.messages == [data for _, _, data in messages]
    assert server.connections == 1
    # Only the first envelope can know its size; the others went before theirs was read.
    mails = [command for command in server.commands if command.startswith("MAIL")]
    assert mails[0].endswith(f"SIZE={len(messages[0][2])}")
    assert mails[1:] == ["MAIL FROM:<a@example.com>"] * 2


def test_a_refusal_at_the_end_keeps_the_next_envelope() -> None:
    server = ScriptedServer(replies={"END": ["552 5.3.4 Message too big"]})
    messages = [("a@example.com", ["b@example.com"], MESSAGE)] * 3

    async def scenario() -> list:
        async with server.running():
            return await _send_chain(server, messages)

    refused, *sent = run(scenario())
    assert refused.failure is not None and refused.failure.code == 552
    assert [delivery.failure for delivery in sent] == [None, None]
    assert server.messages == [MESSAGE] * 3  # it records the refused one too
    assert "RSET" not in server.commands  # the transaction had ended; nothing to reset
    assert server.connections == 1


def test_a_refused_envelope_sent_ahead_is_reported_by_its_own_message() -> None:
    server = ScriptedServer(replies={"RCPT": ["250 ok", "550 5.1.1 No such user"]})
    messages = [
        ("a@example.com", ["b@example.com"], MESSAGE),
        ("a@example.com", ["gone@example.com"], MESSAGE),
        ("a@example.com", ["c@example.com"], MESSAGE),
    ]

    async def scenario() -> list:
        async with server.running():
            return await _send_chain(server, messages)

    first, refused, third = run(scenario())
    assert first.failure is None and third.failure is None
    assert refused.failure is not None and refused.failure.code == 550
    assert server.messages == [MESSAGE, MESSAGE]
    assert server.connections == 1


async def _send_then_another(server: ScriptedServer, announced: str) -> list:
    """Send a message naming ``announced`` as the next recipient, then send another."""
    async with server.running():
        session = Session(server.config(5.0))
        try:
            first = await session.send(
                "a@example.com", ["b@example.com"], MESSAGE, ("a@example.com", [announced])
            )
            other = await session.send("a@example.com", ["other@example.com"], MESSAGE)
            return [first, other]
        finally:
            await session.close()


def test_an_accepted_envelope_for_a_message_that_does_not_come_is_dropped_with_the_connection() -> (
    None
):
    """Ending it with an empty message would deliver a blank email: hang up instead."""
    server = ScriptedServer()

    first, other = run(_send_then_another(server, "next@example.com"))
    assert first.failure is None and other.failure is None
    assert server.messages == [MESSAGE, MESSAGE]  # no empty message
    assert server.aborted == [b""]  # hung up at once: nothing taken for its content
    assert server.connections == 2
    assert "RCPT TO:<next@example.com>" in server.commands


def test_a_refused_envelope_for_a_message_that_does_not_come_is_reset() -> None:
    server = ScriptedServer(replies={"RCPT": ["250 ok", "550 5.1.1 No such user"]})

    first, other = run(_send_then_another(server, "gone@example.com"))
    assert first.failure is None and other.failure is None
    assert server.messages == [MESSAGE, MESSAGE]
    assert server.connections == 1
    assert "RSET" in server.commands


def test_no_envelope_goes_ahead_onto_a_connection_that_closes_after_this_message() -> None:
    server = ScriptedServer()
    messages = [("a@example.com", [f"r{n}@example.com"], MESSAGE) for n in range(4)]

    async def scenario() -> list:
        async with server.running():
            config = dataclasses.replace(server.config(5.0), max_messages_per_connection=2)
            return await _send_chain(server, messages, config)

    deliveries = run(scenario())
    assert [delivery.failure for delivery in deliveries] == [None] * 4
    assert server.connections == 2
    # Each connection saw exactly its two envelopes: nothing was abandoned.
    assert len([c for c in server.commands if c.startswith("MAIL")]) == 4


# ---------------------------------------------------------------------------------------
# Refusals keep the connection in step
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
def test_refused_sender_is_reported_and_the_next_message_goes_out(pipelining: bool) -> None:
    server = ScriptedServer(
        pipelining=pipelining, replies={"MAIL": ["550 5.7.1 Sender not allowed"]}
    )

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)] * 2)

    refused, sent = run(scenario())
    assert refused.failure is not None
    assert (refused.failure.outcome, refused.failure.code) == (Outcome.PERMANENT, 550)
    assert "Sender not allowed" in refused.failure.text
    assert sent.failure is None
    assert server.messages == [MESSAGE]
    assert "RSET" in server.commands


def test_data_accepted_for_a_refused_envelope_gets_an_empty_message() -> None:
    """RFC 2920 3.1: a server may say 354 after refusing the envelope; end it at once."""
    server = ScriptedServer(
        replies={"MAIL": ["451 4.3.0 Try later"], "DATA": ["354 go"], "END": ["554 5.5.0 empty"]}
    )

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)] * 2)

    refused, sent = run(scenario())
    assert refused.failure is not None and refused.failure.code == 451
    assert refused.failure.outcome == Outcome.TRANSIENT
    assert server.messages == [b"", MESSAGE]  # the empty one never carried the message
    assert sent.failure is None


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
def test_some_recipients_refused(pipelining: bool) -> None:
    server = ScriptedServer(
        pipelining=pipelining, replies={"RCPT": ["250 ok", "550 5.1.1 No such user", "251 ok"]}
    )
    recipients = ["b@example.com", "gone@example.com", "c@example.com"]

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", recipients, MESSAGE)])

    [delivery] = run(scenario())
    assert delivery.failure is None
    assert delivery.refused == {"gone@example.com": "550 5.1.1 No such user"}
    assert server.messages == [MESSAGE]


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
def test_every_recipient_refused_sends_nothing_and_stays_in_step(pipelining: bool) -> None:
    server = ScriptedServer(
        pipelining=pipelining,
        replies={"RCPT": ["550 5.1.1 No such user", "550 5.1.1 No such user"]},
    )

    async def scenario() -> list:
        async with server.running():
            return await _send_all(
                server,
                [
                    ("a@example.com", ["x@example.com", "y@example.com"], MESSAGE),
                    ("a@example.com", ["b@example.com"], MESSAGE),
                ],
            )

    refused, sent = run(scenario())
    assert refused.failure is not None
    assert refused.failure.code == 550
    assert "(2 refused)" in refused.failure.text
    assert sent.failure is None
    assert server.messages == [MESSAGE]
    assert ("DATA" in server.commands[:6]) is pipelining  # lock-step never asks for DATA


def test_end_of_data_refusal() -> None:
    server = ScriptedServer(replies={"END": ["552 5.3.4 Message too big"]})

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)] * 2)

    refused, sent = run(scenario())
    assert refused.failure is not None and refused.failure.code == 552
    assert sent.failure is None


# ---------------------------------------------------------------------------------------
# Servers that hang up or talk nonsense
# ---------------------------------------------------------------------------------------


def test_last_words_before_hanging_up_explain_the_failure() -> None:
    """421 to MAIL, then the connection closes before RCPT and DATA are answered."""
    server = ScriptedServer(replies={"MAIL": ["421 4.7.0 Too many connections", DROP]})

    async def scenario() -> tuple:
        async with server.running():
            session = Session(server.config())
            try:
                delivery = await session.send("a@example.com", ["b@example.com"], MESSAGE)
                return delivery, session.connected
            finally:
                await session.close()

    delivery, connected = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.code == 421
    assert "Too many connections" in delivery.failure.text
    assert not connected


def test_hang_up_before_any_reply_is_a_disconnection() -> None:
    server = ScriptedServer(replies={"MAIL": [DROP]})

    async def scenario() -> list:
        async with server.running():
            return await _send_all(server, [("a@example.com", ["b@example.com"], MESSAGE)])

    [delivery] = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.CONNECTION_FAILED
    assert delivery.failure.code is None


@pytest.mark.parametrize(
    ("reply", "text"),
    [
        ("hello there", "Malformed SMTP response line"),
        ("250-" + "x" * 9000, "Response too long"),
    ],
)
def test_nonsense_replies_close_the_connection(reply: str, text: str) -> None:
    server = ScriptedServer(replies={"MAIL": [reply]})

    async def scenario() -> tuple:
        async with server.running():
            session = Session(server.config())
            try:
                delivery = await session.send("a@example.com", ["b@example.com"], MESSAGE)
                return delivery, session.connected
            finally:
                await session.close()

    delivery, connected = run(scenario())
    assert delivery.failure is not None
    assert text in delivery.failure.text
    assert (delivery.failure.outcome, delivery.failure.code) == (Outcome.PROTOCOL_ERROR, None)
    assert not connected


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
@pytest.mark.parametrize(
    ("verb", "reply"),
    [
        ("MAIL", "354 Start mail input"),
        ("MAIL", "334 VXNlcm5hbWU6"),
        ("RCPT", "354 go ahead"),
        ("DATA", "250 2.0.0 Ok"),
        ("DATA", "220 scripted.test ESMTP"),
        ("END", "354 more please"),
        ("END", "334 VXNlcm5hbWU6"),
    ],
)
def test_a_reply_of_the_wrong_kind_is_a_protocol_error_never_a_delivery(
    verb: str, reply: str, pipelining: bool
) -> None:
    """MAIL and RCPT take 2xx, DATA 354, the end of the message 2xx; or a 4xx/5xx refusal.
    Anything else: the connection is closed, the message neither sent nor refused."""
    # A pipelined group is answered whole: a 354 alone would make this server read the
    # rest of the group as a message.
    server = ScriptedServer(pipelining=pipelining, hold_groups=pipelining, replies={verb: [reply]})

    async def scenario() -> tuple:
        async with server.running():
            session = Session(server.config())
            try:
                delivery = await session.send("a@example.com", ["b@example.com"], MESSAGE)
                return delivery, session.connected
            finally:
                await session.close()

    delivery, connected = run(scenario())
    assert delivery.failure is not None
    assert (delivery.failure.outcome, delivery.failure.code, delivery.code) == (
        Outcome.PROTOCOL_ERROR,
        None,
        None,
    )
    assert reply in delivery.failure.text
    assert not connected
    if verb != "END":
        assert server.messages == []  # not even an empty message ended by the client


# ---------------------------------------------------------------------------------------
# The reader on its own: what it decodes, what it keeps
# ---------------------------------------------------------------------------------------


async def _reader_fed(data: bytes, owed: int) -> tuple[ReplyReader, socket.socket]:
    """A reader on one end of a socket pair, ``owed`` replies asked for, ``data`` sent
    from the other end."""
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    assert isinstance(transport, asyncio.Transport)
    reader = ReplyReader(transport)
    transport.set_protocol(reader)
    if owed:
        reader.write(b"NOOP\r\n" * owed, owed)
    theirs.sendall(data)
    return reader, theirs


def _read(data: bytes, count: int, owed: int | None = None) -> list:
    async def scenario() -> list:
        reader, theirs = await _reader_fed(data, count if owed is None else owed)
        try:
            return await reader.read(count, 1.0)
        finally:
            reader.close()
            theirs.close()

    return run(scenario())


def test_reply_text_that_is_not_utf8_or_holds_control_bytes_is_made_safe() -> None:
    [reply] = _read(b"550-5.7.1 Exp\xe9diteur\x00 refus\xe9\r\n550 5.7.1 \x1b[31mfin\r\n", 1)
    assert reply.code == 550
    assert reply.message == "5.7.1 Exp\ufffdditeur\ufffd refus\ufffd\n5.7.1 \ufffd[31mfin"
    reply.message.encode("utf-8")  # storable: no lone surrogates


@pytest.mark.parametrize(
    "data",
    [
        b"199 too low\r\n",
        b"600 too high\r\n",
        b"000 zero\r\n",
        b"25 short\r\n",
        b"250x no separator\r\n",
        b"250-one code\r\n550 then another\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
    ],
)
def test_a_line_that_is_no_reply_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="Malformed SMTP response line"):
        _read(data, 1)


def test_an_endless_multiline_reply_is_refused() -> None:
    with pytest.raises(ProtocolError, match="Response too long"):
        _read(b"250-go on\r\n" * 5000, 1)


def test_replies_nobody_asked_for_are_kept_up_to_a_bound() -> None:
    # One asked for, and MAX_UNSOLICITED more: kept (a notice between transactions).
    assert len(_read(b"250 ok\r\n" * (1 + MAX_UNSOLICITED), 1)) == 1
    with pytest.raises(ProtocolError, match="nobody asked for"):
        _read(b"250 ok\r\n" * (2 + MAX_UNSOLICITED), 1)


def test_a_protocol_error_discards_the_replies_that_came_before() -> None:
    """A 250 followed by garbage is not an answer: the stream cannot be trusted."""
    with pytest.raises(ProtocolError):
        _read(b"250 2.0.0 Ok\r\nnot a reply\r\n", 1)


def test_addresses_that_could_inject_commands_are_refused() -> None:
    server = ScriptedServer()

    async def scenario() -> list:
        async with server.running():
            return await _send_all(
                server, [("a@example.com>\r\nRCPT TO:<x@evil", ["b@example.com"], MESSAGE)]
            )

    [delivery] = run(scenario())
    assert delivery.failure is not None
    assert delivery.failure.outcome == Outcome.CONFIG_ERROR
    assert not any("evil" in command for command in server.commands)


def test_wire_refuses_a_closed_connection() -> None:
    async def scenario() -> None:
        server = ScriptedServer()
        async with server.running():
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=server.port, start_tls=False)
            await client.connect()
            client.close()
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                Wire(client, 1.0)

    run(scenario())


# ---------------------------------------------------------------------------------------
# Through the backend, to aiosmtpd with and without PIPELINING
# ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lock-step"])
def test_backend_sends_a_batch_either_way(mailer, tls_files: TLSFiles, pipelining: bool) -> None:  # noqa: ANN001
    with SMTPTestServer(
        mode="starttls", tls=tls_files, users=USERS, pipelining=pipelining
    ) as server:
        SmtpAccountFactory.for_server(
            server, name="main", auth_method="auto", username="alice", password="right-password"
        )
        messages = [
            mail.EmailMessage(f"m{n}", "body", "site@example.com", [f"r{n}@example.com"])
            for n in range(5)
        ]
        assert get_mailer().send_messages(messages) == 5
        received = server.wait_for(5)
    assert [message.rcpt_tos for message in received] == [[f"r{n}@example.com"] for n in range(5)]
    assert {(message.login, message.tls) for message in received} == {("alice", True)}
