"""How many ``asend_messages()`` calls run Python at once (the rest wait their turn).

Ten concurrent one-message calls each run some milliseconds of Python (choosing the
account, the connection slots, the delivery log) in threads of their own. Under the GIL
every runnable thread takes the interpreter in turn, one switch interval (5 ms) each, so
the caller's event loop, asking for it too, waited behind all of them: 17 to 45 ms late
with ten calls at once, where a loop should never be blocked more than 10 ms. The work
itself cannot overlap anyway (one interpreter runs Python at a time), so letting only
:data:`RUNNING` of the calls run it at once costs them nothing, and the loop then
competes with at most that many threads.

A call gives its turn up whenever it waits (on the SMTP servers, on a connection slot):
waits still overlap, which is what makes concurrent calls fast. Code that is not an
async call (a plain ``send_messages()``, a worker) holds no turn and is never held up.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

#: Calls that run their Python at the same time.
RUNNING = 1

_turns = threading.Semaphore(RUNNING)
_local = threading.local()


@contextlib.contextmanager
def turn() -> Iterator[None]:
    """Run the body as one of the :data:`RUNNING` calls (it waits for its turn first)."""
    if getattr(_local, "held", False):
        yield
        return
    _turns.acquire()
    _local.held = True
    try:
        yield
    finally:
        _local.held = False
        _turns.release()


@contextlib.contextmanager
def waiting() -> Iterator[None]:
    """The body waits (for a server, a slot, a timer): the turn goes to another call
    meanwhile and is taken back after. A no-op where no turn is held."""
    if not getattr(_local, "held", False):
        yield
        return
    _local.held = False
    _turns.release()
    try:
        yield
    finally:
        _turns.acquire()
        _local.held = True
