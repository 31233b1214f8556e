"""Fault sequences, played message by message on the simulator, that once stopped honest provers
for ever; each must now end with every honest, connected prover finalizing again, promptly."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from p2pnode.consensus import Event, Limits, RoundView, State, Timeouts
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.conducts import Conduct
from p2pnode.sim.model import (
    GENESIS,
    Collected,
    Confirmation,
    Frame,
    Peer,
    Vote,
    leader_order,
    quorum,
)
from p2pnode.sim.node import NodeConfig, SimNode
from p2pnode.sim.providers import Registry
from p2pnode.sim.scenarios import Plan
from p2pnode.sim.world import build

TIMEOUTS = Timeouts()
RECOVERY = 3 * TIMEOUTS.attempt
"""What the engine promises once a fault ends: a new final rank within three first attempts."""


@dataclass
class Net:
    bus: Bus
    nodes: dict[str, SimNode]
    registry: Registry
    nursery: trio.Nursery

    def __getitem__(self, name: str) -> SimNode:
        return self.nodes[name]

    async def restart(self, name: str) -> None:
        await self.nodes[name].start(self.nursery)


@asynccontextmanager
async def network(
    provers: int = 4,
    *,
    conducts: dict[str, Conduct] | None = None,
    echo: bool = True,
    timeouts: Timeouts = TIMEOUTS,
    down: tuple[str, ...] = (),
) -> AsyncIterator[Net]:
    """`provers` simulated provers on a bus without random faults, started but for `down`."""
    names = [f"p{i}" for i in range(provers)]
    rng = random.Random(7)
    plan = Plan(conducts=conducts or {})
    bus = Bus(rng, plan.faults, echo=echo, quorum=quorum(provers))
    config = NodeConfig(quorum(provers), not echo, timeouts, Limits())
    registry, _, directory = build(plan, names, bus, config, rng)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        for node in directory.nodes.values():
            if node.name not in down:
                await node.start(nursery)
        yield Net(bus, directory.nodes, registry, nursery)
        nursery.cancel_scope.cancel()


async def reached(*nodes: SimNode, rank: int) -> None:
    """Wait until every one of `nodes` holds a final frame at `rank`."""
    for node in nodes:
        done = trio.Event()

        def watch(frame: Frame, done: trio.Event = done) -> None:
            if frame.round >= rank:
                done.set()

        node.disk.watchers.append(watch)
        if node.finalized_rank() < rank:
            await done.wait()
        node.disk.watchers.remove(watch)


class Entered:
    """Set once an engine enters `state` (in `attempt` and for `rank`, if given); listening
    from creation on, so an entry just after it is not missed."""

    def __init__(
        self, node: SimNode, state: State, attempt: int | None = None, rank: int | None = None
    ) -> None:
        assert node.machine is not None
        self.machine, self.state = node.machine, state
        self.attempt, self.rank = attempt, rank
        self.done = trio.Event()
        self.machine.add_listener(self)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        view = self.machine.round_view()
        in_attempt = self.attempt is None or view.attempt == self.attempt
        at_rank = self.rank is None or view.target_rank == self.rank
        if to is self.state and in_attempt and at_rank:
            self.done.set()


async def entered(*watches: Entered) -> None:
    for watch in watches:
        await watch.done.wait()


def precommit(payload: object) -> Confirmation | None:
    is_precommit = isinstance(payload, Confirmation) and not payload.frame.final
    return payload if is_precommit else None  # type: ignore[return-value]


async def test_a_commit_is_taken_from_a_peer_whose_precommit_is_held(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """p2 misses the attempt-0 votes and p3's precommit; p0 and p1 commit; p3 crashes for good.
    p2 holds p0's and p1's precommits: their commits, re-sent from the same senders for the same
    attempt, must still reach its engine, else p2 never finalizes and p0, p1 wait on it."""

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if recipient != "p2":
            return False
        if isinstance(payload, Vote):
            return payload.round == 1 and payload.attempt == 0
        held = precommit(payload)
        return held is not None and held.signer == "p3"

    async with network() as net:
        net.bus.drop_rules.append(lost)
        with trio.fail_after(30):
            await reached(net["p0"], net["p1"], rank=1)
        net["p3"].crash()
        assert net["p2"].finalized_rank() == 0
        with trio.fail_after(RECOVERY):
            await reached(net["p2"], rank=1)
        with trio.fail_after(60):
            await reached(net["p0"], net["p1"], net["p2"], rank=3)


async def test_a_lock_is_released_by_a_certificate_far_older_than_the_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """p0 alone locks (X, 0); p1-p3 lock (Y, 1); p3 crashes; p0 is cut off until attempt 12.
    The certificate for Y that p0 needs is 11 attempts old by then, beyond the window of kept
    confirmations: p0 must still learn it and release its lock, or p0 votes X and p1, p2 vote
    Y for ever."""

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if isinstance(payload, Vote) and payload.round == 1 and payload.attempt == 0:
            return recipient != "p0"  # a vote certificate at p0 only
        held = precommit(payload)
        return held is not None and held.signer == "p3"  # no commit of Y without p3

    async with network() as net:
        net.bus.drop_rules.append(lost)
        locked = [Entered(net[p], State.FINALIZING, attempt=1) for p in ("p1", "p2")]
        with trio.fail_after(30):
            await entered(Entered(net["p0"], State.FINALIZING, attempt=0))
        net.bus.isolated.add("p0")  # before its precommit of X leaves it
        with trio.fail_after(30):
            await entered(*locked)
        net["p3"].crash()
        await trio.sleep(sum(TIMEOUTS.attempt_length(a) for a in range(12)))
        cut_off = net["p0"].machine
        assert cut_off is not None
        view = cut_off.round_view()
        assert view.attempt >= 12
        assert view.lock_attempt == 0
        assert view.locked_on != net["p1"].machine.round_view().locked_on  # type: ignore[union-attr]
        net.bus.isolated.discard("p0")
        with trio.fail_after(RECOVERY):
            await reached(net["p0"], net["p1"], net["p2"], rank=1)


async def test_a_restarted_committer_announces_its_final_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """p0 alone commits rank 1 (the precommits reach it only), p3 crashes for good, p0
    restarts: it must re-announce its final frame's commit, the only way p1 and p2 can
    finalize rank 1."""

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        return precommit(payload) is not None and recipient != "p0"

    async with network() as net:
        net.bus.drop_rules.append(lost)
        with trio.fail_after(30):
            await reached(net["p0"], rank=1)
        net["p0"].crash()  # before its first re-broadcast
        net["p3"].crash()
        await net.restart("p0")
        with trio.fail_after(RECOVERY):
            await reached(net["p1"], net["p2"], rank=1)
        with trio.fail_after(60):
            await reached(net["p0"], net["p1"], net["p2"], rank=3)


async def test_a_restarted_prover_sends_its_proposal_again_instead_of_proving_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rank 1's top prover crashes right after it published its proposal, and another prover
    for good, so rank 1 needs the top prover again; restarted, it publishes that same frame
    again: a second, different one would be an equivocation of an honest prover, which the
    simulator's checker counts."""
    top, *others, gone = leader_order(["p0", "p1", "p2", "p3"], 1, {})
    published: list[Frame] = []
    first = trio.Event()

    def observe(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if topic is Topic.PROPOSAL and (sender, recipient) == (top, others[0]):
            assert isinstance(payload, Frame)
            published.append(payload)
            first.set()
        return False

    async with network() as net:
        net.bus.drop_rules.append(observe)
        with trio.fail_after(30):
            await first.wait()
        net[top].crash()
        net[gone].crash()
        await net.restart(top)
        with trio.fail_after(60):
            await reached(net[top], *(net[name] for name in others), rank=2)
    assert len([frame for frame in published if frame.round == 1]) > 1  # it was sent again
    assert len({frame.identity() for frame in published if frame.round == 1}) == 1
    assert net.registry.conflicts(set(net.nodes)) == 0


async def test_a_proposal_with_a_bad_proof_is_dropped_and_another_voted_in_the_same_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The top-priority prover of rank 1 proposes a frame whose proof does not hold. An honest
    prover finds out only when it is about to vote for it; it must drop it and vote for the
    next proposal in the same attempt, not retry the bad one until the attempt runs out."""
    names = ["p0", "p1", "p2", "p3"]
    top = leader_order(names, 1, {})[0]
    async with network(conducts={top: Conduct.BAD_PROOF}) as net:
        honest = [net[n] for n in names if n != top]
        with trio.fail_after(30):
            await reached(*honest, rank=1)
        final = honest[0].disk.chain[1]
        assert final.prover != top
        assert final.attempt == 0


async def test_provers_resume_promptly_after_a_long_loss_of_quorum(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two of four provers are cut off for ten minutes while voting on rank 3: the other two
    cannot finalize, and their attempts grow to the longest. Once the two are back, all four
    finalize within three first attempts, not after waiting out the attempts that grew
    meanwhile."""

    def cut_short(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        return isinstance(payload, Vote) and payload.round == 3 and sender in ("p2", "p3")

    async with network() as net:
        net.bus.drop_rules.append(cut_short)  # no quorum for rank 3 before the cut
        voting = [Entered(net[p], State.VOTING, rank=3) for p in ("p0", "p1")]
        with trio.fail_after(30):
            await reached(*net.nodes.values(), rank=2)
            await entered(*voting)
        net.bus.isolated.update({"p2", "p3"})
        net.bus.drop_rules.remove(cut_short)
        await trio.sleep(600)
        stalled = max(node.finalized_rank() for node in net.nodes.values())
        for name in ("p0", "p1"):
            machine = net[name].machine
            assert machine is not None
            attempt = machine.round_view().attempt
            assert TIMEOUTS.attempt_length(attempt) == TIMEOUTS.attempt_max
        net.bus.isolated.clear()
        with trio.fail_after(RECOVERY):
            await reached(*net.nodes.values(), rank=stalled + 1)


async def test_an_attempt_ends_a_grace_period_after_a_quorum_voted_without_a_certificate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """However long an attempt could last, once votes from a quorum are in and they do not
    agree, it ends `grace` seconds later: waiting longer cannot help a split that is known."""
    timeouts = Timeouts(attempt=100.0, attempt_max=100.0, grace=2.0)
    names = ["p0", "p1", "p2", "p3"]
    rng = random.Random(3)
    bus = Bus(rng, Plan().faults, echo=True, quorum=3)
    config = NodeConfig(3, False, timeouts, Limits())
    _, _, directory = build(Plan(), names, bus, config, rng)
    node = directory.nodes["p0"]  # alone: the others' messages are handed to its engine here
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        await node.start(nursery)
        machine = node.machine
        assert machine is not None
        first, second = [n for n in leader_order(names, 1, {}) if n != "p0"][:2]
        frames = [Frame(1, GENESIS.identity(), n, f"{n}:1", 0.5) for n in (first, second)]
        voted = Until(node, lambda view: "p0" in view.votes)
        moved = Until(node, lambda view: view.attempt == 1)
        for frame in frames:
            machine.receive_liveness_check(Peer(frame.prover), Collected(1, (frame.payload,)))
            machine.receive_proposal(Peer(frame.prover), frame)
        with trio.fail_after(10):
            await voted.done.wait()
        own = machine.round_view().votes["p0"]
        other = next(f for f in frames if _vote(f, "p0").identity() != own)
        for voter in ("p1", "p3"):
            machine.receive_vote(Peer(other.prover), Peer(voter), _vote(other, voter))
        split_at = trio.current_time()
        with trio.fail_after(timeouts.attempt):
            await moved.done.wait()
        assert trio.current_time() == split_at + timeouts.grace
        nursery.cancel_scope.cancel()


def _vote(frame: Frame, voter: str) -> Vote:
    return Vote(frame.round, 0, frame.identity(), frame.prover, voter)


class Until:
    """Set once a transition of `node`'s engine leaves its round view satisfying `check`."""

    def __init__(self, node: SimNode, check: Callable[[RoundView], bool]) -> None:
        assert node.machine is not None
        self.machine, self.check = node.machine, check
        self.done = trio.Event()
        self.machine.add_listener(self)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        if self.check(self.machine.round_view()):
            self.done.set()


async def test_a_prover_that_moved_on_still_shows_its_vote_of_the_attempt_before(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One prover is down, so the other three are the quorum, in a long first attempt. The
    `mover` misses the first copy of the top proposal (so it votes late), and none of its
    votes reaches the others while it is in that attempt. The mover holds all three votes, so
    it cuts the attempt short and moves on; the other two hold two. Unless the mover re-sends
    its vote of the attempt it left, not only of the one it is in, they wait out their long
    attempt."""
    long = Timeouts(attempt=60.0, attempt_max=60.0)
    names = ["p0", "p1", "p2", "p3"]
    top, mover, *rest = leader_order(names, 1, {})
    down = rest[-1]
    seen: set[str] = set()
    sent: list[tuple[int, int]] = []
    """The mover's votes as sent: their attempt, and the mover's attempt then."""

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if isinstance(payload, Frame) and payload.prover == top and recipient == mover:
            first = recipient not in seen  # the first copy only: the mover votes without it
            seen.add(recipient)
            return first
        now = net[mover].machine.round_view().attempt  # type: ignore[union-attr]
        if isinstance(payload, Vote) and sender == mover:
            sent.append((payload.attempt, now))
        return isinstance(payload, Vote) and sender == mover and now == 0

    async with network(timeouts=long, down=(down,)) as net:
        net.bus.drop_rules.append(lost)
        up = [net[name] for name in names if name != down]
        with trio.fail_after(15):
            await reached(*up, rank=1)
    # As staged: the mover's vote of attempt 0 was lost while it was in attempt 0, and it was
    # sent again once the mover was in a later attempt.
    assert (0, 0) in sent
    assert any(attempt == 0 and then >= 1 for attempt, then in sent)


async def test_a_certificate_reaches_every_prover_though_its_signers_are_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """p3 alone sees the attempt-0 votes, locks and precommits; its precommit reaches p0 only,
    and p3 crashes for good. p0 knows the certificate; p1 and p2 would never learn it from its
    signers, and would vote the rotated leader's proposal while p0 votes the certified one.
    p0 passes the precommit on, so all three vote the certified frame within two attempts."""

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if isinstance(payload, Vote) and payload.round == 1 and payload.attempt == 0:
            return recipient != "p3"
        # p3's own sending only: a copy that another peer passes on is not lost.
        return precommit(payload) is not None and sender == "p3" and recipient != "p0"

    async with network() as net:
        net.bus.drop_rules.append(lost)
        learned = Until(net["p0"], lambda view: 0 in view.confirmations)
        with trio.fail_after(30):
            await learned.done.wait()
        net["p3"].crash()
        certified = net["p0"].machine.round_view().locked_on  # type: ignore[union-attr]
        assert certified is None  # p0 knows the certificate but holds no lock
        with trio.fail_after(30):
            await reached(net["p0"], net["p1"], net["p2"], rank=1)
        final = net["p0"].disk.chain[1]
        lock = net["p3"].disk.record
        assert lock is not None
        assert lock.lock is not None
        assert final.identity() == lock.lock.frame.identity()
        assert final.attempt <= 2


@pytest.mark.parametrize("provers", [4, 7])
async def test_only_the_first_f_plus_one_live_provers_prove_in_attempt_0(
    autojump_clock: trio.testing.MockClock, provers: int
) -> None:
    """Proving is the costliest step of a round and one proposal is final: without faults, only
    the first f+1 provers of the leader order prove, one of them surely honest."""
    proposers: dict[int, set[str]] = {}

    def observe(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if isinstance(payload, Frame) and topic is Topic.PROPOSAL:
            proposers.setdefault(payload.round, set()).add(payload.prover)
        return False

    async with network(provers) as net:
        net.bus.drop_rules.append(observe)
        with trio.fail_after(60):
            await reached(*net.nodes.values(), rank=6)
        chain = net["p0"].disk.chain
    first = provers - quorum(provers) + 1
    for rank in range(1, 7):
        order = leader_order(sorted(net.nodes), rank, chain)
        assert proposers[rank] == set(order[:first]), rank


async def test_the_other_provers_prove_once_the_first_ones_fail_to_propose(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The proposals of rank 1's first two provers are lost: in attempt 1 the other two prove
    their own, and the rank is final with one of theirs."""
    names = ["p0", "p1", "p2", "p3"]
    first_two = leader_order(names, 1, {})[:2]

    def lost(sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        return isinstance(payload, Frame) and topic is Topic.PROPOSAL and sender in first_two

    async with network() as net:
        net.bus.drop_rules.append(lost)
        with trio.fail_after(RECOVERY + TIMEOUTS.attempt):
            await reached(*net.nodes.values(), rank=1)
        final = net["p0"].disk.chain[1]
    assert final.prover not in first_two
    assert final.attempt == 1
