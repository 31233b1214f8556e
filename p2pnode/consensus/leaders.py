"""The leader order of a rank: a rotation no prover can bias, and a place lost by failing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

PROBATION = 16
"""A prover that did not win its last turn at the top of the rotation is moved to the end of
the order until its next probation turn, one of every this many of its turns (each prover's
fall on different ranks): it fails one turn in this many at most, and an honest prover that
missed one turn through a fault is back within as many of its turns."""


def rotation(base: Sequence[str], rank: int) -> list[str]:
    """The base order rotated by the rank: each prover is at the top once every n ranks."""
    if not base:
        return []
    shift = rank % len(base)
    return [*base[shift:], *base[:shift]]


def leader_order(base: Sequence[str], rank: int, winner: Callable[[int], str | None]) -> list[str]:
    """The provers of `rank`, highest priority first.

    `base` is fixed before any rank (the genesis prover set, sorted) and `winner(r)` names the
    prover whose frame is final at rank r (None if unknown). The order is the rotation of the
    base by the rank, with every prover that lost its latest turn at the top moved to the end
    (see `PROBATION`). Nothing a prover chooses when it proposes (its timestamp, its mutations,
    which of its frames it publishes, or when) changes the rotation, and the only thing a
    prover's conduct changes is its own place: it loses it by not winning its own turn.
    """
    order = rotation(base, rank)
    n = len(base)
    demoted = {p for i, p in enumerate(base) if _lost_last_turn(p, i, n, rank, winner)}
    return [p for p in order if p not in demoted] + [p for p in order if p in demoted]


def _lost_last_turn(
    prover: str, index: int, n: int, rank: int, winner: Callable[[int], str | None]
) -> bool:
    last = rank - 1 - (rank - 1 - index) % n  # its latest turn at the top before `rank`
    if last < 1:
        return False
    following = rank + (index - rank) % n  # its next turn at the top, from `rank` on
    if (following // n + index) % PROBATION == 0:
        return False  # its probation turn: it leads again, and keeps its place by winning
    won = winner(last)
    return won is not None and won != prover
