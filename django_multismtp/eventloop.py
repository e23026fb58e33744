"""One private event loop, in a daemon thread, on which every SMTP connection lives.

aiosmtplib has no synchronous API, and an ``aiosmtplib.SMTP`` connected under one loop
cannot be used under another. Running our own long-lived loop solves both problems:

* the synchronous ``send_messages()`` works the same from WSGI code and from inside a
  running event loop (async views, async tests), where ``asyncio.run()`` and
  ``async_to_sync`` both refuse to run;
* connections outlive a single call, so an opened backend reuses them across
  ``send_messages()`` calls, as Django's SMTP backend does;
* one batch can talk to several servers at once.

The loop is recreated after ``fork()`` (Celery, multiprocessing workers), where a
parent's thread does not exist.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import gate

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if (
                self._loop is None
                or self._pid != os.getpid()
                or self._thread is None
                or not self._thread.is_alive()
            ):
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name="django-multismtp-smtp", daemon=True
                )
                thread.start()
                self._loop, self._thread, self._pid = loop, thread, os.getpid()
            return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        loop.run_forever()

    def in_loop_thread(self) -> bool:
        return self._thread is threading.current_thread()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (from any other thread)."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("run() called from the SMTP loop itself; await instead")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop())
        with gate.waiting():
            return future.result()


#: The process-wide SMTP loop.
smtp_loop = LoopThread()
