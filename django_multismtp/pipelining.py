"""Mail transactions on a connection aiosmtplib opened: pipelined when the server allows.

aiosmtplib connects, negotiates TLS and logs in well, but sends every command of a mail
transaction on its own and waits for its reply (four round trips per message, each with
a lock, a future and a ``wait_for``), and its protocol drops a reply that arrives while
an earlier one waits to be read, so it cannot pipeline. Sending is most of our time in
campaigns, so once a session is open :class:`Wire` takes its transport over
(``transport.set_protocol``, plain asyncio) and runs the mail transactions itself:

* with PIPELINING (RFC 2920, offered by Postfix, Exim, Gmail, Outlook, SES...), MAIL,
  every RCPT and DATA go in one write and their replies are read together; and a
  message's content carries the next message's envelope, when the caller names it: one
  round trip per message instead of three plus one per recipient;
* without it, one command at a time, as aiosmtplib would, on the same reader.

Failures raise aiosmtplib's own exceptions (``SMTPSenderRefused``,
``SMTPRecipientsRefused``, ``SMTPDataError``, ``SMTPServerDisconnected``,
``SMTPReadTimeoutError``...), so :mod:`replies` classifies them as before, or
:class:`ProtocolError` when the server breaks the protocol.

The server is not trusted: a reply that is not one (garbage, a code outside 2xx-5xx), a
reply of the wrong kind for its command (anything but 2xx, 4xx or 5xx to MAIL and RCPT,
but 354, 4xx or 5xx to DATA, but 2xx, 4xx or 5xx to the end of the message), or more
replies than were asked for is a :class:`ProtocolError`, and the connection is closed.
What the reader keeps is bounded (:data:`MAX_UNSOLICITED`, :data:`MAX_KEPT`), and reply
text is decoded to valid, bounded text (:func:`~django_multismtp.safetext.safe_text`).
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiosmtplib

from .safetext import safe_text

#: Bounds on what a server may send us, as aiosmtplib's own protocol has.
MAX_LINE = 8192
MAX_REPLY = MAX_LINE * 4
#: Replies nobody asked for that the reader keeps (a notice between transactions is
#: allowed; a stream of them is not).
MAX_UNSOLICITED = 16
#: Bytes of reply text the reader keeps unread, however many replies are outstanding
#: (a thousand pipelined RCPT replies take some 50 KiB).
MAX_KEPT = 2**20

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r(?!\n)")
_LEADING_DOT = re.compile(rb"(?m)^\.")
_CONTROL = re.compile(r"[\x00-\x1f\x7f<>]")


def wire_format(message: bytes) -> bytes:
    """CRLF line endings and a final CRLF: the octets that SIZE counts (RFC 1870)."""
    # Django renders CRLF already: three counts in C are much cheaper than a regex
    # substitution that rebuilds every line of every message.
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        message = _LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message


def dot_stuffed(data: bytes) -> bytes:
    """``data`` (already in wire format) with its end-of-data marker, lines starting
    with a dot doubled (RFC 5321, section 4.5.2)."""
    if data.startswith(b".") or b"\n." in data:
        data = _LEADING_DOT.sub(b"..", data)
    return data + b".\r\n"


class ProtocolError(aiosmtplib.SMTPException):
    """The server broke the protocol: garbage, a reply in the wrong place, a flood.

    Nothing it says on this connection can be trusted any more (a 250 might answer a
    command it never read), so the connection is closed and the message is neither
    counted as delivered nor refused: it may go through another account, or later.
    """


def _is_refusal(code: int) -> bool:
    return 400 <= code < 600


def _is_positive(code: int) -> bool:
    return 200 <= code < 300


class ReplyReader(asyncio.Protocol):
    """Collects every reply the server sends, in order, however many are outstanding."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport: asyncio.Transport | None = transport
        self._buffer = bytearray()
        self._replies: deque[aiosmtplib.SMTPResponse] = deque()
        #: Replies owed for commands written and not answered yet.
        self._owed = 0
        #: Replies kept that nobody asked for, and the bytes of text kept unread.
        self._unsolicited = 0
        self._kept = 0
        #: While a message's content is being written: the bytes written after its final
        #: dot (the next envelope). More than that still in our buffer means the server
        #: cannot have read the dot yet, so it cannot have accepted the message.
        self.content_tail: int | None = None
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._wanted = 0
        self._paused = False
        self._drained: asyncio.Future[None] | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return  # closing: whatever else arrives is not read
        self._buffer += data
        try:
            self._parse()
        except ProtocolError as exc:
            self._fail(exc)
            self.close(abort=True)
            return
        if len(self._replies) >= self._wanted:
            self._wake()

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        error = aiosmtplib.SMTPServerDisconnected("Connection lost")
        error.__cause__ = exc
        self._fail(error)
        self.transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # -- parsing ---------------------------------------------------------------------
    def _parse(self) -> None:
        buffer = self._buffer
        start = 0
        lines: list[bytes] = []
        code = b""
        while True:
            end = buffer.find(b"\n", start)
            if end == -1:
                # What is left is one reply, not complete yet
                if len(buffer) > MAX_REPLY:
                    raise ProtocolError("Response too long")
                break
            line = bytes(buffer[start : end + 1])
            start = end + 1
            if len(line) > MAX_LINE or start > MAX_REPLY:
                raise ProtocolError("Response too long")
            if (
                not line[:3].isdigit()
                or line[:1] not in b"2345"
                or line[3:4] not in (b" ", b"-", b"\r", b"\n")
                or (lines and line[:3] != code)
            ):
                raise ProtocolError(f"Malformed SMTP response line: {safe_text(line, 200)}")
            code = line[:3]
            lines.append(line[4:].strip(b" \t\r\n"))
            if line[3:4] == b"-":
                continue
            text = safe_text(b"\n".join(lines), MAX_REPLY)
            self._keep(aiosmtplib.SMTPResponse(int(code), text))
            lines = []
            del buffer[:start]
            start = 0

    def _keep(self, reply: aiosmtplib.SMTPResponse) -> None:
        """Queue a reply for :meth:`read`; refuse to keep a flood, or a positive answer
        to a message the server has not received yet."""
        tail, transport = self.content_tail, self.transport
        if (
            tail is not None
            and 200 <= reply.code < 400
            and transport is not None
            and transport.get_write_buffer_size() > tail
        ):
            raise ProtocolError(
                f"The server answered {reply.code} {reply.message} before the end of the "
                "message reached it"
            )
        if self._owed:
            self._owed -= 1
        else:
            self._unsolicited += 1
            if self._unsolicited > MAX_UNSOLICITED:
                raise ProtocolError(
                    f"The server sent more than {MAX_UNSOLICITED} replies nobody asked for"
                )
        self._kept += len(reply.message)
        if self._kept > MAX_KEPT:
            raise ProtocolError(f"The server sent more than {MAX_KEPT} bytes of unread replies")
        self._replies.append(reply)

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
            if isinstance(error, ProtocolError):
                # Nothing from this server can be trusted now, not even replies that
                # came before: a 250 in the stream might answer a command it never read.
                self._replies.clear()
                self._kept = 0
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def violation(self, text: str) -> ProtocolError:
        """Record that the server broke the protocol, close, and return the error to raise."""
        error = ProtocolError(text)
        self._fail(error)
        self.close(abort=True)
        return error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- for Wire --------------------------------------------------------------------
    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def is_connected(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes, replies: int) -> None:
        """Write ``data``, which asks for ``replies`` replies (one per command)."""
        if self.transport is None or self.transport.is_closing() or self._error is not None:
            raise self._error or aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._owed += replies
        self.transport.write(data)

    async def drain(self, within: float | None) -> None:
        """Wait while the transport's write buffer is over its high-water mark.

        Bounded like a reply: a server that stops reading in the middle of a message
        would otherwise hold the connection (and the batch) for ever.
        """
        if self._paused and self.transport is not None:
            self._drained = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._drained, within)
            except TimeoutError:
                self.close()
                raise aiosmtplib.SMTPTimeoutError("Timed out sending the message") from None
            if isinstance(self._error, ProtocolError):
                raise self._error

    def discard_unsolicited(self) -> None:
        """Forget replies nobody asked for (a server's notice between transactions).

        aiosmtplib ignores them too; kept, they would be taken for the next answers.
        """
        self._replies.clear()
        self._unsolicited = self._kept = 0

    async def read(
        self, count: int, within: float | None, *, partial: bool = False
    ) -> list[aiosmtplib.SMTPResponse]:
        """The next ``count`` replies, waiting at most ``within`` seconds for them.

        When the connection ends first, raises why, or with ``partial`` returns the
        replies that did arrive (if any did): the server's last words, a 421 before it
        hung up, explain the failure better than the disconnection does.

        A server that does not answer in time leaves replies outstanding that would be
        taken for the answers to later commands: the connection is closed.
        """
        if len(self._replies) < count and self._error is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            self._wanted = count
            self._deadline = loop.time() + within if within else None
            self._arm_timer(loop)
            try:
                await waiter
            finally:
                self._waiter = None
                self._wanted = 0
        if len(self._replies) >= count:
            replies = [self._replies.popleft() for _ in range(count)]
            self._kept -= sum(len(reply.message) for reply in replies)
            return replies
        if self._error is not None:
            if partial and self._replies:
                replies = list(self._replies)
                self._replies.clear()
                self._kept = 0
                return replies
            raise self._error
        self.close()
        self._fail(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))
        raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response")

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        # One timer per connection, moved on only when it fires early: a timer per reply
        # (``wait_for``, ``call_later``) was a tenth of the event loop's time in campaigns.
        if self._deadline is not None and self._timer is None:
            self._timer = loop.call_at(self._deadline, self._on_timer, loop)

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        if self._waiter is None or self._deadline is None:
            return
        if loop.time() >= self._deadline:
            self._wake()  # read() finds too few replies: a timeout
        else:
            self._arm_timer(loop)

    def close(self, *, abort: bool = False) -> None:
        """Close the connection; ``abort``: at once, dropping what is not written yet
        (after a protocol error there is no point in sending the rest of a message)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


@dataclass(frozen=True)
class _Ahead:
    """An envelope sent together with the previous message: its replies are unread."""

    sender: str
    recipients: tuple[str, ...]
    replies: int


class Wire:
    """Mail transactions on one connection that aiosmtplib has opened and logged in."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float | None) -> None:
        transport = client.transport
        if not isinstance(transport, asyncio.Transport) or transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self.timeout = timeout
        self.pipelining = client.supports_extension("pipelining")
        self.size = client.supports_extension("size")
        self.reader = ReplyReader(transport)
        self._ahead: _Ahead | None = None
        #: Whether the current transaction's content went out (False while the server
        #: has seen its envelope only: a failure then sent nothing of the message).
        self.content_sent = False
        # From here on every byte the server sends comes to our reader; aiosmtplib's
        # protocol, idle between commands, sees nothing more.
        transport.set_protocol(self.reader)

    @property
    def is_connected(self) -> bool:
        return self.reader.is_connected

    def expects(self, sender: str, recipients: Sequence[str]) -> bool:
        """False when another message's envelope was sent ahead (see :meth:`abandon`)."""
        ahead = self._ahead
        return ahead is None or (ahead.sender, ahead.recipients) == (sender, tuple(recipients))

    async def send(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes,
        following: tuple[str, Sequence[str]] | None = None,
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], aiosmtplib.SMTPResponse]:
        """One mail transaction: ``(refused recipients, the final reply)``, or raises.

        Raises as aiosmtplib's ``sendmail`` does. After a refusal the server may still
        hold the envelope: the caller resets it (:meth:`reset`) before the next message.

        ``following``: the sender and recipients of the message that comes next on this
        connection. With PIPELINING its envelope goes out in the same write as this
        message's content (RFC 2920 allows content to start a group), so the next
        message costs one round trip instead of two. The next call must be for that
        message, or :meth:`abandon` it first.
        """
        if not recipients:
            raise aiosmtplib.SMTPRecipientsRefused([])
        if not self.expects(sender, recipients):
            raise RuntimeError("another message's envelope is open: abandon() it first")
        data = wire_format(message)
        self.content_sent = False
        ahead, self._ahead = self._ahead, None
        commands = None if ahead is not None else self._envelope(sender, recipients, len(data))
        refused, data_reply = await self._open(sender, recipients, commands, ahead)
        next_envelope = b""
        if following is not None and self.pipelining:
            try:
                next_commands = self._envelope(following[0], following[1], None)
            except ValueError:  # its own send() reports the bad address
                next_commands = []
            if next_commands:
                next_envelope = b"".join(next_commands)
                self._ahead = _Ahead(following[0], tuple(following[1]), len(next_commands))
        reader = self.reader
        reader.content_tail = len(next_envelope)
        self.content_sent = True
        try:
            reader.write(
                dot_stuffed(data) + next_envelope, 1 + (self._ahead.replies if self._ahead else 0)
            )
            await reader.drain(self.timeout)
            (final,) = await reader.read(1, self.timeout)
        finally:
            reader.content_tail = None
        # Only a 2xx to the end of the content means delivered.
        self._check(final, "the end of the message", _is_positive)
        if not _is_positive(final.code):
            raise aiosmtplib.SMTPDataError(final.code, final.message)
        return refused, final

    def _check(
        self, reply: aiosmtplib.SMTPResponse, command: str, proper: Callable[[int], bool]
    ) -> None:
        """Raise :class:`ProtocolError` (closing) unless ``reply`` is a proper answer to
        ``command``: ``proper(code)`` or a refusal (4xx, 5xx)."""
        if not (proper(reply.code) or _is_refusal(reply.code)):
            raise self.reader.violation(
                f"The server answered {reply.code} {reply.message} to {command}"
            )

    def _envelope(self, sender: str, recipients: Sequence[str], size: int | None) -> list[bytes]:
        """MAIL, RCPT and DATA lines, encoded: a bad address raises before any is sent."""
        mail = f"MAIL FROM:<{_checked(sender)}>"
        if self.size and size is not None:
            mail += f" SIZE={size}"
        commands = [mail] + [f"RCPT TO:<{_checked(address)}>" for address in recipients]
        commands.append("DATA")
        return [f"{command}\r\n".encode("ascii") for command in commands]

    async def _open(
        self,
        sender: str,
        recipients: Sequence[str],
        commands: list[bytes] | None,
        ahead: _Ahead | None,
    ) -> tuple[dict[str, aiosmtplib.SMTPResponse], aiosmtplib.SMTPResponse]:
        """Send the envelope (unless it went ahead) and read its replies, up to DATA's 354.

        Returns the refused recipients and the DATA reply; raises for a refused envelope.
        """
        reader, timeout = self.reader, self.timeout
        if ahead is None:
            reader.discard_unsolicited()
        if ahead is not None or self.pipelining:
            expected = ahead.replies if ahead is not None else len(commands or ())
            if commands is not None:
                reader.write(b"".join(commands), len(commands))
            replies = await reader.read(expected, timeout, partial=True)
            if len(replies) < expected:  # the server hung up part-way
                self._check(replies[0], "MAIL", _is_positive)
                if not _is_positive(replies[0].code):
                    raise aiosmtplib.SMTPSenderRefused(replies[0].code, replies[0].message, sender)
                raise reader.error or aiosmtplib.SMTPServerDisconnected("Connection lost")
            mail, *rcpts = replies
            data_reply: aiosmtplib.SMTPResponse | None = rcpts.pop()
            self._check(mail, "MAIL", _is_positive)
            for reply in rcpts:
                self._check(reply, "RCPT", _is_positive)
            assert data_reply is not None
            self._check(data_reply, "DATA", lambda code: code == 354)
        else:
            assert commands is not None
            reader.write(commands[0], 1)
            (mail,) = await reader.read(1, timeout)
            self._check(mail, "MAIL", _is_positive)
            if not _is_positive(mail.code):
                raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
            rcpts = []
            for command in commands[1:-1]:
                reader.write(command, 1)
                (reply,) = await reader.read(1, timeout)
                self._check(reply, "RCPT", _is_positive)
                rcpts.append(reply)
            data_reply = None
        refused = {
            address: reply
            for address, reply in zip(recipients, rcpts, strict=True)
            if not _is_positive(reply.code)
        }
        if data_reply is None and len(refused) < len(recipients):
            reader.write(b"DATA\r\n", 1)
            (data_reply,) = await reader.read(1, timeout)
            self._check(data_reply, "DATA", lambda code: code == 354)
        if not _is_positive(mail.code) or len(refused) == len(recipients):
            if data_reply is not None and data_reply.code == 354:
                # A pipelining server accepted DATA for an envelope it refused: it now
                # waits for a message; an empty one ends it (RFC 2920, section 3.1), and
                # goes nowhere, for there is no recipient.
                reader.write(b".\r\n", 1)
                await reader.read(1, timeout)
            if not _is_positive(mail.code):
                raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
            raise aiosmtplib.SMTPRecipientsRefused(
                [
                    aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, address)
                    for address, reply in refused.items()
                ]
            )
        assert data_reply is not None
        if data_reply.code != 354:  # a refusal: _check let nothing else through
            raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
        return refused, data_reply

    async def abandon(self) -> None:
        """Give up an envelope sent ahead for a message that will not come next.

        Its replies are read; if the server refused it, RSET clears it. If the server
        accepted it and waits for content, nothing can withdraw it (an empty message
        would be delivered), so the connection is closed: the server then drops it.
        """
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return
        try:
            replies = await self.reader.read(ahead.replies, self.timeout)
        except aiosmtplib.SMTPException:
            self.reader.close()
            return
        *envelope, data_reply = replies
        proper = all(_is_positive(r.code) or _is_refusal(r.code) for r in envelope) and (
            data_reply.code == 354 or _is_refusal(data_reply.code)
        )
        if not proper or data_reply.code == 354:
            self.reader.close()
        else:
            await self.reset()

    async def reset(self) -> None:
        """RSET; a server that does not take it loses the connection.

        Not needed, and not sent, while the next message's envelope is open: a refusal
        after the content has already ended its transaction.
        """
        if self._ahead is not None:
            return
        try:
            self.reader.write(b"RSET\r\n", 1)
            (reply,) = await self.reader.read(1, self.timeout)
        except aiosmtplib.SMTPException:
            self.reader.close()
            return
        if reply.code != 250:
            self.reader.close()

    async def quit(self) -> None:
        """Say goodbye politely, then close, whatever the server answers."""
        try:
            if self.is_connected:
                self.reader.write(b"QUIT\r\n", 1)
                await self.reader.read(1, self.timeout)
        except aiosmtplib.SMTPException:
            pass
        finally:
            self.reader.close()


def _checked(address: str) -> str:
    """Refuse what could end a command line early or smuggle another one in."""
    if _CONTROL.search(address):
        raise ValueError(f"Address {address!r} contains a prohibited character")
    return address
