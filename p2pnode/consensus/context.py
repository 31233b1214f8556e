"""The round context: what the machine hands to every state behaviour, and how they call out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from p2pnode.consensus.book import MessageBook
from p2pnode.consensus.config import Limits, Timeouts
from p2pnode.consensus.errors import InvalidProposal, ProviderError
from p2pnode.consensus.protocols import (
    CollectedT,
    FinalityListener,
    LeaderProvider,
    LivenessProvider,
    PeerIDT,
    RoundJournal,
    RoundRecord,
    StateT,
    SyncProvider,
    TraceLogger,
    VoteT,
)
from p2pnode.consensus.round import Round
from p2pnode.consensus.states import Event

if TYPE_CHECKING:
    from p2pnode.consensus.protocols import VotingProvider

T = TypeVar("T")
Post = Callable[[Event, int | None], None]


class Context(Generic[StateT, VoteT, PeerIDT, CollectedT]):
    """Everything the state behaviours read and change: this peer, its providers, the messages
    received, the round being decided, the latest final state, and the signals between the
    machine's event loop and the behaviours.

    The machine owns one context and hands it to each behaviour it runs. A behaviour reports an
    outcome only by `post`ing an event tagged with its state's epoch, so the machine alone moves
    between states and drops results that arrive after their state was left.
    """

    def __init__(
        self,
        *,
        id_text: str,
        active: StateT | None,
        emit: bool,
        attempts: bool,
        minimum_provers: int | Callable[[], int],
        sync: SyncProvider[StateT],
        voting: VotingProvider[StateT, VoteT, PeerIDT],
        leader: LeaderProvider[StateT, PeerIDT, CollectedT],
        liveness: LivenessProvider[StateT, PeerIDT, CollectedT],
        tracer: TraceLogger,
        timeouts: Timeouts,
        limits: Limits,
        journal: RoundJournal[StateT] | None,
        post: Post,
    ) -> None:
        self.id_text = id_text
        self.active = active
        self.emit = emit
        self.attempts = attempts
        """Whether the voting provider runs attempts within a rank (a `CommitVotingProvider`)."""
        self.sync = sync
        self.voting = voting
        self.leader = leader
        self.liveness = liveness
        self.tracer = tracer
        self.timeouts = timeouts
        self.limits = limits
        self.journal = journal
        self.finality_listeners: list[FinalityListener[StateT]] = []
        self.book: MessageBook[StateT, VoteT, CollectedT] = MessageBook(limits)
        if active is not None:
            self.book.prune_through(active.rank())
        self.record: RoundRecord[StateT] | None = journal.load() if journal is not None else None
        self.round: Round[StateT, VoteT, PeerIDT, CollectedT] = Round.resume(
            self.book.floor + 1, self.record
        )
        # A restarted prover resumes its attempt: the book keeps that attempt's messages.
        self.book.set_attempt(self.round.target, self.round.attempt)
        self._minimum_provers = minimum_provers
        self._post = post
        # Signals: self-loop events not yet seen by the state's evaluation; whether it must run
        # again, and the events that wake it and the other tasks of a state.
        self.loop_events: set[Event] = set()
        self.dirty = False
        self.poke = trio.Event()
        self.sync_hint = trio.Event()
        self.commit_hint = trio.Event()
        self.deadline_moved = trio.Event()

    def post(self, event: Event, epoch: int | None = None) -> None:
        """Queue `event` for the machine; `epoch` ties it to the state entry that raised it."""
        self._post(event, epoch)

    def wake(self) -> None:
        """Make the current state's evaluation run again."""
        self.dirty = True
        self.poke.set()

    def take_events(self) -> set[Event]:
        events, self.loop_events = self.loop_events, set()
        return events

    def minimum(self) -> int:
        value = self._minimum_provers
        return int(value() if callable(value) else value)

    def adopt(self, state: StateT) -> bool:
        """Take `state` as the latest final state if it is newer; never go back."""
        active = self.active
        if active is not None and state.rank() <= active.rank():
            if state.rank() == active.rank() and state.identity() != active.identity():
                self.tracer.error(f"conflicting state offered at final rank {state.rank()}", None)
            return False
        # Kept first (a store, say), adopted after: a listener that fails stops the machine
        # before it moves past a state it could not keep.
        for listener in list(self.finality_listeners):
            listener.on_finalized(state)
        self.active = state
        self.book.prune_through(state.rank())
        self.round = Round.resume(state.rank() + 1, self.record)
        self.book.set_attempt(self.round.target, self.round.attempt)
        self.tracer.trace(f"final rank {state.rank()}: {state.identity()}")
        return True

    # -- the round's views ---------------------------------------------------------------

    def listed(self, per_sender: Mapping[str, T]) -> dict[str, T]:
        """Entries from the round's provers only (all of them while the provers are unknown)."""
        leaders = self.round.leader_ids()
        if not leaders:
            return dict(per_sender)
        return {sender: per_sender[sender] for sender in leaders if sender in per_sender}

    def proposals(self) -> dict[str, StateT]:
        """One frame per proposer of the round (see `MessageBook.by_proposer`)."""
        return self.listed(self.book.by_proposer(self.round.target))

    def frames(self) -> dict[str, StateT]:
        """Every frame at hand for the round, by frame id: the proposals and each certified
        frame, an equivocating proposer's two included."""
        target = self.round.target
        proposals = self.listed(self.book.proposals(target))
        frames = {frame.identity(): frame for frame in proposals.values()}
        leaders = set(self.round.leader_ids())
        for proposer, frame in self.book.certified_frames(target):
            if not leaders or proposer in leaders:
                frames[frame.identity()] = frame
        return frames

    def votes(self, attempt: int) -> dict[str, VoteT]:
        return self.listed(self.book.votes(self.round.target, attempt))

    def save_round(self) -> None:
        """Write the round's record durably before acting on it (vote, confirmation)."""
        self.record = self.round.record()
        if self.journal is not None:
            self.journal.save(self.record)

    # -- provider calls ------------------------------------------------------------------

    def failed(self, what: str, err: ProviderError, epoch: int) -> None:
        """Log a transient failure; too many in one round make the engine sync again."""
        self.tracer.error(f"{what} failed (rank {self.round.target})", err)
        self.round.failures += 1
        if self.round.failures >= self.limits.failures_before_sync:
            self.round.failures = 0
            self.post(Event.INDUCE_SYNC, epoch)

    async def retrying(
        self,
        what: str,
        call: Callable[[], Awaitable[T]],
        epoch: int,
        relevant: Callable[[], bool] = lambda: True,
    ) -> T | None:
        """Call until it succeeds, backing off after transient failures; None once irrelevant."""
        failures = 0
        while relevant():
            try:
                return await call()
            except InvalidProposal:
                raise  # a verdict, not a transient failure: the caller acts on it
            except ProviderError as err:
                failures += 1
                self.failed(what, err, epoch)
                await trio.sleep(self.timeouts.retry_delay(failures))
        return None

    async def once(self, what: str, call: Callable[[], Awaitable[T]], epoch: int) -> T | None:
        """Call once; a transient failure is logged and yields None (the state's timer retries)."""
        try:
            return await call()
        except ProviderError as err:
            self.failed(what, err, epoch)
            return None
