"""What the engine does in each state up to voting, and how it calls its providers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from p2pnode.consensus.book import MessageBook
from p2pnode.consensus.config import Limits, Timeouts
from p2pnode.consensus.errors import InvalidProposal, ProviderError
from p2pnode.consensus.protocols import (
    CollectedT,
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
from p2pnode.consensus.rules import proves_first
from p2pnode.consensus.states import Event

if TYPE_CHECKING:
    from p2pnode.consensus.protocols import VotingProvider

T = TypeVar("T")
Evaluation = Callable[[int], Awaitable[None]]


class Behaviours(Generic[StateT, VoteT, PeerIDT, CollectedT]):
    """The per-state work of `StateMachine`; the machine owns the fields declared here.

    Each evaluation may run several times while its state lasts (on every self-loop event), so
    it checks what is already done before it acts; an in-flight provider call is never cancelled
    by a self-loop, only by leaving the state. Results are posted as events tagged with the
    state's epoch, so a result that arrives after the state was left is dropped.
    """

    _id_text: str
    _active: StateT | None
    _emit: bool
    _attempts: bool
    _book: MessageBook[StateT, VoteT, CollectedT]
    _round: Round[StateT, VoteT, PeerIDT, CollectedT]
    _record: RoundRecord[StateT] | None
    _journal: RoundJournal[StateT] | None
    _timeouts: Timeouts
    _limits: Limits
    _tracer: TraceLogger
    _sync: SyncProvider[StateT]
    _voting: VotingProvider[StateT, VoteT, PeerIDT]
    _leader: LeaderProvider[StateT, PeerIDT, CollectedT]
    _liveness: LivenessProvider[StateT, PeerIDT, CollectedT]
    _loop_events: set[Event]
    _dirty: bool
    _poke: trio.Event
    _sync_hint: trio.Event
    _commit_hint: trio.Event
    _deadline_moved: trio.Event

    # Provided by the machine.
    def _post(self, event: Event, epoch: int | None = None) -> None:
        raise NotImplementedError

    def _adopt(self, state: StateT) -> bool:
        raise NotImplementedError

    def _minimum(self) -> int:
        raise NotImplementedError

    # -- provider calls ------------------------------------------------------------------

    def _failed(self, what: str, err: ProviderError, epoch: int) -> None:
        """Log a transient failure; too many in one round make the engine sync again."""
        self._tracer.error(f"{what} failed (rank {self._round.target})", err)
        self._round.failures += 1
        if self._round.failures >= self._limits.failures_before_sync:
            self._round.failures = 0
            self._post(Event.INDUCE_SYNC, epoch)

    async def _retrying(
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
                self._failed(what, err, epoch)
                await trio.sleep(self._timeouts.retry_delay(failures))
        return None

    async def _once(self, what: str, call: Callable[[], Awaitable[T]], epoch: int) -> T | None:
        """Call once; a transient failure is logged and yields None (the state's timer retries)."""
        try:
            return await call()
        except ProviderError as err:
            self._failed(what, err, epoch)
            return None

    def _take_events(self) -> set[Event]:
        events, self._loop_events = self._loop_events, set()
        return events

    # -- the round's views ---------------------------------------------------------------

    def _listed(self, per_sender: Mapping[str, T]) -> dict[str, T]:
        """Entries from the round's provers only (all of them while the provers are unknown)."""
        leaders = self._round.leader_ids()
        if not leaders:
            return dict(per_sender)
        return {sender: per_sender[sender] for sender in leaders if sender in per_sender}

    def _proposals(self) -> dict[str, StateT]:
        return self._listed(self._book.proposals(self._round.target))

    def _votes(self, attempt: int) -> dict[str, VoteT]:
        return self._listed(self._book.votes(self._round.target, attempt))

    def _save_round(self) -> None:
        """Write the round's record durably before acting on it (vote, confirmation)."""
        self._record = self._round.record()
        if self._journal is not None:
            self._journal.save(self._record)

    # -- states --------------------------------------------------------------------------

    async def _idle(self, epoch: int) -> None:
        """States that only wait for their timeout or an external event."""

    async def _stopping(self, epoch: int) -> None:
        self._post(Event.CLEANUP_COMPLETE, epoch)

    async def _loading(self, epoch: int) -> None:
        synced = await self._retrying(
            "synchronize", lambda: self._sync.synchronize(self._active), epoch
        )
        if synced is not None:
            self._adopt(synced)
        # Synced: a later confirmation that shows this peer still behind may ask again.
        self._round.sync_requested = False
        prior = self._active
        leaders = await self._retrying(
            "get_next_leaders", lambda: self._leader.get_next_leaders(prior), epoch
        )
        self._round.set_leaders(leaders or [])
        if self._id_text in self._round.leader_ids():
            self._post(Event.SYNC_COMPLETE, epoch)
            return
        # Not a prover of the next rank: a follower keeps synchronizing.
        self._post(Event.SYNC_TIMEOUT, epoch)
        self._sync_hint = hint = trio.Event()
        with trio.move_on_after(self._timeouts.resync):
            await hint.wait()

    async def _collect(self, epoch: int) -> CollectedT | None:
        if self._round.collected is None:
            self._round.collected = await self._retrying("collect", self._liveness.collect, epoch)
        return self._round.collected

    async def _announce(self, collected: CollectedT, epoch: int) -> None:
        prior = self._active
        sent = await self._once(
            "send_liveness", lambda: self._send_liveness(prior, collected), epoch
        )
        if sent and self._emit:
            receipt = self._book.add_liveness(self._round.target, self._id_text, collected)
            if receipt.stored:
                self._post(Event.LIVENESS_CHECK_RECEIVED)

    async def _send_liveness(self, prior: StateT | None, collected: CollectedT) -> bool:
        await self._liveness.send_liveness(prior, collected)
        return True

    async def _collecting(self, epoch: int) -> None:
        collected = await self._collect(epoch)
        prior = self._active
        leaders = await self._retrying(
            "get_next_leaders", lambda: self._leader.get_next_leaders(prior), epoch
        )
        self._round.set_leaders(leaders or [])
        if self._id_text not in self._round.leader_ids():
            self._tracer.trace(f"not a prover of rank {self._round.target}: following")
            self._post(Event.INDUCE_SYNC, epoch)
            return
        if collected is not None:
            await self._announce(collected, epoch)
        self._post(Event.COLLECTION_DONE, epoch)

    def _live_provers(self) -> int:
        return len(self._listed(self._book.liveness(self._round.target)))

    async def _liveness_check(self, epoch: int) -> None:
        rnd = self._round
        events = self._take_events()
        if len(rnd.leaders) < self._minimum():
            prior = self._active
            leaders = await self._retrying(
                "get_next_leaders", lambda: self._leader.get_next_leaders(prior), epoch
            )
            rnd.set_leaders(leaders or [])
        announced = rnd.collected is not None
        collected = await self._collect(epoch)
        if self._live_provers() >= self._minimum():
            self._post(Event.PROVER_SIGNAL, epoch)
            return
        # Re-announce only on this state's own timer, never per received announcement.
        if collected is not None and (Event.LIVENESS_TIMEOUT in events or not announced):
            await self._announce(collected, epoch)

    async def _proving(self, epoch: int) -> None:
        rnd = self._round
        proposal = rnd.proposal
        if proposal is None:
            if (
                self._attempts
                and rnd.attempt == 0
                and not proves_first(self._id_text, rnd.leader_ids())
            ):
                self._tracer.trace(f"rank {rnd.target}: not among the first provers: voting")
                self._post(Event.PUBLISH_TIMEOUT, epoch)
                return
            proposal = await self._make_proposal(epoch)
            if proposal is None:
                return
        # Our own proposal is recorded whatever the self-delivery flag says.
        self._book.add_proposal(rnd.target, self._id_text, proposal, replace=True)
        self._post(Event.PROOF_COMPLETE, epoch)

    async def _make_proposal(self, epoch: int) -> StateT | None:
        """Prove this peer's proposal for the rank and journal it; None if it cannot yet."""
        rnd = self._round
        collected = rnd.collected
        if collected is None:
            return None  # nothing collected: wait for the timeout
        prior = self._active
        proposal = await self._once(
            "prove_next_state", lambda: self._leader.prove_next_state(prior, collected), epoch
        )
        if proposal is None:
            return None
        # Journaled before it is published: after a restart this peer re-sends this very
        # proposal instead of proving a second, different one for the rank.
        rnd.proposal = proposal
        self._save_round()
        return proposal

    async def _publishing(self, epoch: int) -> None:
        proposal = self._book.proposals(self._round.target).get(self._id_text)
        if proposal is None:
            self._post(Event.PUBLISH_TIMEOUT, epoch)  # nothing of ours to publish: vote
            return
        await self._retrying("send_proposal", lambda: self._voting.send_proposal(proposal), epoch)
        self._post(Event.PUBLISH_COMPLETE, epoch)
