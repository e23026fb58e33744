"""A ticker that measures how long an event loop is kept from running its tasks.

It sleeps 1 ms at a time and records, at each wake-up, how late it woke against the
loop's own clock (``loop.time()``). A wake-up is late when something else held the
loop: a callback or a coroutine step that did not yield (blocking I/O, a lock, CPU work),
or the machine's other processes holding the core. The largest lateness is the longest
the loop was blocked, to within the 1 ms tick; the 99th percentile tells whether that
was one stall or many. No Django import: the benchmark's own loop and the ASGI app's
(``benchmarks/asgiapp.py``, inside uvicorn) use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

TICK = 0.001
#: Issue #16's bound on how long the loop may be blocked; summary() counts the ticks over it.
LATE = 0.010


def summary(lags: list[float], cpu: float = 0.0) -> dict[str, Any]:
    """``ticks``, the median, 99th percentile and largest lateness in milliseconds, and
    ``over_10ms``: how many wake-ups were more than 10 ms late, and ``cpu_ms``: the CPU
    the whole process used meanwhile (every thread)."""
    if not lags:
        return {
            "ticks": 0,
            "median_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "over_10ms": 0,
            "cpu_ms": round(cpu * 1000, 1),
        }
    ordered = sorted(lags)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000, 2)

    return {
        "ticks": len(ordered),
        "median_ms": at(0.5),
        "p99_ms": at(0.99),
        "max_ms": round(ordered[-1] * 1000, 2),
        "over_10ms": sum(1 for lag in ordered if lag > LATE),
        "cpu_ms": round(cpu * 1000, 1),
    }


class Ticker:
    """Start it on the loop to watch (:meth:`start`); :meth:`take` returns what it saw
    since the last :meth:`take` and starts a new period."""

    def __init__(self, tick: float = TICK) -> None:
        self.tick = tick
        self.lags: list[float] = []
        self.cpu_at = time.process_time()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick
            await asyncio.sleep(self.tick)
            self.lags.append(max(0.0, loop.time() - due))

    def take(self) -> dict[str, Any]:
        lags, self.lags = self.lags, []
        cpu_at, self.cpu_at = self.cpu_at, time.process_time()
        return summary(lags, self.cpu_at - cpu_at)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
