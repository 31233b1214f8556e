"""Seeded multi-peer simulations: safety, liveness and bounded memory under faults."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from collections.abc import Mapping, Sequence

import pytest
import trio

from p2pnode.consensus import Limits, Lock, State, Timeouts, rules, voting
from p2pnode.consensus.rules import Certified, Choice
from p2pnode.sim.bus import Bus, Faults
from p2pnode.sim.model import Collected, Frame, Peer, quorum
from p2pnode.sim.node import Conduct, NodeConfig, SimNode
from p2pnode.sim.providers import Disk, Reference, Registry
from p2pnode.sim.scenarios import SCENARIOS, scenario
from p2pnode.sim.world import run

SEEDS = int(os.environ.get("P2PNODE_SIM_SEEDS", "40"))
"""Seeds per scenario and size in the suite; `scripts/simulate --seeds N` runs more."""


@pytest.mark.parametrize("provers", [4, 7])
@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_scenario_is_safe_live_and_bounded(name: str, provers: int) -> None:
    """Every seed: no two honest peers finalize different frames at a rank, every honest peer
    finalizes new ranks once the faults stop, and the engine's message book stays bounded."""
    failing = []
    for seed in range(SEEDS):
        outcome = run(scenario(name), provers, seed, echo=seed % 2 == 0)
        if not outcome.ok:
            failing.append(outcome)
    assert not failing, "\n".join(map(repr, failing))


def test_a_seed_reproduces_exactly() -> None:
    first = run(scenario("mixed"), 4, 3, echo=True)
    again = run(scenario("mixed"), 4, 3, echo=True)
    assert first == again


def test_an_engine_that_stopped_by_itself_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed provider stops an engine; the run must count as failed even if others go on."""
    outcome = run(scenario("calm"), 4, 0, echo=True)
    assert outcome.ok
    assert outcome.stopped == 0
    assert not dataclasses.replace(outcome, stopped=1).ok

    prove = Reference.prove_next_state

    async def crashing(self: Reference, prior: Frame | None, collected: Collected) -> Frame:
        if self.name == "p0":
            raise RuntimeError("prover crashed")
        return await prove(self, prior, collected)

    monkeypatch.setattr(Reference, "prove_next_state", crashing)
    crashed = run(scenario("calm"), 4, 0, echo=True)
    assert crashed.stopped == 1
    assert not crashed.ok


def test_a_seed_reproduces_in_a_fresh_process() -> None:
    """A seed's run depends on the seed alone, not on what the process ran before it (trio's
    scheduling order is made deterministic) nor on whether hypothesis is loaded."""
    here = run(scenario("mixed"), 7, 4054, echo=True)
    code = (
        "from p2pnode.sim.scenarios import scenario\n"
        "from p2pnode.sim.world import run\n"
        "print(repr(run(scenario('mixed'), 7, 4054, echo=True)))\n"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert fresh.stdout.strip() == repr(here)


@pytest.mark.parametrize("seed", range(5))
def test_both_self_delivery_modes_finalize_identical_chains(seed: int) -> None:
    """Echo with the flag off and no echo with the flag on decide the same frames.

    With every prover required, each rank's vote goes to the top-priority proposal, so the
    chain depends only on the leader order, not on message timing.
    """
    echoed = run(scenario("calm"), 4, seed, echo=True, minimum_provers=4)
    emitted = run(scenario("calm"), 4, seed, echo=False, minimum_provers=4)
    common = min(len(echoed.chain), len(emitted.chain))
    assert common >= 5
    assert echoed.chain[:common] == emitted.chain[:common]


@pytest.mark.parametrize(("echo", "emit"), [(True, False), (False, True), (True, True)])
async def test_own_messages_never_count_twice(
    echo: bool, emit: bool, autojump_clock: trio.testing.MockClock
) -> None:
    """Two live provers of four can never finalize: were its own liveness or vote counted
    twice, a prover would see the quorum of three it needs. Holds even with both the echo and
    the flag on."""
    names = ["p0", "p1", "p2", "p3"]
    registry = Registry(names)
    disks = {name: Disk() for name in names}
    bus = Bus(random.Random(1), Faults(), echo=echo)
    config = NodeConfig(quorum(4), emit, Timeouts(), Limits())
    nodes = [
        SimNode(name, Conduct.HONEST, bus, registry, disks, config, random.Random(i))
        for i, name in enumerate(names[:2])
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        for node in nodes:
            await node.start(nursery)
        await trio.sleep(60)
        for node in nodes:
            assert node.machine is not None
            view = node.machine.round_view()
            assert view.state is State.LIVENESS_CHECK
            assert sorted(view.live) == ["p0", "p1"]
            assert node.finalized_rank() == 0
        nursery.cancel_scope.cancel()


def test_peer_identity_is_its_name() -> None:
    assert Peer("p1").identity() == "p1"


def test_honest_double_signing_is_counted_as_a_safety_violation() -> None:
    """The checker itself: a vote statement contradicting an earlier one is caught."""
    registry = Registry(["p0", "p1"])
    registry.sign(("vote", 1, 0, "x", "p0"))
    registry.sign(("vote", 1, 1, "y", "p0"))
    assert registry.conflicts({"p0"}) == 0
    registry.sign(("vote", 1, 0, "y", "p0"))
    assert registry.conflicts({"p0"}) == 1
    assert registry.conflicts({"p1"}) == 0


def test_the_checker_catches_a_prover_that_ignores_its_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety checker has teeth: provers that vote without regard to their locks finalize
    conflicting frames in the witness scenario, and the checker says so."""

    def unlocked(
        attempt: int,
        lock: Lock[Frame] | None,
        best: Certified | None,
        proposals: Mapping[str, Frame],
        leaders: Sequence[str],
        enough: bool,
    ) -> Choice[Frame] | None:
        return rules.choose_vote(attempt, None, None, proposals, leaders, enough)

    monkeypatch.setattr(voting, "choose_vote", unlocked)
    violations = [
        run(scenario("witness"), 4, seed, echo=True).safety_violations for seed in range(6)
    ]
    assert sum(violations) > 0
