"""The bookkeeping of one round: the target rank, its attempt, this peer's votes and lock."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generic

from p2pnode.consensus.config import Timeouts
from p2pnode.consensus.protocols import CollectedT, Lock, PeerIDT, RoundRecord, StateT, VoteT
from p2pnode.consensus.rules import Certified


@dataclass
class Round(Generic[StateT, VoteT, PeerIDT, CollectedT]):
    """Everything this peer knows and did while deciding `target` (= finalized rank + 1).

    It survives `induce_sync` and restarts of the machine at the same rank, so a peer that comes
    back to a rank keeps its attempt, its lock and the record of what it voted.
    """

    target: int
    leaders: list[PeerIDT] = field(default_factory=list)
    collected: CollectedT | None = None
    attempt: int = 0
    opened_at: float = math.inf
    deadline: float = math.inf
    quorum_voted_at: float | None = None
    """When votes of the current attempt from a quorum of provers were first all in."""
    splits: int = 0
    """Attempts of this round this peer left after a quorum of provers had voted in them."""
    vote_started: set[int] = field(default_factory=set)
    votes: dict[int, VoteT] = field(default_factory=dict)
    confirmed: set[int] = field(default_factory=set)
    lock: Lock[StateT] | None = None
    proposal: StateT | None = None
    best: Certified | None = None
    quorum_attempt: int | None = None
    next_state: StateT | None = None
    committed: StateT | None = None
    failures: int = 0
    confirmation_sent: bool = False
    sync_requested: bool = False
    checked_commits: dict[int, int] = field(default_factory=dict)
    checked_proofs: set[str] = field(default_factory=set)
    _leader_ids: list[str] = field(default_factory=list)

    @classmethod
    def resume(
        cls, target: int, record: RoundRecord[StateT] | None
    ) -> Round[StateT, VoteT, PeerIDT, CollectedT]:
        """A new round, continuing the journal's record when it is for the same rank."""
        fresh: Round[StateT, VoteT, PeerIDT, CollectedT] = cls(target)
        if record is not None and record.rank == target:
            fresh.attempt = record.attempt
            if record.voted:
                fresh.vote_started.add(record.attempt)
            fresh.lock = record.lock
            fresh.proposal = record.proposal
            if record.lock is not None:
                fresh.best = Certified(record.lock.attempt, record.lock.frame.identity())
        return fresh

    def record(self) -> RoundRecord[StateT]:
        voted = self.attempt in self.vote_started
        return RoundRecord(self.target, self.attempt, voted, self.lock, self.proposal)

    def set_leaders(self, leaders: list[PeerIDT]) -> None:
        self.leaders = list(leaders)
        self._leader_ids = [leader.identity() for leader in self.leaders]

    def leader_ids(self) -> list[str]:
        """The provers of the round by identity, highest priority first (read-only)."""
        return self._leader_ids

    def open_attempt(self, now: float, timeouts: Timeouts) -> None:
        """Start the clock of the current attempt if it is not running yet."""
        if math.isinf(self.deadline):
            self.opened_at = now
            self.deadline = now + timeouts.attempt_length(self.attempt)

    def move_to(self, attempt: int, now: float, timeouts: Timeouts) -> None:
        """Enter a later attempt; its timeout grows with its number."""
        if self.quorum_voted_at is not None:
            self.splits += 1
        self.attempt = attempt
        self.opened_at = now
        self.deadline = now + timeouts.attempt_length(attempt)
        self.quorum_voted_at = None

    def wait_ends(self, timeouts: Timeouts) -> float:
        """When an unlocked prover stops waiting for the top prover's proposal."""
        return self.opened_at + timeouts.voting

    def settled_at(self, timeouts: Timeouts) -> float:
        """When this peer may vote in the current attempt (see `Timeouts.settle`)."""
        return self.opened_at + timeouts.settle(self.splits)

    def quorum_voted(self, now: float, timeouts: Timeouts) -> bool:
        """A quorum has voted in the current attempt: from now on it lasts at most `grace` more
        seconds, however long it could have lasted, counted from when this peer may vote in it
        at the earliest (a quorum's votes can be in before its own wait after a split attempt
        is over: it still votes). Returns whether the deadline moved."""
        if self.quorum_voted_at is not None:
            return False
        self.quorum_voted_at = now
        ends = max(now, self.settled_at(timeouts)) + timeouts.grace
        if ends >= self.deadline:
            return False
        self.deadline = ends
        return True

    def learn_certificate(self, attempt: int, frame_id: str) -> None:
        if self.best is None or attempt > self.best.attempt:
            self.best = Certified(attempt, frame_id)
