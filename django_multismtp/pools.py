"""Share messages among a pool of equally eligible accounts (``POOL_POLICY``).

The selection (:mod:`selection`) says which leading candidates of a message are equally
eligible (:attr:`Choice.pool`); the engine groups the messages of one round that share
the same available pool and asks :func:`assign` which member sends each of them, in one
pass over the group:

* ``spread``: smooth weighted round robin, each member weighted by its remaining quota
  in its tightest window (:func:`limits.remaining`), and never given more than that
  quota. A 500/day and a 2,000/day account therefore take messages 1:4 and run dry
  together; an account without limits weighs as much as the roomiest limited member
  (as much as any other when no member has limits);
* ``round_robin``: members in turn, whatever their quotas (a member that fills up makes
  its messages fail over in the next round, as any account that fills up);
* ``fill_first``: the first member, as before pools existed (the engine does not call
  :func:`assign` for it).

Deterministic, no randomness: the rotation of each pool (which member is next, the
weighted round robin's running credits) is kept per process across batches, so a site
sending one message per ``send_mail()`` call still spreads its mail.
:func:`reset` forgets it (tests).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

SPREAD = "spread"
ROUND_ROBIN = "round_robin"
FILL_FIRST = "fill_first"

_lock = threading.Lock()
#: (policy, member primary keys) -> running state: the next index (round_robin) or the
#: credits of the smooth weighted round robin (spread), by primary key.
_state: dict[tuple[str, tuple[Any, ...]], Any] = {}


def reset() -> None:
    """Forget every pool's rotation (a new process starts from the first member)."""
    with _lock:
        _state.clear()


def assign(
    policy: str,
    members: Sequence[Any],
    count: int,
    remaining: Mapping[Any, int | None] | None = None,
) -> list[Any]:
    """The member (primary key) for each of ``count`` messages, in order.

    ``members`` are primary keys in the selection's order; ``remaining`` maps each to
    its remaining quota (None: no limits; used by ``spread`` only). When the members of a
    spread pool have no quota left between them, the rest goes to the members in turn:
    their reservations fail and the messages fail over as for any full account."""
    if count <= 0 or not members:
        return []
    if policy == FILL_FIRST or len(members) == 1:
        return [members[0]] * count
    key = (policy, tuple(members))
    with _lock:
        if policy == ROUND_ROBIN:
            start = _state.get(key, 0) % len(members)
            _state[key] = (start + count) % len(members)
            return [members[(start + index) % len(members)] for index in range(count)]
        credits = _state.setdefault(key, dict.fromkeys(members, 0))
        return _spread(members, count, remaining or {}, credits)


def _spread(
    members: Sequence[Any],
    count: int,
    remaining: Mapping[Any, int | None],
    credits: dict[Any, int],
) -> list[Any]:
    """Smooth weighted round robin (as nginx's upstreams): each pick adds every
    member's weight to its credit, takes the member with the most credit (the first in
    order on a tie) and charges it the total weight. Over any stretch the picks follow
    the weights within one message, interleaved rather than in runs."""
    finite = [left for pk in members if (left := remaining.get(pk)) is not None]
    roomiest = max(finite, default=1)
    room: dict[Any, int | None] = {pk: remaining.get(pk) for pk in members}
    picks: list[Any] = []
    for _ in range(count):
        weights = {
            pk: (roomiest if left is None else left) for pk, left in room.items() if left != 0
        }
        total = sum(weights.values())
        if total <= 0:
            break
        for pk, weight in weights.items():
            credits[pk] = credits.get(pk, 0) + weight
        chosen = max(weights, key=lambda pk: credits[pk])  # max() keeps the first on ties
        credits[chosen] -= total
        picks.append(chosen)
        left = room[chosen]
        if left is not None:
            room[chosen] = left - 1
    # Quota exhausted between them: the rest in turn (each reservation then fails).
    picks.extend(members[index % len(members)] for index in range(count - len(picks)))
    return picks
