"""Deterministic mock types and providers shaped like the original's (no attempts)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import trio

from p2pnode.consensus import Event, RoundRecord, State, StateMachine


@dataclass(frozen=True)
class MockState:
    round: int
    hash: str
    proposal_id: str = ""

    def identity(self) -> str:
        return self.hash

    def rank(self) -> int:
        return self.round

    def clone(self) -> MockState:
        return self


@dataclass(frozen=True)
class MockVote:
    round: int
    voter_id: str
    proposal_id: str
    signature: str = "sig"

    def identity(self) -> str:
        return self.voter_id

    def rank(self) -> int:
        return self.round

    def clone(self) -> MockVote:
        return self


@dataclass(frozen=True)
class MockPeer:
    name: str

    def identity(self) -> str:
        return self.name

    def rank(self) -> int:
        return 0

    def clone(self) -> MockPeer:
        return self


@dataclass(frozen=True)
class MockCollected:
    round: int
    data: bytes = b"collected"

    def identity(self) -> str:
        return self.data.decode()

    def rank(self) -> int:
        return self.round

    def clone(self) -> MockCollected:
        return self


GENESIS = MockState(0, "genesis")


@dataclass
class MockSync:
    delay: float = 0.01
    state: MockState | None = None
    calls: int = 0

    async def synchronize(self, existing: MockState | None) -> MockState:
        self.calls += 1
        await trio.sleep(self.delay)
        if self.state is not None:
            return self.state
        return existing if existing is not None else GENESIS


@dataclass
class MockVoting:
    voter: str
    quorum_size: int = 1
    proposals_sent: list[MockState] = field(default_factory=list)
    votes_sent: list[MockVote] = field(default_factory=list)
    confirmations_sent: list[MockState] = field(default_factory=list)

    async def send_proposal(self, proposal: MockState) -> None:
        self.proposals_sent.append(proposal)

    async def decide_and_send_vote(
        self, proposals: Mapping[str, MockState]
    ) -> tuple[MockPeer, MockVote]:
        proposer = min(proposals)
        chosen = proposals[proposer]
        vote = MockVote(chosen.round, self.voter, chosen.proposal_id)
        self.votes_sent.append(vote)
        return MockPeer(proposer), vote

    async def is_quorum(self, proposal_votes: Mapping[str, MockVote]) -> bool:
        counts: dict[str, int] = {}
        for vote in proposal_votes.values():
            counts[vote.proposal_id] = counts.get(vote.proposal_id, 0) + 1
        return any(count >= self.quorum_size for count in counts.values())

    async def finalize_votes(
        self, proposals: Mapping[str, MockState], proposal_votes: Mapping[str, MockVote]
    ) -> tuple[MockState, MockPeer]:
        counts: dict[str, int] = {}
        for vote in proposal_votes.values():
            counts[vote.proposal_id] = counts.get(vote.proposal_id, 0) + 1
        proposer = max(sorted(proposals), key=lambda p: counts.get(proposals[p].proposal_id, 0))
        return proposals[proposer], MockPeer(proposer)

    async def send_confirmation(self, finalized: MockState) -> None:
        self.confirmations_sent.append(finalized)


@dataclass
class MockLeader:
    leaders: list[str]
    prove_delay: float = 0.05
    proved: list[MockState] = field(default_factory=list)

    async def get_next_leaders(self, prior: MockState | None) -> list[MockPeer]:
        return [MockPeer(name) for name in self.leaders]

    async def prove_next_state(
        self, prior: MockState | None, collected: MockCollected
    ) -> MockState:
        await trio.sleep(self.prove_delay)
        rank = (prior.round if prior else 0) + 1
        proposal = MockState(rank, f"proved-{rank}", f"proposal-{rank}")
        self.proved.append(proposal)
        return proposal


@dataclass
class MockLiveness:
    collect_delay: float = 0.01
    round: int = 1
    sent: int = 0

    async def collect(self) -> MockCollected:
        await trio.sleep(self.collect_delay)
        return MockCollected(self.round)

    async def send_liveness(self, prior: MockState | None, collected: MockCollected) -> None:
        self.sent += 1


@dataclass
class Recorder:
    """Records every transition; `wait_for` awaits a state without polling."""

    transitions: list[tuple[State, State, Event]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    """Virtual time of each transition, in step with `transitions`."""
    _changed: trio.Event = field(default_factory=trio.Event)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        self.transitions.append((from_, to, event))
        try:
            self.times.append(trio.current_time())
        except RuntimeError:  # told outside a trio run (e.g. `close()` from plain code)
            self.times.append(math.nan)
        self._changed.set()
        self._changed = trio.Event()

    def reached(self, state: State) -> bool:
        return any(to is state for _, to, _ in self.transitions)

    def states(self) -> list[State]:
        return [to for _, to, _ in self.transitions]

    async def wait_for(self, state: State) -> None:
        while not self.reached(state):
            await self._changed.wait()

    def index(self, transition: tuple[State, State, Event], start: int = 0) -> int | None:
        """Position of the first `transition` at or after `start`, or None if there is none."""
        try:
            return self.transitions.index(transition, start)
        except ValueError:
            return None

    async def wait_for_transition(
        self, transition: tuple[State, State, Event], start: int = 0
    ) -> int:
        """Await the first `transition` at or after position `start`; return its position."""
        while (position := self.index(transition, start)) is None:
            await self._changed.wait()
        return position


@dataclass
class TraceRecorder:
    traces: list[str] = field(default_factory=list)
    errors: list[tuple[str, BaseException | None]] = field(default_factory=list)

    def trace(self, message: str) -> None:
        self.traces.append(message)

    def error(self, message: str, err: BaseException | None) -> None:
        self.errors.append((message, err))


@dataclass
class MemoryJournal:
    """A `RoundJournal` in memory; `save` is logged in the script's call log."""

    stored: RoundRecord[MockState] | None = None
    saved: list[RoundRecord[MockState]] = field(default_factory=list)
    log: list[str] | None = None

    def load(self) -> RoundRecord[MockState] | None:
        return self.stored

    def save(self, record: RoundRecord[MockState]) -> None:
        self.saved.append(record)
        self.stored = record
        if self.log is not None:
            self.log.append("save")


