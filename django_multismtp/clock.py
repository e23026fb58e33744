"""The one source of "now" for limits, back-offs and rate-limited-until.

Time decides whether an account may send, so tests must be able to move it without
sleeping. Everything in the package calls :func:`now`; tests (and sites that need a
different notion of time) swap the function with :func:`use_clock` or the ``CLOCK``
setting.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator

from django.utils import timezone

Clock = Callable[[], dt.datetime]

_override: Clock | None = None


def now() -> dt.datetime:
    """Return the current time as an aware datetime."""
    if _override is not None:
        return _override()
    from .conf import get_clock

    configured = get_clock()
    return configured() if configured is not None else timezone.now()


@contextlib.contextmanager
def use_clock(clock: Clock) -> Iterator[None]:
    """Make :func:`now` return ``clock()`` inside the block (tests, simulations)."""
    global _override
    previous, _override = _override, clock
    try:
        yield
    finally:
        _override = previous


class FrozenClock:
    """A clock that only moves when told to; handy with :func:`use_clock`."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.current = start or timezone.now()

    def __call__(self) -> dt.datetime:
        return self.current

    def advance(self, **delta: float) -> dt.datetime:
        self.current += dt.timedelta(**delta)
        return self.current
