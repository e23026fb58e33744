"""An SMTP sink for the benchmark: accepts every message, counts it, throws it away.

Run as its own process so that the server does not share the client's GIL::

    python -m benchmarks.sink --port 0 --port 0 --delay-ms 5

Plain SMTP on 127.0.0.1 only: no TLS, no AUTH. Each ``--port`` opens one listening
socket (``0`` picks a free port); all of them share one event loop and one set of
counters. It offers PIPELINING (RFC 2920), as ``smtp-sink`` and real servers do,
unless ``--no-pipelining`` is given. ``--delay-ms`` waits that long before answering the
end of DATA (the reply a real server takes longest to give: it queues the message, scans
it, writes it to disk); the other commands are answered at once, as Postfix's
``smtp-sink -w`` does. With ``--every-reply`` it waits that long before every reply, one
reply after another, as a server that takes its time over every command would. With
``--round-trip`` it models network latency instead: a reply is delayed only when the
client has sent nothing more, that is when the client is waiting for it before going on
(the greeting, EHLO, the 354 that lets the body go, a non-pipelining client's every
reply); a reply to a command the client pipelined behind others is in flight together
with them and costs no extra round trip. A pipelining client then pays one round trip
per message, a client that sends one command at a time one per command.

Once listening, the sink prints one line, ``READY <port> <port> ...``, and then reads
commands on stdin, one per line, answering each on stdout:

* ``stats``: ``STATS <messages> <bytes> <connections>`` since the start;
* ``quit`` (or the end of stdin): stop.

``--lean`` serves the same SMTP (greeting, EHLO with PIPELINING, MAIL, RCPT, DATA, RSET,
NOOP, QUIT) with a plain :class:`asyncio.Protocol` of a hundred lines instead of aiosmtpd:
no coroutine, stream reader or handler call per command, and each reply's wait is one
``call_at`` timer. aiosmtpd, waiting before every reply, cost about 0.8 ms of CPU per
message, as much as the worker sending it: with several workers on 2 cores the sink was
part of what was measured. Replies leave in order; with ``--every-reply`` each one waits
``--delay-ms`` after the command arrived and after the reply before it (as aiosmtpd's
one-command-at-a-time loop does), without, only the end of DATA's reply waits.
With ``--round-trip`` a reply waits ``--delay-ms`` only when nothing more of the
client's input is buffered once its command is read (the client must be waiting for
it), as the aiosmtpd sink does; ``benchmarks.run`` uses this one for the latency
workload, where the aiosmtpd sink's own CPU (about 0.7 ms a message, on the same two
cores as the client) had become part of what was measured.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import deque
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

LOCALHOST = "127.0.0.1"


class Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.connections = 0


class SinkHandler:
    """aiosmtpd handler: every message is accepted after ``delay`` seconds."""

    def __init__(
        self,
        counter: Counter,
        delay: float,
        pipelining: bool = True,
        every_reply: bool = False,
        round_trip: bool = False,
    ) -> None:
        self.counter = counter
        self.delay = delay
        self.pipelining = pipelining
        #: Wait before every reply (see CountingSMTP.push), not only the end of DATA's.
        self.every_reply = every_reply
        #: Wait before a reply only when the client is waiting for it (see push).
        self.round_trip = round_trip

    async def handle_EHLO(  # noqa: N802
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Offer PIPELINING, as smtp-sink and nearly every real server do.

        aiosmtpd reads commands one after another from its stream, so it already serves
        pipelined commands correctly; it only does not say so.
        """
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        self.counter.messages += 1
        self.counter.bytes += len(envelope.original_content or b"")
        if self.delay and not (self.every_reply or self.round_trip):
            await asyncio.sleep(self.delay)
        return "250 2.0.0 Ok: queued"