# -- the cast and the road of the scenarios -------------------------------------------------

LEADERS = ["leader1", "leader2", "leader3"]
SELF = MockPeer("leader1")
LEADER2 = MockPeer("leader2")
LEADER3 = MockPeer("leader3")
OUTSIDER = MockPeer("outsider")

# What leader1 proves for ranks 1 and 2 with `MockLeader`, and its vote for rank 1.
OWN_PROPOSAL = MockState(1, "proved-1", "proposal-1")
OWN_PROPOSAL_2 = MockState(2, "proved-2", "proposal-2")
OWN_VOTE = MockVote(1, "leader1", "proposal-1")
# A proposal for rank 1 from the second listed prover.
LEADER2_PROPOSAL = MockState(1, "leader2-1", "proposal-leader2")

Machine = StateMachine[MockState, MockVote, MockPeer, MockCollected]
Step = tuple[State, State, Event]

S, E = State, Event
# The road from a fresh start to the first collecting state, and the steps after it.
BOOT: list[Step] = [
    (S.STOPPED, S.STARTING, E.START),
    (S.STARTING, S.LOADING, E.INIT_COMPLETE),
    (S.LOADING, S.COLLECTING, E.SYNC_COMPLETE),
]
TO_LIVENESS: Step = (S.COLLECTING, S.LIVENESS_CHECK, E.COLLECTION_DONE)
LIVENESS_TIMEOUT: Step = (S.LIVENESS_CHECK, S.LIVENESS_CHECK, E.LIVENESS_TIMEOUT)
LIVENESS_LOOP: Step = (S.LIVENESS_CHECK, S.LIVENESS_CHECK, E.LIVENESS_CHECK_RECEIVED)
TO_PROVING: Step = (S.LIVENESS_CHECK, S.PROVING, E.PROVER_SIGNAL)
TO_PUBLISHING: Step = (S.PROVING, S.PUBLISHING, E.PROOF_COMPLETE)
TO_VOTING: Step = (S.PUBLISHING, S.VOTING, E.PUBLISH_COMPLETE)
VOTE_LOOP: Step = (S.VOTING, S.VOTING, E.VOTE_RECEIVED)
VOTING_TIMEOUT: Step = (S.VOTING, S.VOTING, E.VOTING_TIMEOUT)
TO_FINALIZING: Step = (S.VOTING, S.FINALIZING, E.QUORUM_REACHED)
BACK_TO_COLLECTING: Step = (S.VERIFYING, S.COLLECTING, E.VERIFICATION_DONE)
CLEANED_UP: Step = (S.STOPPING, S.STOPPED, E.CLEANUP_COMPLETE)
