"""The state machine: its public API, its ordered event loop and the life of each state."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

import trio

from p2pnode.consensus import behaviours, voting
from p2pnode.consensus.book import Receipt
from p2pnode.consensus.config import Limits, Timeouts
from p2pnode.consensus.context import Context
from p2pnode.consensus.protocols import (
    CollectedT,
    CommitVotingProvider,
    FinalityListener,
    LeaderProvider,
    LivenessProvider,
    NullTracer,
    PeerIDT,
    RoundJournal,
    StateT,
    SyncProvider,
    TraceLogger,
    TransitionListener,
    VoteT,
    VotingProvider,
    attempt_of,
)
from p2pnode.consensus.states import COMMIT_WATCH_STATES, RECEIVE_EVENTS, Event, Guard, State
from p2pnode.consensus.table import Transition, candidates
from p2pnode.consensus.view import RoundView, view_of

if TYPE_CHECKING:
    # libp2p installs trio-typing, whose stubs shadow trio's own annotations.
    from trio_typing import TaskStatus


Evaluation = Callable[[Context[Any, Any, Any, Any], int], Awaitable[None]]

# What each state does while it lasts (states that only wait for a timeout or an event idle).
EVALUATIONS: dict[State, Evaluation] = {
    State.LOADING: behaviours.loading,
    State.COLLECTING: behaviours.collecting,
    State.LIVENESS_CHECK: behaviours.liveness_check,
    State.PROVING: behaviours.proving,
    State.PUBLISHING: behaviours.publishing,
    State.VOTING: voting.voting,
    State.FINALIZING: voting.finalizing,
    State.VERIFYING: voting.verifying,
    State.STOPPING: behaviours.stopping,
}


@dataclass(frozen=True, slots=True)
class _Envelope:
    event: Event
    epoch: int | None  # the state entry the event belongs to; None for external events


class StateMachine(Generic[StateT, VoteT, PeerIDT, CollectedT]):
    """The round-based consensus engine (a port of a Go state machine).

    Run it with `await nursery.start(machine.run)`. Every other method is synchronous and never
    blocks: it queues an event or stores a message, and the run loop handles events in order.
    """

    def __init__(
        self,
        id: PeerIDT,
        initial_state: StateT | None,
        emit_receive_events_on_sends: bool,
        minimum_provers: int | Callable[[], int],
        sync_provider: SyncProvider[StateT],
        voting_provider: VotingProvider[StateT, VoteT, PeerIDT],
        leader_provider: LeaderProvider[StateT, PeerIDT, CollectedT],
        liveness_provider: LivenessProvider[StateT, PeerIDT, CollectedT],
        trace_logger: TraceLogger | None = None,
        *,
        timeouts: Timeouts | None = None,
        limits: Limits | None = None,
        journal: RoundJournal[StateT] | None = None,
    ) -> None:
        self._tracer = trace_logger if trace_logger is not None else NullTracer()
        self._ctx: Context[StateT, VoteT, PeerIDT, CollectedT] = Context(
            id_text=id.identity(),
            active=initial_state,
            emit=bool(emit_receive_events_on_sends),
            attempts=isinstance(voting_provider, CommitVotingProvider),
            minimum_provers=minimum_provers,
            sync=sync_provider,
            voting=voting_provider,
            leader=leader_provider,
            liveness=liveness_provider,
            tracer=self._tracer,
            timeouts=timeouts if timeouts is not None else Timeouts(),
            limits=limits if limits is not None else Limits(),
            journal=journal,
            post=self._post,
        )

        self._state = State.STOPPED
        self._epoch = 0
        self._entered_at: float | None = None
        self._transition_count = 0
        self._queue: deque[_Envelope] = deque()
        self._queued_receives: set[Event] = set()
        self._wakeup = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._listeners: list[TransitionListener] = []
        self._closed = False
        self._stopped_running = False

    # -- public API ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Handle events until the machine stops (by `stop()`, a crash or `close()`)."""
        if self._closed:
            task_status.started()
            return
        if self._entered_at is None:
            self._entered_at = trio.current_time()
        self._stopped_running = False
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await self._handle_events()
            nursery.cancel_scope.cancel()
        self._nursery = None

    def start(self) -> None:
        self._tracer.trace("start")
        self._post(Event.START)

    def stop(self) -> None:
        self._tracer.trace("stop")
        self._post(Event.STOP)

    def send_event(self, event: Event) -> None:
        self._post(Event(event))

    def close(self) -> None:
        """Stop at once: cancel all work, end in `stopped` (listeners are told) and end `run()`."""
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        if self._scope is not None:
            self._scope.cancel()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        if self._state is not State.STOPPED:
            self._change(Transition(self._state, Event.STOP, State.STOPPED), enter=False)

    def get_state(self) -> State:
        return self._state

    def get_state_time(self) -> float:
        """Seconds since the machine entered its current state."""
        if self._entered_at is None:
            return 0.0
        try:
            return max(trio.current_time() - self._entered_at, 0.0)
        except RuntimeError:  # outside a trio run: no clock to read
            return 0.0

    def get_transition_count(self) -> int:
        return self._transition_count

    def get_active_state(self) -> StateT | None:
        """The latest state this peer holds as final."""
        return self._ctx.active

    def add_listener(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    def add_finality_listener(self, listener: FinalityListener[StateT]) -> None:
        self._ctx.finality_listeners.append(listener)

    def current_votes(self) -> Mapping[str, VoteT]:
        """The votes of the current attempt of the round being decided, by voter."""
        return self._ctx.book.votes(self._ctx.round.target, self._ctx.round.attempt)

    def round_view(self) -> RoundView:
        """A read-only snapshot of the current round, for status pages and tests."""
        ctx = self._ctx
        return view_of(self._state, ctx.active, ctx.round, ctx.book, ctx.minimum())

    @property
    def timeouts(self) -> Timeouts:
        """The timeouts this machine runs with."""
        return self._ctx.timeouts

    @property
    def uses_attempts(self) -> bool:
        """Whether the voting provider runs attempts within a rank."""
        return self._ctx.attempts

    def stored_messages(self) -> int:
        """How many messages the engine holds (bounded by its `Limits`)."""
        return self._ctx.book.size()

    # -- receiving -----------------------------------------------------------------------

    def _screen(self, rank: int, sender: str) -> Receipt | None:
        if self._closed:
            return Receipt.CLOSED
        leaders = self._ctx.round.leader_ids()
        if rank == self._ctx.round.target and leaders and sender not in leaders:
            return Receipt.NOT_A_PROVER
        return self._ctx.book.rank_receipt(rank)

    def _screen_commit(self, rank: int) -> Receipt | None:
        return Receipt.CLOSED if self._closed else self._ctx.book.rank_receipt(rank)

    def receive_liveness_check(self, peer: PeerIDT, collected: CollectedT) -> Receipt:
        rank, sender = collected.rank(), peer.identity()
        receipt = self._screen(rank, sender) or self._ctx.book.add_liveness(rank, sender, collected)
        if receipt.stored:
            self._post(Event.LIVENESS_CHECK_RECEIVED)
        return receipt

    def receive_proposal(self, peer: PeerIDT, proposal: StateT) -> Receipt:
        """Store the first proposal per (rank, proposer)."""
        rank, sender = proposal.rank(), peer.identity()
        receipt = self._screen(rank, sender) or self._ctx.book.add_proposal(rank, sender, proposal)
        if receipt.stored:
            self._post(Event.PROPOSAL_RECEIVED)
        return receipt

    def receive_certified(self, proposer: PeerIDT, frame: StateT, attempt: int) -> Receipt:
        """Store a frame taken from a valid certificate of `attempt` (checked by the caller),
        by frame id: a proposer that equivocated may have sent us another frame, and the one a
        quorum voted for is what this peer votes for in later attempts. A replayed older
        certificate never hides a newer one's frame."""
        rank, sender = frame.rank(), proposer.identity()
        receipt = self._screen(rank, sender) or self._ctx.book.add_certified(
            rank, attempt, sender, frame
        )
        if receipt.stored:
            self._post(Event.PROPOSAL_RECEIVED)
        return receipt

    def receive_vote(self, proposer: PeerIDT, voter: PeerIDT, vote: VoteT) -> Receipt:
        """Store a vote; raises `EquivocationError` if the voter already voted differently."""
        rank, sender = vote.rank(), voter.identity()
        attempt = attempt_of(vote) if self._ctx.attempts else 0
        receipt = self._screen(rank, sender)
        if receipt is None:
            self._ctx.book.note_reach(rank, sender, attempt)
            receipt = self._ctx.book.add_vote(rank, attempt, sender, vote)
        if receipt.stored:
            self._post(Event.VOTE_RECEIVED)
        return receipt

    def receive_confirmation(
        self, peer: PeerIDT, confirmation: StateT, *, commit: bool = False
    ) -> Receipt:
        """Store a confirmation: a precommit, or with `commit` a proof that its frame is final
        on its own (a commit certificate, checked by the caller). A commit is kept whatever its
        attempt and from any sender (anyone may relay one), and it is checked once."""
        rank, sender = confirmation.rank(), peer.identity()
        if commit:
            book = self._ctx.book
            receipt = self._screen_commit(rank) or book.add_commit(rank, sender, confirmation)
        else:
            receipt = self._screen(rank, sender) or self._add_precommit(sender, confirmation)
        if receipt.stored or receipt is Receipt.TOO_FAR_AHEAD:
            # It carries a certificate, so a later rank is really that far on: catch up.
            self._ctx.sync_hint.set()
            if rank > self._ctx.round.target:
                self._behind()
        if receipt.stored:
            self._post(Event.CONFIRMATION_RECEIVED)
        return receipt

    def _add_precommit(self, sender: str, confirmation: StateT) -> Receipt:
        rank = confirmation.rank()
        attempt = attempt_of(confirmation) if self._ctx.attempts else 0
        self._ctx.book.note_reach(rank, sender, attempt)
        self._ctx.book.note_certificate(rank, attempt, confirmation.identity())
        return self._ctx.book.add_confirmation(rank, attempt, sender, confirmation)

    def _behind(self) -> None:
        """A later rank is already confirmed: this peer missed a round, so it syncs."""
        if self._state in COMMIT_WATCH_STATES and not self._ctx.round.sync_requested:
            self._ctx.round.sync_requested = True
            self._post(Event.INDUCE_SYNC)

    # -- the event loop ------------------------------------------------------------------

    def _post(self, event: Event, epoch: int | None = None) -> None:
        if self._closed:
            return
        if epoch is None and event in RECEIVE_EVENTS:
            if event in self._queued_receives:
                return  # one queued re-evaluation covers every message received meanwhile
            self._queued_receives.add(event)
        self._queue.append(_Envelope(event, epoch))
        self._wakeup.set()

    async def _handle_events(self) -> None:
        while not self._stopped_running:
            while not self._queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            envelope = self._queue.popleft()
            if envelope.epoch is None:
                self._queued_receives.discard(envelope.event)
            self._handle(envelope)
            await trio.lowlevel.checkpoint()

    def _handle(self, envelope: _Envelope) -> None:
        event = envelope.event
        if envelope.epoch is not None and envelope.epoch != self._epoch:
            self._tracer.trace(f"dropped {event}: its state was left")
            return
        transition = self._select(envelope)
        if transition is None:
            self._tracer.trace(f"no transition for {event} in {self._state}")
            return
        self._change(transition, enter=True)

    def _select(self, envelope: _Envelope) -> Transition | None:
        for transition in candidates(self._state, envelope.event):
            if transition.guard is None or self._holds(transition.guard, envelope):
                return transition
        return None

    def _holds(self, guard: Guard, envelope: _Envelope) -> bool:
        match guard:
            case Guard.COMMITTED:
                # Only the commit watcher's own (state-tagged) event carries the commit; a
                # receipt is always handled as a self-loop first, whatever the task order.
                return envelope.epoch is not None and self._ctx.round.committed is not None

    def _change(self, transition: Transition, *, enter: bool) -> None:
        source, target, event = transition.source, transition.target, transition.event
        self._transition_count += 1
        if transition.is_self_loop:
            self._ctx.loop_events.add(event)
            if event is Event.CONFIRMATION_RECEIVED:
                # The watcher looks only after the receipt is handled: one order, every run.
                self._ctx.commit_hint.set()
            self._refresh()
            self._ctx.wake()
        else:
            if self._scope is not None:
                self._scope.cancel()
                self._scope = None
            self._state = target
            self._epoch += 1
            self._entered_at = self._now()
            self._ctx.loop_events = set()
        self._tracer.trace(f"{source} -> {target} [{event}]")
        self._notify(source, target, event)
        if transition.is_self_loop or not enter:
            return
        if target is State.STOPPED:
            self._stopped_running = True
        else:
            self._enter(target)

    def _notify(self, source: State, target: State, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener.on_transition(source, target, event)
            except Exception as err:  # a listener's bug must not stop consensus
                self._tracer.error(f"listener failed on {source} -> {target}", err)

    def _now(self) -> float | None:
        try:
            return trio.current_time()
        except RuntimeError:
            return None

    def _refresh(self) -> None:
        if self._ctx.attempts and self._state in (State.VOTING, State.FINALIZING):
            voting.refresh_attempt(self._ctx)

    # -- the life of a state -------------------------------------------------------------

    def _enter(self, state: State) -> None:
        assert self._nursery is not None, "transitions happen only inside run()"
        if state in (State.PROVING, State.VOTING) and self._ctx.attempts:
            # An attempt starts with proving: the wait for the top prover's proposal and the
            # attempt's length count from there, for the provers that prove and those that
            # only vote alike.
            self._ctx.round.open_attempt(trio.current_time(), self._ctx.timeouts)
        if state is State.VOTING and self._ctx.attempts:
            voting.refresh_attempt(self._ctx)
        self._scope = scope = trio.CancelScope()
        self._nursery.start_soon(self._live, state, self._epoch, scope)

    async def _live(self, state: State, epoch: int, scope: trio.CancelScope) -> None:
        with scope:
            async with trio.open_nursery() as tasks:
                tasks.start_soon(self._guarded, self._timer, state, epoch)
                tasks.start_soon(self._guarded, self._evaluate, state, epoch)
                if state in COMMIT_WATCH_STATES:
                    tasks.start_soon(self._guarded, voting.watch_commits, self._ctx, epoch)
                if self._ctx.attempts and state in (State.VOTING, State.FINALIZING):
                    tasks.start_soon(self._guarded, voting.attempt_timer, self._ctx, epoch)

    async def _guarded(self, work: Callable[..., object], *args: object) -> None:
        """Run a state's task; an unexpected exception from a provider stops the machine."""
        try:
            await work(*args)  # type: ignore[misc]
        except Exception as err:
            self._crash(err)

    def _crash(self, err: Exception) -> None:
        self._tracer.error(f"unexpected failure in {self._state}: stopping", err)
        if self._scope is not None:
            self._scope.cancel()
        self._queue.clear()
        self._queued_receives.clear()
        if candidates(self._state, Event.STOP):
            self._post(Event.STOP)
        else:
            self._change(Transition(self._state, Event.STOP, State.STOPPED), enter=True)

    async def _timer(self, state: State, epoch: int) -> None:
        """Raise the state's timeout event, counted from entry, and again each period after."""
        spec = self._ctx.timeouts.of(state)
        entered = self._entered_at
        if spec is None or entered is None:
            return
        seconds, event = spec
        periods = 1
        while True:
            await trio.sleep_until(entered + periods * seconds)
            self._post(event, epoch)
            periods += 1

    async def _evaluate(self, state: State, epoch: int) -> None:
        """Run the state's behaviour, and again after each self-loop event (see `Context.wake`)."""
        evaluation = EVALUATIONS.get(state, behaviours.idle)
        ctx = self._ctx
        while True:
            ctx.dirty = False
            await evaluation(ctx, epoch)
            while not ctx.dirty:
                ctx.poke = trio.Event()
                await ctx.poke.wait()
