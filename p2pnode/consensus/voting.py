"""What the engine does while voting: attempts, votes, quorums, confirmations and commits."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import cast

import trio

from p2pnode.consensus.behaviours import make_proposal
from p2pnode.consensus.context import Context
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
from p2pnode.consensus.states import Event

# -- attempts ------------------------------------------------------------------------------


def _move_attempt(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], attempt: int) -> None:
    ctx.round.move_to(attempt, trio.current_time(), ctx.timeouts)
    ctx.book.set_attempt(ctx.round.target, attempt)
    ctx.deadline_moved.set()
    ctx.tracer.trace(f"rank {ctx.round.target}: attempt {attempt}")


def refresh_attempt(ctx: Context[StateT, VoteT, PeerIDT, CollectedT]) -> None:
    """Move to a later attempt when this one expired, a newer certificate is known, or f+1
    provers are already further along (Tendermint's round skip); once a quorum has voted
    in this attempt, cut it short to the grace period."""
    rnd = ctx.round
    certified = ctx.book.certified(rnd.target)
    if certified is not None:
        rnd.learn_certificate(*certified)
    now = trio.current_time()
    wanted = rnd.attempt + 1 if now >= rnd.deadline else rnd.attempt
    if rnd.best is not None:
        wanted = max(wanted, rnd.best.attempt)
    wanted = catch_up_attempt(wanted, ctx.book.reach(rnd.target), rnd.leader_ids())
    if wanted != rnd.attempt:
        _move_attempt(ctx, wanted)
    if _quorum_voted(ctx) and rnd.quorum_voted(now, ctx.timeouts):
        ctx.deadline_moved.set()


def _quorum_voted(ctx: Context[StateT, VoteT, PeerIDT, CollectedT]) -> bool:
    """Whether votes of the current attempt from a quorum of the round's provers are in."""
    provers = len(ctx.round.leaders)
    return provers > 0 and len(ctx.votes(ctx.round.attempt)) >= quorum_size(provers)


async def attempt_timer(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    """Raise `voting_timeout` when the current attempt's deadline passes, and run the state
    again when a wait before voting ends (see `voting` and `_candidates`)."""
    passed: set[float] = set()
    while True:
        ctx.deadline_moved = moved = trio.Event()
        rnd = ctx.round
        waits = (rnd.deadline, rnd.wait_ends(ctx.timeouts), rnd.settled_at(ctx.timeouts))
        alarms = [t for t in waits if t > rnd.opened_at and t not in passed]
        due = min(alarms, default=math.inf)
        with trio.move_on_at(due) as waiting:
            await moved.wait()
        if waiting.cancelled_caught:
            passed.add(due)
            if due == rnd.deadline:
                ctx.post(Event.VOTING_TIMEOUT, epoch)
            else:
                ctx.wake()


# -- voting --------------------------------------------------------------------------------


async def voting(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    ctx.take_events()
    rnd = ctx.round
    if ctx.attempts and rnd.attempt > 0 and rnd.proposal is None:
        await _propose_late(ctx, epoch)
    if rnd.attempt not in rnd.vote_started and await _may_vote(ctx, epoch):
        candidates = _candidates(ctx)
        if candidates:
            await _cast_vote(ctx, candidates, epoch)
    await _check_quorum(ctx, epoch)


async def _may_vote(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> bool:
    """After a split attempt, wait a little before voting: a certificate completed at another
    prover at the very end of the last attempt reaches this one with its precommit first, so
    that one late vote cannot leave the honest provers voting apart attempt after attempt.

    Not once a quorum has voted for one frame in this attempt: the wait is moot, and leaving
    for the precommit without a vote left the provers that had missed a Byzantine vote one
    vote short, attempt after attempt (n = 7, two Byzantine: rank 1 final 15 s after calm)."""
    rnd = ctx.round
    if not ctx.attempts or trio.current_time() >= rnd.settled_at(ctx.timeouts):
        return True
    votes = ctx.votes(rnd.attempt)
    return bool(votes) and bool(
        await ctx.once("is_quorum", lambda: ctx.voting.is_quorum(votes), epoch)
    )


async def _propose_late(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    """A prover that left attempt 0 to the first provers proves once a later one needs it."""
    proposal = await make_proposal(ctx, epoch)
    if proposal is None:
        return
    ctx.book.add_proposal(ctx.round.target, ctx.id_text, proposal, replace=True)
    await ctx.once("send_proposal", lambda: ctx.voting.send_proposal(proposal), epoch)


def _candidates(ctx: Context[StateT, VoteT, PeerIDT, CollectedT]) -> dict[str, StateT]:
    rnd = ctx.round
    proposals = ctx.proposals()
    if not ctx.attempts:
        return proposals if len(proposals) >= ctx.minimum() else {}
    # Only the first f+1 provers prove in attempt 0, and the others only from attempt 1 on:
    # wait for the attempt's top prover, until one `voting` period from the start of the
    # attempt (of proving, in attempt 0). The wait is counted from this peer's own clock, never
    # from what another prover sent, and is for the top of the order whether or not its
    # liveness is in: an early, fast or invalid proposal from a prover lower in the order, or
    # its liveness sent ahead of the top prover's, cannot cut short the wait for the top one.
    enough = bool(proposals) and (
        _top_proposed(ctx, proposals) or trio.current_time() >= rnd.wait_ends(ctx.timeouts)
    )
    choice = choose_vote(rnd.attempt, rnd.lock, rnd.best, proposals, rnd.leader_ids(), enough)
    return {} if choice is None else {choice.proposer: choice.frame}


def _top_proposed(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], proposals: Mapping[str, StateT]
) -> bool:
    """Whether the attempt's highest-priority prover has its proposal in (see `_candidates`);
    a crashed top prover costs its turn one `voting` wait, and then its place in the order."""
    order = priority(ctx.round.leader_ids(), ctx.round.attempt)
    return not order or order[0] in proposals


async def _cast_vote(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT],
    candidates: Mapping[str, StateT],
    epoch: int,
) -> None:
    rnd = ctx.round
    attempt = rnd.attempt
    rnd.vote_started.add(attempt)
    ctx.save_round()
    try:
        decided = await ctx.retrying(
            "decide_and_send_vote",
            lambda: _decide(ctx, candidates, attempt),
            epoch,
            relevant=lambda: rnd.attempt == attempt,
        )
    except InvalidProposal as err:
        _reject_proposal(ctx, err, attempt)
        return
    if decided is None:
        return
    vote = decided[1]
    rnd.votes[attempt] = vote
    if ctx.emit:
        try:
            receipt = ctx.book.add_vote(rnd.target, attempt, ctx.id_text, vote)
        except EquivocationError as err:  # a message in our name that we did not send
            ctx.tracer.error("a different vote in this peer's name was received", err)
            return
        if receipt.stored:
            ctx.post(Event.VOTE_RECEIVED)


def _reject_proposal(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], err: InvalidProposal, attempt: int
) -> None:
    """Nothing was signed: drop the invalid proposal and choose again in this attempt."""
    rnd = ctx.round
    ctx.tracer.error(f"rank {rnd.target}: proposal dropped", err)
    ctx.book.discard_proposal(rnd.target, err.proposer, err.frame_id)
    if rnd.attempt == attempt and attempt not in rnd.votes:
        rnd.vote_started.discard(attempt)
        ctx.save_round()
    ctx.wake()


async def _decide(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT],
    candidates: Mapping[str, StateT],
    attempt: int,
) -> tuple[PeerIDT, VoteT]:
    if ctx.attempts:
        return await _commit_voting(ctx).decide_and_send_vote(candidates, attempt)
    return await ctx.voting.decide_and_send_vote(candidates)


def _commit_voting(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT],
) -> CommitVotingProvider[StateT, VoteT, PeerIDT]:
    """The voting provider as the one with attempts it is whenever `ctx.attempts` is set."""
    return cast(CommitVotingProvider[StateT, VoteT, PeerIDT], ctx.voting)


