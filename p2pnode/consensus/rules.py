"""The vote rules of attempts within a rank (Tendermint's locking), as pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic

from p2pnode.consensus.protocols import Lock, StateT


@dataclass(frozen=True, slots=True)
class Certified:
    """The newest vote certificate known at a rank: a quorum voted `frame_id` in `attempt`."""

    attempt: int
    frame_id: str


@dataclass(frozen=True, slots=True)
class Choice(Generic[StateT]):
    """The proposal to vote for and its proposer."""

    proposer: str
    frame: StateT


def max_faults(provers: int) -> int:
    """f: the number of Byzantine provers n provers tolerate, floor((n-1)/3)."""
    return max(provers - 1, 0) // 3


def quorum_size(provers: int) -> int:
    """q: the votes a certificate needs among n provers, n - f (2f+1 when n = 3f+1)."""
    return provers - max_faults(provers)


def priority(leaders: Sequence[str], attempt: int) -> list[str]:
    """Leader priority in an attempt: the rank's leader order, rotated by the attempt."""
    if not leaders:
        return []
    shift = attempt % len(leaders)
    return [*leaders[shift:], *leaders[:shift]]


def _find(proposals: Mapping[str, StateT], frame_id: str) -> Choice[StateT] | None:
    for proposer, frame in proposals.items():
        if frame.identity() == frame_id:
            return Choice(proposer, frame)
    return None


def choose_vote(
    attempt: int,
    lock: Lock[StateT] | None,
    best: Certified | None,
    proposals: Mapping[str, StateT],
    leaders: Sequence[str],
    enough_proposals: bool,
) -> Choice[StateT] | None:
    """What an honest prover votes for in `attempt`, or None to keep waiting.

    - Locked on X in attempt l: vote X, unless a certificate for Y from an attempt in [l, attempt)
      is known and Y's frame is at hand (Tendermint's unlock on a newer polka).
    - Not locked: vote the newest certificate's frame if at hand (never an older one's), else
      the proposal of the highest-priority leader (priority rotated by the attempt).
    - Unlocked and without a certified frame at hand, a prover waits until `enough_proposals`
      (the engine: the proposal of the attempt's highest-priority prover is in, live or not,
      or one voting period has passed), so that provers vote alike rather than in arrival
      order.
    """
    if lock is not None:
        if best is not None and lock.attempt <= best.attempt < attempt:
            if best.frame_id == lock.frame.identity():
                return Choice(lock.proposer, lock.frame)
            newer = _find(proposals, best.frame_id)
            if newer is not None:
                return newer
        return Choice(lock.proposer, lock.frame)
    if best is not None:
        certified = _find(proposals, best.frame_id)
        if certified is not None:
            return certified
    if not enough_proposals:
        return None
    for leader in priority(leaders, attempt):
        frame = proposals.get(leader)
        if frame is not None:
            return Choice(leader, frame)
    return None


def proves_first(me: str, leaders: Sequence[str]) -> bool:
    """Whether `me` proves in attempt 0: it is among the first f+1 provers of the leader order.

    At most f provers are faulty (crashed, cut off or Byzantine), so one of the f+1 is honest
    and proposes; the others prove only if the rank reaches attempt 1. The order alone decides,
    not who announced liveness: peers that heard different announcements would otherwise
    prove more than f+1 proposals between them.
    """
    return me in leaders[: max_faults(len(leaders)) + 1]


def catch_up_attempt(current: int, reach: Mapping[str, int], provers: Sequence[str]) -> int:
    """The attempt to move to: the highest one at least f+1 provers have shown, if above ours.

    f+1 senders include an honest one, so Byzantine provers alone cannot rush the round.
    """
    listed = set(provers)
    attempts = sorted((a for sender, a in reach.items() if sender in listed), reverse=True)
    needed = max_faults(len(listed)) + 1
    if len(attempts) < needed:
        return current
    return max(current, attempts[needed - 1])
