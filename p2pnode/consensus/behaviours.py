"""What the engine does in each state up to voting, as functions of the round context."""

from __future__ import annotations

import trio

from p2pnode.consensus.context import Context
from p2pnode.consensus.protocols import CollectedT, PeerIDT, StateT, VoteT
from p2pnode.consensus.rules import proves_first
from p2pnode.consensus.states import Event

# Every behaviour may run several times while its state lasts (on every self-loop event), so
# it checks what is already done before it acts; an in-flight provider call is never cancelled
# by a self-loop, only by leaving the state.


async def idle(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    """States that only wait for their timeout or an external event."""


async def stopping(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    ctx.post(Event.CLEANUP_COMPLETE, epoch)


async def loading(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    synced = await ctx.retrying("synchronize", lambda: ctx.sync.synchronize(ctx.active), epoch)
    if synced is not None:
        ctx.adopt(synced)
    # Synced: a later confirmation that shows this peer still behind may ask again.
    ctx.round.sync_requested = False
    ctx.round.set_leaders(await _next_leaders(ctx, epoch))
    if ctx.id_text in ctx.round.leader_ids():
        ctx.post(Event.SYNC_COMPLETE, epoch)
        return
    # Not a prover of the next rank: a follower keeps synchronizing.
    ctx.post(Event.SYNC_TIMEOUT, epoch)
    ctx.sync_hint = hint = trio.Event()
    with trio.move_on_after(ctx.timeouts.resync):
        await hint.wait()


async def _next_leaders(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int
) -> list[PeerIDT]:
    """The provers of the rank after the final state (none while that keeps failing)."""
    prior = ctx.active
    leaders = await ctx.retrying(
        "get_next_leaders", lambda: ctx.leader.get_next_leaders(prior), epoch
    )
    return leaders or []


async def _collect(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int
) -> CollectedT | None:
    if ctx.round.collected is None:
        ctx.round.collected = await ctx.retrying("collect", ctx.liveness.collect, epoch)
    return ctx.round.collected


async def _announce(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], collected: CollectedT, epoch: int
) -> None:
    prior = ctx.active

    async def send() -> bool:
        await ctx.liveness.send_liveness(prior, collected)
        return True

    sent = await ctx.once("send_liveness", send, epoch)
    if sent and ctx.emit:
        receipt = ctx.book.add_liveness(ctx.round.target, ctx.id_text, collected)
        if receipt.stored:
            ctx.post(Event.LIVENESS_CHECK_RECEIVED)


async def collecting(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    collected = await _collect(ctx, epoch)
    ctx.round.set_leaders(await _next_leaders(ctx, epoch))
    if ctx.id_text not in ctx.round.leader_ids():
        ctx.tracer.trace(f"not a prover of rank {ctx.round.target}: following")
        ctx.post(Event.INDUCE_SYNC, epoch)
        return
    if collected is not None:
        await _announce(ctx, collected, epoch)
    ctx.post(Event.COLLECTION_DONE, epoch)


async def liveness_check(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    rnd = ctx.round
    events = ctx.take_events()
    if len(rnd.leaders) < ctx.minimum():
        rnd.set_leaders(await _next_leaders(ctx, epoch))
    announced = rnd.collected is not None
    collected = await _collect(ctx, epoch)
    if len(ctx.listed(ctx.book.liveness(ctx.round.target))) >= ctx.minimum():
        ctx.post(Event.PROVER_SIGNAL, epoch)
        return
    # Re-announce only on this state's own timer, never per received announcement.
    if collected is not None and (Event.LIVENESS_TIMEOUT in events or not announced):
        await _announce(ctx, collected, epoch)


async def proving(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    rnd = ctx.round
    proposal = rnd.proposal
    if proposal is None:
        if ctx.attempts and rnd.attempt == 0 and not proves_first(ctx.id_text, rnd.leader_ids()):
            ctx.tracer.trace(f"rank {rnd.target}: not among the first provers: voting")
            ctx.post(Event.PUBLISH_TIMEOUT, epoch)
            return
        proposal = await make_proposal(ctx, epoch)
        if proposal is None:
            return
    # Our own proposal is recorded whatever the self-delivery flag says.
    ctx.book.add_proposal(rnd.target, ctx.id_text, proposal, replace=True)
    ctx.post(Event.PROOF_COMPLETE, epoch)


async def make_proposal(
    ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int
) -> StateT | None:
    """Prove this peer's proposal for the rank and journal it; None if it cannot yet."""
    rnd = ctx.round
    collected = rnd.collected
    if collected is None:
        return None  # nothing collected: wait for the timeout
    prior = ctx.active
    proposal = await ctx.once(
        "prove_next_state", lambda: ctx.leader.prove_next_state(prior, collected), epoch
    )
    if proposal is None:
        return None
    # Journaled before it is published: after a restart this peer re-sends this very
    # proposal instead of proving a second, different one for the rank.
    rnd.proposal = proposal
    ctx.save_round()
    return proposal


async def publishing(ctx: Context[StateT, VoteT, PeerIDT, CollectedT], epoch: int) -> None:
    proposal = ctx.book.proposals(ctx.round.target).get(ctx.id_text)
    if proposal is None:
        ctx.post(Event.PUBLISH_TIMEOUT, epoch)  # nothing of ours to publish: vote
        return
    await ctx.retrying("send_proposal", lambda: ctx.voting.send_proposal(proposal), epoch)
    ctx.post(Event.PUBLISH_COMPLETE, epoch)
