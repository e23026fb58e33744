"""Render messages in the calling thread while our event loop sends earlier ones.

The SMTP work of a round runs on the private event loop (see :mod:`eventloop`), one
*lane* per connection, each sending its messages in the caller's order. Rendering a
message (``EmailMessage.message().as_bytes()``) is pure CPU; sending it is mostly waiting
for the server. Rendering in the calling thread, a few messages ahead of each
connection, lets one happen while the other waits, where rendering on the loop just
before each send made every message wait for both in turn.

Memory stays bounded: each lane holds at most ``ahead`` rendered messages that are not
on the wire yet. A lane that stops early (its server failed the account) drops what it
holds and takes nothing more; if rendering raises, every lane stops after the messages it
already has, and the error reaches the caller once the loop is done with them.

The traffic goes the other way too: each reply the loop receives is handed back
(:meth:`Feed.sent`), and the calling thread passes the replied attempts to its
``on_replies`` callback between renders and while it waits, at least every ``tick``
seconds. The outbox worker settles its rows there, as the replies arrive, so a worker
killed mid-batch has written what it sent (see :mod:`django_multismtp.engine`).
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import Future
from typing import Any

from . import gate

#: Rendered messages a connection may have waiting, beyond the one it is sending.
AHEAD = 4
#: Seconds the calling thread waits at most before calling ``on_replies`` again.
TICK = 0.05


class Lane:
    """The messages of one connection; the attempts are sent in this order."""

    def __init__(self, attempts: Sequence[Any]) -> None:
        self.attempts = attempts
        self.ready: deque[bytes] = deque()
        #: Rendered and not yet sent or dropped (guarded by the feed's condition).
        self.held = 0
        #: Index of the next attempt to render (calling thread only).
        self.next = 0
        self.stopped = False
        self.waiter: asyncio.Future[None] | None = None


class Feed:
    """Hands rendered messages from the calling thread to the lanes on the loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, lanes: list[Lane], ahead: int = AHEAD
    ) -> None:
        self.loop = loop
        self.lanes = lanes
        self.ahead = max(ahead, 1)
        self.closed = False
        self._changed = threading.Condition()
        #: Attempts whose reply arrived, not yet passed to ``on_replies`` (guarded).
        self._replied: list[Any] = []
        self._on_replies: Callable[[list[Any]], Any] = _ignore

    # -- the calling thread ------------------------------------------------------------
    def run(
        self,
        send: Coroutine[Any, Any, None],
        render: Callable[[Any], bytes],
        on_replies: Callable[[list[Any]], Any] | None = None,
    ) -> None:
        """Start ``send`` on the loop, render every attempt for it, wait until it is done.

        ``on_replies`` runs in this thread with the attempts replied to since its last
        call (possibly none: it is also a clock tick), until the loop is done."""
        self._on_replies = on_replies or _ignore
        future = asyncio.run_coroutine_threadsafe(send, self.loop)
        future.add_done_callback(lambda _future: self._notify())
        try:
            self._render_all(render, future)
            while not future.done():
                with gate.waiting(), self._changed:
                    if not self._replied and not future.done():
                        self._changed.wait(timeout=TICK)
                self._pass_replies()
        finally:
            self._close()
            with gate.waiting():
                future.result()
        self._pass_replies()

    def _pass_replies(self) -> None:
        with self._changed:
            replied, self._replied = self._replied, []
        self._on_replies(replied)

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _render_all(self, render: Callable[[Any], bytes], future: Future[None]) -> None:
        pending = list(self.lanes)
        while pending:
            self._pass_replies()
            progressed = False
            for lane in list(pending):
                with self._changed:
                    if lane.stopped or lane.next >= len(lane.attempts):
                        pending.remove(lane)
                        continue
                    if lane.held > self.ahead:
                        continue
                    lane.held += 1
                    attempt = lane.attempts[lane.next]
                    lane.next += 1
                data = render(attempt)
                self._put(lane, data)
                progressed = True
            if progressed or not pending:
                continue
            with gate.waiting(), self._changed:
                if not self._replied and not any(
                    lane.held <= self.ahead or lane.stopped for lane in pending
                ):
                    self._changed.wait(timeout=TICK)
            if future.done():  # the loop side ended (or failed): nothing will take more
                return

    def _put(self, lane: Lane, data: bytes) -> None:
        with self._changed:
            if lane.stopped:
                lane.held -= 1
                return
            lane.ready.append(data)
            waiter = lane.waiter
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    def _close(self) -> None:
        with self._changed:
            self.closed = True
            waiters = [lane.waiter for lane in self.lanes if lane.waiter is not None]
        for waiter in waiters:
            self.loop.call_soon_threadsafe(_wake, waiter)

    # -- the event loop ----------------------------------------------------------------
    async def take(self, lane: Lane) -> bytes | None:
        """The lane's next message; None when the calling thread stopped rendering."""
        while True:
            with self._changed:
                if lane.ready:
                    return lane.ready.popleft()
                if self.closed:
                    return None
                waiter = lane.waiter = self.loop.create_future()
            try:
                await waiter
            finally:
                lane.waiter = None

    def sent(self, lane: Lane, attempt: Any) -> None:
        """``attempt`` (taken from ``lane``) is done with: replied to, or skipped."""
        with self._changed:
            lane.held -= 1
            self._replied.append(attempt)
            self._changed.notify()

    def stop(self, lane: Lane) -> None:
        """The lane sends nothing more: drop what it holds, render nothing more for it."""
        with self._changed:
            lane.stopped = True
            lane.held -= len(lane.ready)
            lane.ready.clear()
            self._changed.notify()


def _ignore(replied: list[Any]) -> None:
    pass


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