class CountingSMTP(SMTP):
    def __init__(self, handler: SinkHandler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._counter = handler.counter
        self._delay_every_reply = handler.delay if handler.every_reply else 0.0
        self._round_trip = handler.delay if handler.round_trip else 0.0

    async def push(self, status: Any) -> None:
        """With ``--every-reply``, wait before the last line of every reply; with
        ``--round-trip``, only before one the client waits for: nothing more of its
        input is buffered (it has sent nothing further, so it must be waiting)."""
        line = status.decode() if isinstance(status, bytes) else status
        if line[3:4] != "-":
            if self._delay_every_reply:
                await asyncio.sleep(self._delay_every_reply)
            elif self._round_trip and not self._client_sent_more():
                await asyncio.sleep(self._round_trip)
        await super().push(status)

    def _client_sent_more(self) -> bool:
        reader = getattr(self, "_reader", None)
        return bool(reader is not None and getattr(reader, "_buffer", None))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._counter.connections += 1
        super().connection_made(transport)


class LeanSMTP(asyncio.Protocol):
    """Minimal SMTP sink on a bare protocol (``--lean``): accepts every message.

    Commands are read line by line from whatever arrived (pipelined ones included) and
    answered in order; a reply is queued with the loop time it may leave at, and one
    timer per connection writes every reply that is due."""

    _EHLO = b"250-sink.bench.invalid\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
    _END = b"\r\n.\r\n"

    def __init__(
        self,
        counter: Counter,
        delay: float,
        pipelining: bool,
        every_reply: bool,
        round_trip: bool = False,
    ) -> None:
        self.counter = counter
        self.delay = delay
        self.every_reply = every_reply
        self.round_trip = round_trip
        self.ehlo = self._EHLO + (b"250-PIPELINING\r\n" if pipelining else b"") + b"250 HELP\r\n"
        self.buffer = bytearray()
        #: The content of the message being received (None: reading commands); it
        #: starts with CRLF so that an empty content's terminator is found too.
        self.data: bytearray | None = None
        self.pending: deque[tuple[float, bytes, bool]] = deque()
        self.last = 0.0  # when the last queued reply leaves
        self.timer: asyncio.TimerHandle | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.counter.connections += 1
        self.reply(b"220 sink.bench.invalid ESMTP benchmarks.sink\r\n")

    def reply(self, text: bytes, *, waits: bool | None = None, close: bool = False) -> None:
        if self.round_trip:
            # One round trip before a reply the client waits for: it sent nothing more.
            wait = not self.buffer
        else:
            wait = self.every_reply if waits is None else waits
        now = self.loop.time()
        at = max(now, self.last) + (self.delay if wait else 0.0)
        self.last = at
        if not self.pending and at <= now:
            self.transport.write(text)
            if close:
                self.transport.close()
            return
        self.pending.append((at, text, close))
        if self.timer is None:
            self.timer = self.loop.call_at(at, self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.transport.is_closing():
            self.pending.clear()
            return
        now, out, close = self.loop.time(), [], False
        while self.pending and self.pending[0][0] <= now + 0.0001:
            _at, text, close = self.pending.popleft()
            out.append(text)
            if close:
                break
        self.transport.write(b"".join(out))
        if close:
            self.pending.clear()
            self.transport.close()
        elif self.pending:
            self.timer = self.loop.call_at(self.pending[0][0], self.flush)

    def data_received(self, chunk: bytes) -> None:
        self.buffer += chunk
        while self.buffer and not self.closing:
            if self.data is not None:
                start = max(len(self.data) - 4, 0)
                self.data += self.buffer
                self.buffer.clear()
                end = self.data.find(self._END, start)
                if end < 0:
                    return
                rest = self.data[end + len(self._END) :]
                self.counter.messages += 1
                self.counter.bytes += end  # the content without the leading CRLF and "."
                self.data = None
                self.buffer = bytearray(rest)
                self.reply(b"250 2.0.0 Ok: queued\r\n", waits=self.delay > 0)
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 2]
            self.command(line)

    def command(self, line: bytes) -> None:
        verb = line[:4].upper()
        if verb == b"EHLO":
            self.reply(self.ehlo)
        elif verb in (b"HELO", b"RSET", b"NOOP"):
            self.reply(b"250 2.0.0 Ok\r\n")
        elif verb == b"MAIL":
            self.reply(b"250 2.1.0 Ok\r\n")
        elif verb == b"RCPT":
            self.reply(b"250 2.1.5 Ok\r\n")
        elif verb == b"DATA":
            self.data = bytearray(b"\r\n")
            self.reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
        elif verb == b"QUIT":
            self.closing = True
            self.reply(b"221 2.0.0 Bye\r\n", close=True)
        else:
            self.reply(b"502 5.5.2 Command not implemented\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


async def serve(
    ports: list[int],
    delay_ms: float,
    pipelining: bool = True,
    every_reply: bool = False,
    round_trip: bool = False,
    lean: bool = False,
) -> None:
    counter = Counter()
    handler = SinkHandler(counter, delay_ms / 1000, pipelining, every_reply, round_trip)
    loop = asyncio.get_running_loop()
    servers = []

    def protocol() -> asyncio.Protocol:
        if lean:
            return LeanSMTP(counter, delay_ms / 1000, pipelining, every_reply, round_trip)
        return CountingSMTP(
            handler,
            hostname="sink.bench.invalid",
            ident="benchmarks.sink",
            data_size_limit=None,
            enable_SMTPUTF8=True,
        )

    for port in ports:
        server = await loop.create_server(protocol, host=LOCALHOST, port=port, backlog=256)
        servers.append(server)
    bound = [server.sockets[0].getsockname()[1] for server in servers]
    print("READY " + " ".join(str(port) for port in bound), flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while True:
            line = (await reader.readline()).decode().strip().lower()
            if line == "stats":
                print(f"STATS {counter.messages} {counter.bytes} {counter.connections}", flush=True)
            elif line in ("quit", ""):
                break
    finally:
        for server in servers:
            server.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink", description=__doc__)
    parser.add_argument(
        "--port",
        type=int,
        action="append",
        help="port to listen on (repeat for several; 0 = any free port)",
    )
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="wait before answering DATA (default 0)"
    )
    parser.add_argument(
        "--no-pipelining",
        action="store_true",
        help="do not offer PIPELINING (RFC 2920), like an old or unusual server",
    )
    parser.add_argument(
        "--every-reply",
        action="store_true",
        help="wait --delay-ms before every reply (greeting, EHLO, MAIL, RCPT, DATA...), "
        "one after another, not only before the end of DATA's",
    )
    parser.add_argument(
        "--round-trip",
        action="store_true",
        help="model --delay-ms of network round trip: wait only before a reply the client "
        "is waiting for (nothing more of its input buffered)",
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="serve with a bare asyncio protocol instead of aiosmtpd (far less CPU per message)",
    )
    args = parser.parse_args(argv)
    # aiosmtpd logs every connection at INFO on "mail.log": far too much at this rate.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    asyncio.run(
        serve(
            args.port or [0],
            args.delay_ms,
            not args.no_pipelining,
            args.every_reply,
            args.round_trip,
            args.lean,
        )
    )


if __name__ == "__main__":
    main()
