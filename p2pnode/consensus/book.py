"""The message book: received liveness, proposals, votes and confirmations, bounded and pruned."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from typing import Generic

from p2pnode.consensus.config import Limits
from p2pnode.consensus.errors import EquivocationError
from p2pnode.consensus.protocols import CollectedT, StateT, VoteT


class Receipt(enum.Enum):
    """What became of a received message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    STALE = "stale"
    TOO_FAR_AHEAD = "too_far_ahead"
    NOT_A_PROVER = "not_a_prover"
    FULL = "full"
    CLOSED = "closed"
    INVALID = "invalid"
    """A proposal this peer already found invalid (its proof, say) in this round."""

    @property
    def stored(self) -> bool:
        return self is Receipt.ACCEPTED


def same_content(first: object, second: object) -> bool:
    """Whether two messages say the same thing (value equality, else equal attributes)."""
    if first is second or first == second:
        return True
    if type(first) is not type(second):
        return False
    try:
        return bool(vars(first) == vars(second))
    except TypeError:  # no __dict__: equality above was the only content check available
        return False


class MessageBook(Generic[StateT, VoteT, CollectedT]):
    """Messages per rank (and attempt), first one kept per sender.

    Only ranks in (floor, floor + ranks_ahead] are kept, where floor is the finalized rank;
    `prune_through` drops everything at or below a newly finalized rank.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._floor = -1
        self._liveness: dict[int, dict[str, CollectedT]] = {}
        self._proposals: dict[int, dict[str, StateT]] = {}
        self._votes: dict[int, dict[int, dict[str, VoteT]]] = {}
        self._confirmations: dict[int, dict[int, dict[str, StateT]]] = {}
        self._commits: dict[int, dict[str, StateT]] = {}
        self._certified: dict[int, tuple[int, str]] = {}
        self._certified_frames: dict[int, dict[str, tuple[int, str, StateT]]] = {}
        self._invalid: dict[int, set[str]] = {}
        self._reach: dict[int, dict[str, int]] = {}
        self._attempt: dict[int, int] = {}
        self.evidence: deque[EquivocationError] = deque(maxlen=limits.evidence_kept)

    @property
    def floor(self) -> int:
        return self._floor

    def rank_receipt(self, rank: int) -> Receipt | None:
        """Why a message for `rank` is not kept, or None when its rank is in the window."""
        if rank <= self._floor:
            return Receipt.STALE
        if rank > self._floor + self._limits.ranks_ahead:
            return Receipt.TOO_FAR_AHEAD
        return None

    def attempt_receipt(self, rank: int, attempt: int, *, keep_older: bool) -> Receipt | None:
        current = self._attempt.get(rank, 0)
        if attempt > current + self._limits.attempts_ahead:
            return Receipt.TOO_FAR_AHEAD
        oldest = current - self._limits.attempts_ahead if keep_older else current
        if attempt < oldest:
            return Receipt.STALE
        return None

    def _admit(self, per_sender: Mapping[str, object], sender: str) -> Receipt | None:
        if sender in per_sender:
            return Receipt.DUPLICATE
        if len(per_sender) >= self._limits.senders_per_rank:
            return Receipt.FULL
        return None

    def add_liveness(self, rank: int, sender: str, collected: CollectedT) -> Receipt:
        refused = self.rank_receipt(rank)
        if refused is None:
            per_sender = self._liveness.setdefault(rank, {})
            refused = self._admit(per_sender, sender)
            if refused is None:
                per_sender[sender] = collected
        return refused or Receipt.ACCEPTED

    def add_proposal(
        self, rank: int, sender: str, proposal: StateT, *, replace: bool = False
    ) -> Receipt:
        """Keep the first proposal per sender, unless `replace` says this one must win (this
        peer's own proposal)."""
        refused = self.rank_receipt(rank)
        if refused is not None:
            return refused
        if proposal.identity() in self._invalid.get(rank, ()):
            return Receipt.INVALID
        per_sender = self._proposals.setdefault(rank, {})
        held = per_sender.get(sender)
        if held is not None and (not replace or held.identity() == proposal.identity()):
            return Receipt.DUPLICATE
        if held is None and len(per_sender) >= self._limits.senders_per_rank:
            return Receipt.FULL
        per_sender[sender] = proposal
        return Receipt.ACCEPTED

    def add_certified(self, rank: int, attempt: int, proposer: str, frame: StateT) -> Receipt:
        """Keep a frame a certificate of `attempt` shows a quorum voted for, by frame id: an
        equivocating proposer's frames are kept side by side, and a replayed older certificate
        neither displaces a newer one's frame nor lowers the attempt it is known by."""
        refused = self.rank_receipt(rank)
        if refused is not None:
            return refused
        frame_id = frame.identity()
        per_frame = self._certified_frames.setdefault(rank, {})
        held = per_frame.get(frame_id)
        if held is not None and held[0] >= attempt:
            return Receipt.DUPLICATE
        if held is None and len(per_frame) >= self._limits.senders_per_rank:
            return Receipt.FULL
        per_frame[frame_id] = (attempt, proposer, frame)
        return Receipt.ACCEPTED

    def by_proposer(self, rank: int) -> dict[str, StateT]:
        """One frame per proposer: the first it sent, or the frame of its newest certificate.

        Certified frames are laid on oldest certificate first, so the newest one's frame is the
        one kept; the newest certificate seen at the rank counts too when its frame came as a
        plain proposal (a quorum's votes seen here, while the same proposer's older certificate
        came with a precommit)."""
        sent = self.proposals(rank)
        layers = self._certified_layers(rank)
        newest = self._certified.get(rank)
        if newest is not None:
            attempt, frame_id = newest
            layers += [
                (attempt, frame_id, p, f) for p, f in sent.items() if f.identity() == frame_id
            ]
        held = dict(sent)
        for _, _, proposer, frame in sorted(layers, key=lambda layer: layer[:2]):
            held[proposer] = frame
        return held

    def certified_frames(self, rank: int) -> list[tuple[str, StateT]]:
        """The certified frames of a rank as (proposer, frame), oldest certificate first."""
        layers = sorted(self._certified_layers(rank), key=lambda layer: layer[:2])
        return [(proposer, frame) for _, _, proposer, frame in layers]

    def _certified_layers(self, rank: int) -> list[tuple[int, str, str, StateT]]:
        """(attempt, frame id, proposer, frame) of each certified frame of a rank."""
        held = self._certified_frames.get(rank, {})
        return [(attempt, fid, proposer, frame) for fid, (attempt, proposer, frame) in held.items()]

    def discard_proposal(self, rank: int, sender: str, frame_id: str) -> None:
        """Drop a proposal found invalid; the same frame is refused from then on at this rank."""
        if self.rank_receipt(rank) is not None:
            return
        invalid = self._invalid.setdefault(rank, set())
        if len(invalid) < self._limits.senders_per_rank:
            invalid.add(frame_id)
        held = self._proposals.get(rank, {}).get(sender)
        if held is not None and held.identity() == frame_id:
            del self._proposals[rank][sender]

    def note_certificate(self, rank: int, attempt: int, frame_id: str) -> None:
        """Remember the newest vote certificate seen at a rank, whatever its attempt: a locked
        peer needs it to unlock, however far its own attempts have run meanwhile."""
        if self.rank_receipt(rank) is not None:
            return
        held = self._certified.get(rank)
        if held is None or attempt > held[0]:
            self._certified[rank] = (attempt, frame_id)

    def certified(self, rank: int) -> tuple[int, str] | None:
        """The newest vote certificate seen at a rank: (attempt, frame id)."""
        return self._certified.get(rank)

    def add_commit(self, rank: int, sender: str, proof: StateT) -> Receipt:
        """Keep a confirmation that proves a rank final on its own (it carries a commit
        certificate). Unlike precommits it is kept whatever its attempt, and it never counts as
        a duplicate of the same sender's precommit: it is what ends the round."""
        refused = self.rank_receipt(rank)
        if refused is None:
            per_sender = self._commits.setdefault(rank, {})
            refused = self._admit(per_sender, sender)
            if refused is None:
                per_sender[sender] = proof
        return refused or Receipt.ACCEPTED

    def commits(self, rank: int) -> Mapping[str, StateT]:
        return self._commits.get(rank, {})

    def note_reach(self, rank: int, sender: str, attempt: int) -> None:
        """Remember the highest attempt a sender has shown at a rank (to catch up with it)."""
        if self.rank_receipt(rank) is not None:
            return
        reach = self._reach.setdefault(rank, {})
        if sender in reach or len(reach) < self._limits.senders_per_rank:
            reach[sender] = max(attempt, reach.get(sender, 0))

    def add_vote(self, rank: int, attempt: int, voter: str, vote: VoteT) -> Receipt:
        """Keep the first vote per voter, rank and attempt; a different second one is evidence."""
        refused = self.rank_receipt(rank) or self.attempt_receipt(rank, attempt, keep_older=False)
        if refused is not None:
            return refused
        per_voter = self._votes.setdefault(rank, {}).setdefault(attempt, {})
        first = per_voter.get(voter)
        if first is not None:
            if same_content(first, vote):
                return Receipt.DUPLICATE
            evidence = EquivocationError(voter, first, vote)
            self.evidence.append(evidence)
            raise evidence
        if len(per_voter) >= self._limits.senders_per_rank:
            return Receipt.FULL
        per_voter[voter] = vote
        return Receipt.ACCEPTED

    def add_confirmation(
        self, rank: int, attempt: int, sender: str, confirmation: StateT
    ) -> Receipt:
        refused = self.rank_receipt(rank) or self.attempt_receipt(rank, attempt, keep_older=True)
        if refused is None:
            per_sender = self._confirmations.setdefault(rank, {}).setdefault(attempt, {})
            refused = self._admit(per_sender, sender)
            if refused is None:
                per_sender[sender] = confirmation
        return refused or Receipt.ACCEPTED

    def liveness(self, rank: int) -> Mapping[str, CollectedT]:
        return self._liveness.get(rank, {})

    def proposals(self, rank: int) -> Mapping[str, StateT]:
        return self._proposals.get(rank, {})

    def votes(self, rank: int, attempt: int) -> Mapping[str, VoteT]:
        return self._votes.get(rank, {}).get(attempt, {})

    def confirmations(self, rank: int) -> Mapping[int, Mapping[str, StateT]]:
        """Confirmations of a rank grouped by attempt."""
        return self._confirmations.get(rank, {})

    def reach(self, rank: int) -> Mapping[str, int]:
        return self._reach.get(rank, {})

    def set_attempt(self, rank: int, attempt: int) -> None:
        """The round at `rank` moved to `attempt`: votes of earlier attempts are no longer kept."""
        self._attempt[rank] = attempt
        for older in [a for a in self._votes.get(rank, {}) if a < attempt]:
            del self._votes[rank][older]
        oldest = attempt - self._limits.attempts_ahead
        for older in [a for a in self._confirmations.get(rank, {}) if a < oldest]:
            del self._confirmations[rank][older]

    def prune_through(self, rank: int) -> None:
        """Forget everything at or below a finalized rank."""
        self._floor = max(self._floor, rank)
        for per_rank in (
            self._liveness,
            self._proposals,
            self._votes,
            self._confirmations,
            self._commits,
            self._certified,
            self._certified_frames,
            self._invalid,
            self._reach,
            self._attempt,
        ):
            for old in [r for r in per_rank if r <= self._floor]:
                del per_rank[old]

    def size(self) -> int:
        """Number of stored messages (and per-sender records), for bounded-memory checks."""
        flat = sum(
            len(m)
            for kind in (
                self._liveness,
                self._proposals,
                self._commits,
                self._invalid,
                self._certified_frames,
            )
            for m in kind.values()
        )
        nested = sum(
            len(per)
            for kind in (self._votes, self._confirmations)
            for m in kind.values()
            for per in m.values()
        )
        return flat + nested + len(self._certified) + sum(len(m) for m in self._reach.values())

    def ranks(self) -> list[int]:
        """Ranks that hold any message."""
        found: set[int] = set()
        for per_rank in (
            self._liveness,
            self._proposals,
            self._votes,
            self._confirmations,
            self._commits,
        ):
            found.update(per_rank)
        return sorted(found)