async def _check_quorum(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    rnd = ctx.round
    attempt = rnd.attempt
    if attempt in rnd.confirmed:
        return
    votes = ctx.votes(attempt)
    if not votes:
        return
    if not ctx.attempts and len(ctx.proposals()) < ctx.minimum():
        return
    reached = await ctx.once("is_quorum", lambda: ctx.voting.is_quorum(votes), epoch)
    if reached and rnd.attempt == attempt:
        rnd.quorum_attempt = attempt
        ctx.post(Event.QUORUM_REACHED, epoch)


# -- finalizing ----------------------------------------------------------------------------


async def finalizing(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    ctx.take_events()
    rnd = ctx.round
    attempt = rnd.attempt if rnd.quorum_attempt is None else rnd.quorum_attempt
    if ctx.attempts and rnd.attempt != attempt:
        ctx.post(Event.VOTING_TIMEOUT, epoch)  # the attempt moved on: vote again
        return
    if attempt in rnd.confirmed or (not ctx.attempts and rnd.next_state is not None):
        return  # waiting for the commit
    # Read afresh on every try: the certified frame may arrive just after the votes.
    folded = await ctx.retrying(
        "finalize_votes",
        lambda: ctx.voting.finalize_votes(_at_hand(ctx), ctx.votes(attempt)),
        epoch,
        relevant=lambda: rnd.attempt == attempt,
    )
    if folded is None:
        return
    frame, proposer = folded
    if not ctx.attempts:
        rnd.next_state = frame
        ctx.post(Event.AGGREGATION_DONE, epoch)
        return
    await _confirm(ctx, attempt, Lock(attempt, proposer.identity(), frame), epoch)


def _at_hand(ctx: Context[StateT, VoteT, PeerIDT, CollectedT]) -> dict[str, StateT]:
    """What `finalize_votes` looks for the certified frame in: with attempts, every frame at
    hand by id (an equivocating proposer's two included); without, the proposals."""
    return ctx.frames() if ctx.attempts else ctx.proposals()


async def _confirm(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT],
    attempt: int,
    lock: Lock[StateT],
    epoch: int,
) -> None:
    """Lock on the certified frame and send the confirmation (the precommit)."""
    rnd = ctx.round
    if rnd.attempt != attempt:
        return
    rnd.lock = lock
    rnd.learn_certificate(attempt, lock.frame.identity())
    rnd.confirmed.add(attempt)
    ctx.save_round()
    await ctx.retrying(
        "send_confirmation",
        lambda: ctx.voting.send_confirmation(lock.frame),
        epoch,
        relevant=lambda: rnd.attempt == attempt,
    )
    if ctx.emit:
        receipt = ctx.book.add_confirmation(rnd.target, attempt, ctx.id_text, lock.frame)
        if receipt.stored:
            ctx.post(Event.CONFIRMATION_RECEIVED)


async def verifying(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    rnd = ctx.round
    frame = rnd.committed if rnd.committed is not None else rnd.next_state
    if frame is None:
        return
    if not rnd.confirmation_sent:
        # Without attempts this is the confirmation; with them, the commit goes out at once:
        # a prover left one precommit short (its signer sent it to others only) finalizes now,
        # not at its next re-send, and is ready to lead the next rank in time.
        rnd.confirmation_sent = True
        await ctx.once("send_confirmation", lambda: ctx.voting.send_confirmation(frame), epoch)
    if not ctx.adopt(frame):
        rnd.committed = rnd.next_state = None
    ctx.post(Event.VERIFICATION_DONE, epoch)


# -- commits -------------------------------------------------------------------------------


async def watch_commits(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    """While a round runs, look for confirmations that prove its frame final."""
    while True:
        ctx.commit_hint = hint = trio.Event()
        # A commit found just as the last state was left is acted on in this one.
        committed = ctx.round.committed or await _find_commit(ctx, epoch)
        if committed is not None:
            ctx.round.committed = committed
            ctx.post(Event.CONFIRMATION_RECEIVED, epoch)
            return
        await hint.wait()


async def _find_commit(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int
) -> StateT | None:
    rnd = ctx.round
    for sender, proof in ctx.book.commits(rnd.target).items():
        if sender in rnd.checked_proofs:
            continue
        rnd.checked_proofs.add(sender)
        if not ctx.attempts:
            return proof
        committed = await _commit_of(ctx, {sender: proof}, epoch)
        if committed is not None:
            return committed
    groups = ctx.book.confirmations(rnd.target)
    for attempt in sorted(groups, reverse=True):
        group = ctx.listed(groups[attempt])
        if not group or rnd.checked_commits.get(attempt) == len(group):
            continue
        rnd.checked_commits[attempt] = len(group)
        if not ctx.attempts:
            # Without attempts a confirmation is the final frame, checked on receipt.
            return group[min(group)]
        committed = await _commit_of(ctx, group, epoch)
        if committed is not None:
            return committed
    return None


async def _commit_of(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], group: Mapping[str, StateT], epoch: int
) -> StateT | None:
    voting = _commit_voting(ctx)
    if not await ctx.once("is_commit", lambda: voting.is_commit(group), epoch):
        return None
    return await ctx.retrying("finalize_commit", lambda: voting.finalize_commit(group), epoch)
