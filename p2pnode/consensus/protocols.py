"""The contracts between the engine and its providers, listeners and journal."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, Self, TypeVar, runtime_checkable

from p2pnode.consensus.states import Event, State


class Unique(Protocol):
    """Anything the engine stores: it names itself, copies itself and has an ordinal rank.

    Votes are compared by value (`==`, else attribute by attribute) to tell a duplicate from an
    equivocation, so a vote type should leave a randomized signature out of its equality.
    """

    def identity(self) -> str: ...

    def clone(self) -> Self: ...

    def rank(self) -> int: ...


StateT = TypeVar("StateT", bound=Unique)
VoteT = TypeVar("VoteT", bound=Unique)
PeerIDT = TypeVar("PeerIDT", bound=Unique)
CollectedT = TypeVar("CollectedT", bound=Unique)

StateT_contra = TypeVar("StateT_contra", bound=Unique, contravariant=True)
PeerIDT_co = TypeVar("PeerIDT_co", bound=Unique, covariant=True)
CollectedT_contra = TypeVar("CollectedT_contra", bound=Unique, contravariant=True)


class SyncProvider(Protocol[StateT]):
    """Brings the local state up to date with the network."""

    async def synchronize(self, existing: StateT | None) -> StateT:
        """Return the latest finalized state; raise `ProviderError` on a transient failure."""
        ...


class VotingProvider(Protocol[StateT, VoteT, PeerIDT_co]):
    """Publishes proposals, votes and confirmations and judges votes."""

    async def send_proposal(self, proposal: StateT) -> None: ...

    async def decide_and_send_vote(
        self, proposals: Mapping[str, StateT]
    ) -> tuple[PeerIDT_co, VoteT]:
        """Choose among `proposals` (keyed by proposer), publish a vote, return (proposer, vote)."""
        ...

    async def is_quorum(self, proposal_votes: Mapping[str, VoteT]) -> bool:
        """Whether these votes (keyed by voter) form a quorum for one proposal."""
        ...

    async def finalize_votes(
        self, proposals: Mapping[str, StateT], proposal_votes: Mapping[str, VoteT]
    ) -> tuple[StateT, PeerIDT_co]:
        """Fold a quorum of votes into the chosen state (with its certificate) and its proposer;
        the state is looked for among the values of `proposals`."""
        ...

    async def send_confirmation(self, finalized: StateT) -> None: ...


@runtime_checkable
class CommitVotingProvider(Protocol[StateT, VoteT, PeerIDT_co]):
    """A voting provider that runs attempts within a rank.

    Having `is_commit` and `finalize_commit` switches the engine to attempts: the vote is the
    prevote, the confirmation is the precommit carrying the vote certificate, and a rank is final
    on a commit certificate. Votes and confirmations then have an `attempt: int` attribute
    (or an `attempt()` method).
    """

    async def send_proposal(self, proposal: StateT) -> None: ...

    async def decide_and_send_vote(
        self, proposals: Mapping[str, StateT], attempt: int = 0
    ) -> tuple[PeerIDT_co, VoteT]: ...

    async def is_quorum(self, proposal_votes: Mapping[str, VoteT]) -> bool: ...

    async def finalize_votes(
        self, proposals: Mapping[str, StateT], proposal_votes: Mapping[str, VoteT]
    ) -> tuple[StateT, PeerIDT_co]:
        """As above; `proposals` holds every frame at hand, keyed by frame id."""
        ...

    async def send_confirmation(self, finalized: StateT) -> None: ...

    async def is_commit(self, confirmations: Mapping[str, StateT]) -> bool:
        """Whether these confirmations (one attempt, keyed by sender) prove a frame final."""
        ...

    async def finalize_commit(self, confirmations: Mapping[str, StateT]) -> StateT:
        """Fold confirmations that prove a commit into the final frame with its certificate."""
        ...


class LeaderProvider(Protocol[StateT, PeerIDT, CollectedT_contra]):
    """Orders the next provers and proves the next state."""

    async def get_next_leaders(self, prior: StateT | None) -> list[PeerIDT]:
        """The provers of the next rank, highest priority first."""
        ...

    async def prove_next_state(
        self, prior: StateT | None, collected: CollectedT_contra
    ) -> StateT: ...


class LivenessProvider(Protocol[StateT_contra, PeerIDT_co, CollectedT]):
    """Collects pending work and announces this prover's liveness."""

    async def collect(self) -> CollectedT: ...

    async def send_liveness(self, prior: StateT_contra | None, collected: CollectedT) -> None: ...


class TraceLogger(Protocol):
    def trace(self, message: str) -> None: ...

    def error(self, message: str, err: BaseException | None) -> None: ...


class TransitionListener(Protocol):
    def on_transition(self, from_: State, to: State, event: Event) -> None: ...


class FinalityListener(Protocol[StateT_contra]):
    """Told of every state the engine adopts as final, in rank order, before it adopts it;
    an exception stops the machine (a state that cannot be kept must not be built upon)."""

    def on_finalized(self, state: StateT_contra) -> None: ...


@dataclass(frozen=True, slots=True)
class Lock(Generic[StateT]):
    """The frame this peer confirmed (precommitted) and the attempt it did so in."""

    attempt: int
    proposer: str
    frame: StateT


@dataclass(frozen=True, slots=True)
class RoundRecord(Generic[StateT]):
    """What a peer must remember across a restart so it never signs two different things where
    it may sign one: a vote per attempt, a proposal per rank."""

    rank: int
    attempt: int
    voted: bool
    lock: Lock[StateT] | None = None
    proposal: StateT | None = None
    """This peer's own proposal for the rank: re-sent after a restart, never proven again (a
    second, different proposal would look like an equivocation)."""


class RoundJournal(Protocol[StateT]):
    """Durable storage of the current round's record; `save` returns once it is on disk."""

    def load(self) -> RoundRecord[StateT] | None: ...

    def save(self, record: RoundRecord[StateT]) -> None: ...


class NullTracer:
    """A trace logger that drops everything."""

    def trace(self, message: str) -> None:
        pass

    def error(self, message: str, err: BaseException | None) -> None:
        pass


def attempt_of(item: object) -> int:
    """The attempt a vote or confirmation belongs to: its `attempt` (an attribute, or a method
    returning it), else 0."""
    value = getattr(item, "attempt", 0)
    if callable(value):
        value = value()
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return value if valid else 0
