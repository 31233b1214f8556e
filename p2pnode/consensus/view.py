"""A read-only snapshot of the engine's current round, for status pages and tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from p2pnode.consensus.book import MessageBook
from p2pnode.consensus.protocols import CollectedT, PeerIDT, StateT, VoteT
from p2pnode.consensus.round import Round
from p2pnode.consensus.states import State


@dataclass(frozen=True, slots=True)
class RoundView:
    """What the engine knows of the rank it is deciding."""

    state: State
    finalized_rank: int | None
    finalized_id: str | None
    target_rank: int
    attempt: int
    minimum_provers: int
    provers: tuple[str, ...]
    live: tuple[str, ...]
    proposals: Mapping[str, str]
    """Proposer → proposed frame id."""
    votes: Mapping[str, str]
    """Voter → identity of its vote in the current attempt."""
    confirmations: Mapping[int, tuple[str, ...]]
    """Attempt → senders of confirmations."""
    commits: tuple[str, ...]
    """Senders of confirmations that prove the rank final on their own."""
    voted: bool
    locked_on: str | None
    lock_attempt: int | None
    equivocators: tuple[str, ...]


def view_of(
    state: State,
    active: StateT | None,
    rnd: Round[StateT, VoteT, PeerIDT, CollectedT],
    book: MessageBook[StateT, VoteT, CollectedT],
    minimum_provers: int,
) -> RoundView:
    target = rnd.target
    provers = rnd.leader_ids()
    return RoundView(
        state=state,
        finalized_rank=None if active is None else active.rank(),
        finalized_id=None if active is None else active.identity(),
        target_rank=target,
        attempt=rnd.attempt,
        minimum_provers=minimum_provers,
        provers=tuple(provers),
        live=tuple(sorted(p for p in book.liveness(target) if not provers or p in provers)),
        proposals={p: frame.identity() for p, frame in book.by_proposer(target).items()},
        votes={v: vote.identity() for v, vote in book.votes(target, rnd.attempt).items()},
        confirmations={a: tuple(sorted(g)) for a, g in book.confirmations(target).items()},
        commits=tuple(sorted(book.commits(target))),
        voted=rnd.attempt in rnd.vote_started,
        locked_on=None if rnd.lock is None else rnd.lock.frame.identity(),
        lock_attempt=None if rnd.lock is None else rnd.lock.attempt,
        equivocators=tuple(sorted({e.voter for e in book.evidence})),
    )
