"""What the engine does in each state: idempotent evaluations, re-run on every self-loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Generic, TypeVar, cast

import trio

from p2pnode.consensus.book import MessageBook
from p2pnode.consensus.config import Limits, Timeouts
from p2pnode.consensus.errors import EquivocationError, ProviderError
from p2pnode.consensus.protocols import (
    CollectedT,
    CommitVotingProvider,
    LeaderProvider,
    LivenessProvider,
    Lock,
    PeerIDT,
    RoundJournal,
    RoundRecord,
    StateT,
    SyncProvider,
    TraceLogger,
    VoteT,
)
from p2pnode.consensus.round import Round
from p2pnode.consensus.rules import catch_up_attempt, choose_vote
from p2pnode.consensus.states import Event, State

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

    def _evaluation(self, state: State) -> Evaluation:
        table: dict[State, Evaluation] = {
            State.LOADING: self._loading,
            State.COLLECTING: self._collecting,
            State.LIVENESS_CHECK: self._liveness_check,
            State.PROVING: self._proving,
            State.PUBLISHING: self._publishing,
            State.VOTING: self._voting_step,
            State.FINALIZING: self._finalizing,
            State.VERIFYING: self._verifying,
            State.STOPPING: self._stopping,
        }
        return table.get(state, self._idle)

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

    def _move_attempt(self, attempt: int) -> None:
        self._round.move_to(attempt, trio.current_time(), self._timeouts)
        self._book.set_attempt(self._round.target, attempt)
        self._deadline_moved.set()
        self._tracer.trace(f"rank {self._round.target}: attempt {attempt}")

    def _refresh_attempt(self) -> None:
        """Move to a later attempt when this one expired, a newer certificate is known, or f+1
        provers are already further along (Tendermint's round skip)."""
        rnd = self._round
        for attempt, group in self._book.confirmations(rnd.target).items():
            for frame in self._listed(group).values():
                rnd.learn_certificate(attempt, frame.identity())
        wanted = rnd.attempt + 1 if trio.current_time() >= rnd.deadline else rnd.attempt
        if rnd.best is not None:
            wanted = max(wanted, rnd.best.attempt)
        wanted = catch_up_attempt(wanted, self._book.reach(rnd.target), rnd.leader_ids())
        if wanted != rnd.attempt:
            self._move_attempt(wanted)

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
        self._round.leaders = list(leaders or [])
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
        self._round.leaders = list(leaders or [])
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
            rnd.leaders = list(leaders or [])
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
        if self._id_text in self._book.proposals(rnd.target):
            self._post(Event.PROOF_COMPLETE, epoch)  # proved earlier in this round
            return
        collected = rnd.collected
        if collected is None:
            return  # nothing collected: wait for the timeout
        prior = self._active
        proposal = await self._once(
            "prove_next_state", lambda: self._leader.prove_next_state(prior, collected), epoch
        )
        if proposal is None:
            return
        # Our own proposal is recorded whatever the self-delivery flag says.
        self._book.add_proposal(rnd.target, self._id_text, proposal, replace=True)
        self._post(Event.PROOF_COMPLETE, epoch)

    async def _publishing(self, epoch: int) -> None:
        proposal = self._book.proposals(self._round.target).get(self._id_text)
        if proposal is None:
            self._post(Event.PUBLISH_TIMEOUT, epoch)  # nothing of ours to publish: vote
            return
        await self._retrying("send_proposal", lambda: self._voting.send_proposal(proposal), epoch)
        self._post(Event.PUBLISH_COMPLETE, epoch)

    async def _voting_step(self, epoch: int) -> None:
        self._take_events()
        rnd = self._round
        if rnd.attempt not in rnd.vote_started:
            candidates = self._candidates()
            if candidates:
                await self._cast_vote(candidates, epoch)
        await self._check_quorum(epoch)

    def _candidates(self) -> dict[str, StateT]:
        rnd = self._round
        proposals = self._proposals()
        enough = len(proposals) >= self._minimum()
        if not self._attempts:
            return proposals if enough else {}
        if enough and rnd.attempt == 0:
            enough = self._top_live_proposed(proposals) or (
                trio.current_time() >= rnd.opened_at + self._timeouts.voting
            )
        choice = choose_vote(rnd.attempt, rnd.lock, rnd.best, proposals, rnd.leader_ids(), enough)
        return {} if choice is None else {choice.proposer: choice.frame}

    def _top_live_proposed(self, proposals: Mapping[str, StateT]) -> bool:
        """Whether the highest-priority prover that announced liveness has its proposal in.

        With attempts, the first vote waits for it (or one `voting` period) so that peers vote
        for the same proposal instead of splitting on the order proposals arrive in.
        """
        live = self._book.liveness(self._round.target)
        for leader in self._round.leader_ids():
            if leader in live:
                return leader in proposals
        return True

    async def _cast_vote(self, candidates: Mapping[str, StateT], epoch: int) -> None:
        rnd = self._round
        attempt = rnd.attempt
        rnd.vote_started.add(attempt)
        self._save_round()
        decided = await self._retrying(
            "decide_and_send_vote",
            lambda: self._decide(candidates, attempt),
            epoch,
            relevant=lambda: rnd.attempt == attempt,
        )
        if decided is None:
            return
        vote = decided[1]
        rnd.votes[attempt] = vote
        if self._emit:
            try:
                receipt = self._book.add_vote(rnd.target, attempt, self._id_text, vote)
            except EquivocationError as err:  # a message in our name that we did not send
                self._tracer.error("a different vote in this peer's name was received", err)
                return
            if receipt.stored:
                self._post(Event.VOTE_RECEIVED)

    async def _decide(
        self, candidates: Mapping[str, StateT], attempt: int
    ) -> tuple[PeerIDT, VoteT]:
        if self._attempts:
            voting = cast(CommitVotingProvider[StateT, VoteT, PeerIDT], self._voting)
            return await voting.decide_and_send_vote(candidates, attempt)
        return await self._voting.decide_and_send_vote(candidates)

    async def _check_quorum(self, epoch: int) -> None:
        rnd = self._round
        attempt = rnd.attempt
        if attempt in rnd.confirmed:
            return
        votes = self._votes(attempt)
        if not votes:
            return
        if not self._attempts and len(self._proposals()) < self._minimum():
            return
        reached = await self._once("is_quorum", lambda: self._voting.is_quorum(votes), epoch)
        if reached and rnd.attempt == attempt:
            rnd.quorum_attempt = attempt
            self._post(Event.QUORUM_REACHED, epoch)

    async def _finalizing(self, epoch: int) -> None:
        self._take_events()
        rnd = self._round
        attempt = rnd.attempt if rnd.quorum_attempt is None else rnd.quorum_attempt
        if self._attempts and rnd.attempt != attempt:
            self._post(Event.VOTING_TIMEOUT, epoch)  # the attempt moved on: vote again
            return
        if attempt in rnd.confirmed or (not self._attempts and rnd.next_state is not None):
            return  # waiting for the commit
        proposals, votes = self._proposals(), self._votes(attempt)
        folded = await self._retrying(
            "finalize_votes",
            lambda: self._voting.finalize_votes(proposals, votes),
            epoch,
            relevant=lambda: rnd.attempt == attempt,
        )
        if folded is None:
            return
        frame, proposer = folded
        if not self._attempts:
            rnd.next_state = frame
            self._post(Event.AGGREGATION_DONE, epoch)
            return
        await self._confirm(attempt, Lock(attempt, proposer.identity(), frame), epoch)

    async def _confirm(self, attempt: int, lock: Lock[StateT], epoch: int) -> None:
        """Lock on the certified frame and send the confirmation (the precommit)."""
        rnd = self._round
        if rnd.attempt != attempt:
            return
        rnd.lock = lock
        rnd.learn_certificate(attempt, lock.frame.identity())
        rnd.confirmed.add(attempt)
        self._save_round()
        await self._retrying(
            "send_confirmation",
            lambda: self._voting.send_confirmation(lock.frame),
            epoch,
            relevant=lambda: rnd.attempt == attempt,
        )
        if self._emit:
            receipt = self._book.add_confirmation(rnd.target, attempt, self._id_text, lock.frame)
            if receipt.stored:
                self._post(Event.CONFIRMATION_RECEIVED)

    async def _verifying(self, epoch: int) -> None:
        rnd = self._round
        frame = rnd.committed if rnd.committed is not None else rnd.next_state
        if frame is None:
            return
        if not self._attempts and not rnd.confirmation_sent:
            rnd.confirmation_sent = True
            await self._once(
                "send_confirmation", lambda: self._voting.send_confirmation(frame), epoch
            )
        if not self._adopt(frame):
            rnd.committed = rnd.next_state = None
        self._post(Event.VERIFICATION_DONE, epoch)

    # -- confirmations -------------------------------------------------------------------

    async def _watch_commits(self, epoch: int) -> None:
        """While a round runs, look for confirmations that prove its frame final."""
        while True:
            self._commit_hint = hint = trio.Event()
            # A commit found just as the last state was left is acted on in this one.
            committed = self._round.committed or await self._find_commit(epoch)
            if committed is not None:
                self._round.committed = committed
                self._post(Event.CONFIRMATION_RECEIVED, epoch)
                return
            await hint.wait()

    async def _find_commit(self, epoch: int) -> StateT | None:
        rnd = self._round
        groups = self._book.confirmations(rnd.target)
        for attempt in sorted(groups, reverse=True):
            group = self._listed(groups[attempt])
            if not group or rnd.checked_commits.get(attempt) == len(group):
                continue
            rnd.checked_commits[attempt] = len(group)
            if not self._attempts:
                # The seed's confirmation is the final frame, its certificate checked on receipt.
                return group[min(group)]
            committed = await self._commit_of(group, epoch)
            if committed is not None:
                return committed
        return None

    async def _commit_of(self, group: Mapping[str, StateT], epoch: int) -> StateT | None:
        voting = cast(CommitVotingProvider[StateT, VoteT, PeerIDT], self._voting)
        if not await self._once("is_commit", lambda: voting.is_commit(group), epoch):
            return None
        return await self._retrying("finalize_commit", lambda: voting.finalize_commit(group), epoch)

    async def _attempt_timer(self, epoch: int) -> None:
        """Raise `voting_timeout` when the current attempt's deadline passes."""
        while True:
            self._deadline_moved = moved = trio.Event()
            with trio.move_on_at(self._round.deadline) as waiting:
                await moved.wait()
            if waiting.cancelled_caught:
                self._post(Event.VOTING_TIMEOUT, epoch)
                await moved.wait()
