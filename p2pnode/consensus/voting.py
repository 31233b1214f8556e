"""What the engine does while voting: attempts, votes, quorums, confirmations and commits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import trio

from p2pnode.consensus.behaviours import Behaviours, Evaluation
from p2pnode.consensus.errors import EquivocationError, InvalidProposal
from p2pnode.consensus.protocols import (
    CollectedT,
    CommitVotingProvider,
    Lock,
    PeerIDT,
    StateT,
    VoteT,
)
from p2pnode.consensus.rules import catch_up_attempt, choose_vote, priority, quorum_size
from p2pnode.consensus.states import Event, State


class Voting(Behaviours[StateT, VoteT, PeerIDT, CollectedT]):
    """The voting half of the states' work (see `Behaviours`), and the table of evaluations."""

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

    def _move_attempt(self, attempt: int) -> None:
        self._round.move_to(attempt, trio.current_time(), self._timeouts)
        self._book.set_attempt(self._round.target, attempt)
        self._deadline_moved.set()
        self._tracer.trace(f"rank {self._round.target}: attempt {attempt}")

    def _refresh_attempt(self) -> None:
        """Move to a later attempt when this one expired, a newer certificate is known, or f+1
        provers are already further along (Tendermint's round skip); once a quorum has voted
        in this attempt, cut it short to the grace period."""
        rnd = self._round
        certified = self._book.certified(rnd.target)
        if certified is not None:
            rnd.learn_certificate(*certified)
        now = trio.current_time()
        wanted = rnd.attempt + 1 if now >= rnd.deadline else rnd.attempt
        if rnd.best is not None:
            wanted = max(wanted, rnd.best.attempt)
        wanted = catch_up_attempt(wanted, self._book.reach(rnd.target), rnd.leader_ids())
        if wanted != rnd.attempt:
            self._move_attempt(wanted)
        if self._quorum_voted() and rnd.quorum_voted(now, self._timeouts):
            self._deadline_moved.set()

    def _quorum_voted(self) -> bool:
        """Whether votes of the current attempt from a quorum of the round's provers are in."""
        provers = len(self._round.leaders)
        return provers > 0 and len(self._votes(self._round.attempt)) >= quorum_size(provers)

    async def _voting_step(self, epoch: int) -> None:
        self._take_events()
        rnd = self._round
        if self._attempts and rnd.attempt > 0 and rnd.proposal is None:
            await self._propose_late(epoch)
        if rnd.attempt not in rnd.vote_started:
            candidates = self._candidates()
            if candidates:
                await self._cast_vote(candidates, epoch)
        await self._check_quorum(epoch)

    async def _propose_late(self, epoch: int) -> None:
        """A prover that left attempt 0 to the first provers proves once a later one needs it."""
        proposal = await self._make_proposal(epoch)
        if proposal is None:
            return
        self._book.add_proposal(self._round.target, self._id_text, proposal, replace=True)
        await self._once("send_proposal", lambda: self._voting.send_proposal(proposal), epoch)

    def _candidates(self) -> dict[str, StateT]:
        rnd = self._round
        proposals = self._proposals()
        if not self._attempts:
            return proposals if len(proposals) >= self._minimum() else {}
        # Only the first f+1 provers prove in attempt 0, and the others only from attempt 1 on:
        # wait for the attempt's highest-priority live prover, or one `voting` period.
        enough = bool(proposals) and (
            self._top_live_proposed(proposals)
            or trio.current_time() >= rnd.opened_at + self._timeouts.voting
        )
        choice = choose_vote(rnd.attempt, rnd.lock, rnd.best, proposals, rnd.leader_ids(), enough)
        return {} if choice is None else {choice.proposer: choice.frame}

    def _top_live_proposed(self, proposals: Mapping[str, StateT]) -> bool:
        """Whether the attempt's highest-priority prover that announced liveness has its
        proposal in (see `_candidates`)."""
        live = self._book.liveness(self._round.target)
        for leader in priority(self._round.leader_ids(), self._round.attempt):
            if leader in live:
                return leader in proposals
        return True

    async def _cast_vote(self, candidates: Mapping[str, StateT], epoch: int) -> None:
        rnd = self._round
        attempt = rnd.attempt
        rnd.vote_started.add(attempt)
        self._save_round()
        try:
            decided = await self._retrying(
                "decide_and_send_vote",
                lambda: self._decide(candidates, attempt),
                epoch,
                relevant=lambda: rnd.attempt == attempt,
            )
        except InvalidProposal as err:
            self._reject_proposal(err, attempt)
            return
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

    def _reject_proposal(self, err: InvalidProposal, attempt: int) -> None:
        """Nothing was signed: drop the invalid proposal and choose again in this attempt."""
        self._tracer.error(f"rank {self._round.target}: proposal dropped", err)
        self._book.discard_proposal(self._round.target, err.proposer, err.frame_id)
        rnd = self._round
        if rnd.attempt == attempt and attempt not in rnd.votes:
            rnd.vote_started.discard(attempt)
            self._save_round()
        self._dirty = True
        self._poke.set()

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
        for sender, proof in self._book.commits(rnd.target).items():
            if sender in rnd.checked_proofs:
                continue
            rnd.checked_proofs.add(sender)
            if not self._attempts:
                return proof
            committed = await self._commit_of({sender: proof}, epoch)
            if committed is not None:
                return committed
        groups = self._book.confirmations(rnd.target)
        for attempt in sorted(groups, reverse=True):
            group = self._listed(groups[attempt])
            if not group or rnd.checked_commits.get(attempt) == len(group):
                continue
            rnd.checked_commits[attempt] = len(group)
            if not self._attempts:
                # Without attempts a confirmation is the final frame, checked on receipt.
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
