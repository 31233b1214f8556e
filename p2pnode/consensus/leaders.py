"""The leader order of a rank: a rotation no prover can bias, and a place lost by failing."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

PROBATION = 16
"""A prover that did not win the latest rank it led is moved to the end of the order until its
next probation turn, one of every this many of its own turns in the rotation (each prover's
fall on different ranks): it fails one turn in this many at most, and an honest prover that
missed one turn through a fault is back within as many of its turns."""


def rotation(base: Sequence[str], rank: int) -> list[str]:
    """The base order rotated by the rank: each prover is at the top once every n ranks."""
    if not base:
        return []
    shift = rank % len(base)
    return [*base[shift:], *base[:shift]]


def memory(n: int) -> int:
    """How many earlier ranks the order of a rank depends on: every prover's probation turn
    falls within them, so a place lost before them is back by then."""
    return (PROBATION + 1) * n


def leader_order(base: Sequence[str], rank: int, winner: Callable[[int], str | None]) -> list[str]:
    """The provers of `rank`, highest priority first.

    `base` is fixed before any rank (the genesis prover set, sorted) and `winner(r)` names the
    prover whose frame is final at rank r (None if unknown). The order is the rotation of the
    base by the rank, with every prover that led an earlier rank and did not win it moved to
    the end, until it wins a rank it leads or its probation turn comes (see `PROBATION`). A
    prover that leads in a demoted prover's place is judged by that rank like any other.

    It is a function of the base, the rank and the winners of the `memory(n)` ranks before it.
    Nothing a prover chooses when it proposes (its timestamp, its mutations, which of its frames
    it publishes, or when) changes the rotation, and the only thing a prover's conduct changes
    is its own place: it loses it by not winning a rank it leads.
    """
    start = max(1, rank - memory(len(base)))
    return list(_folded(tuple(base), rank, tuple(winner(r) for r in range(start, rank))))


@functools.lru_cache(maxsize=4096)
def _folded(base: tuple[str, ...], rank: int, winners: tuple[str | None, ...]) -> tuple[str, ...]:
    """The order of `rank`, given the winners of the ranks just before it, oldest first
    (a pure function, cached: a rank's order is asked for many times)."""
    lost: set[str] = set()
    for earlier, won in enumerate(winners, start=rank - len(winners)):
        if won is None:
            continue
        top = _arranged(base, earlier, lost)[0]
        if won == top:
            lost.discard(top)
        else:
            lost.add(top)
    return tuple(_arranged(base, rank, lost))


def _arranged(base: Sequence[str], rank: int, lost: set[str]) -> list[str]:
    """The rotation with the provers in `lost` moved to the end, but for one on probation; a
    demoted owner's rank goes to a prover that is not demoted, another one each cycle of n
    ranks, so no fixed heir gains its ranks."""
    order = rotation(base, rank)
    if not lost:
        return order
    n = len(base)
    owner = order[0]
    demoted = lost - {owner} if _on_probation(n, rank) else lost
    head = [p for p in order if p not in demoted]
    if owner in demoted and head:
        heir = head[(rank // n) % len(head)]
        head.remove(heir)
        head.insert(0, heir)
    return head + [p for p in order if p in demoted]


def _on_probation(n: int, rank: int) -> bool:
    """Whether the owner of `rank` in the rotation (base index `rank % n`) leads it again even
    if it lost its place: one of every `PROBATION` of its turns, staggered by its index."""
    return (rank // n + rank % n) % PROBATION == 0
