"""One simulated run: build the peers, play the scenario on virtual time, check the outcome."""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import trio
import trio.testing

from p2pnode.consensus import Limits, State, Timeouts
from p2pnode.sim.bus import Bus
from p2pnode.sim.model import quorum
from p2pnode.sim.node import Conduct, NodeConfig, SimNode
from p2pnode.sim.providers import Disk, Registry
from p2pnode.sim.scenarios import Crash, Scenario

PROGRESS_AFTER_CALM = 3
"""Ranks every honest peer must finalize once the network behaves."""
LIVENESS_WINDOW = 240.0
"""Virtual seconds allowed for that."""


@dataclass(frozen=True, slots=True)
class Outcome:
    scenario: str
    provers: int
    seed: int
    echo: bool
    finalized: int
    """The lowest finalized rank among honest peers at the end."""
    safety_violations: int
    """Ranks with two different honest frames, plus votes or confirmations an honest peer
    signed against its own earlier ones."""
    liveness_failure: bool
    recovery: float | None
    """Virtual seconds from calm until every honest peer finalized a new rank."""
    peak_stored: int
    memory_bound: int
    equivocations: int
    virtual_time: float
    chain: tuple[str, ...]
    """Frame ids of ranks 1.. that every honest peer finalized."""
    stopped: int = 0
    """Honest peers, up at the end, whose engine had stopped by itself (a provider crashed)."""

    @property
    def memory_ok(self) -> bool:
        return self.peak_stored <= self.memory_bound

    @property
    def ok(self) -> bool:
        return (
            not self.safety_violations
            and not self.liveness_failure
            and not self.stopped
            and self.memory_ok
        )


def memory_bound(limits: Limits, senders: int) -> int:
    """What the message book may hold: per rank in its window, per kind, per sender."""
    per_rank = 3 + (limits.attempts_ahead + 1) + (2 * limits.attempts_ahead + 1)
    return limits.ranks_ahead * per_rank * senders


def _reproducible_scheduling(seed: int) -> None:
    """Make trio's choice among runnable tasks a function of `seed` alone.

    trio shuffles each batch of runnable tasks; by default the batch's order before the
    shuffle follows wake-ups that can depend on object addresses, so a seed's run could differ
    between processes. With deterministic scheduling (what trio's hypothesis plugin turns on)
    the batch is first sorted by task creation order, then shuffled by the seeded generator.
    """
    from trio._core import _run

    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)


def _seed_of(*parts: object) -> int:
    return zlib.crc32("/".join(str(p) for p in parts).encode())


def run(
    scenario: Scenario,
    provers: int,
    seed: int,
    *,
    echo: bool,
    minimum_provers: int | None = None,
) -> Outcome:
    """Play one seed of a scenario; the same arguments always give the same outcome.

    With `echo` the pubsub delivers a peer's own messages back and the engine's flag is off;
    without it the flag is on. `minimum_provers` defaults to the quorum, n - f.
    """
    seed_value = _seed_of(scenario.name, provers, seed, echo)
    _reproducible_scheduling(seed_value)
    clock = trio.testing.MockClock(autojump_threshold=0)
    minimum = quorum(provers) if minimum_provers is None else minimum_provers
    rng = random.Random(seed_value)
    return trio.run(_play, scenario, provers, seed, echo, minimum, rng, clock=clock)


async def _play(
    scenario: Scenario, provers: int, seed: int, echo: bool, minimum: int, rng: random.Random
) -> Outcome:
    names = [f"p{i}" for i in range(provers)]
    plan = scenario.plan(names, rng)
    registry = Registry(names)
    disks = {name: Disk() for name in names}
    bus = Bus(rng, plan.faults, echo=echo)
    limits = Limits()
    config = NodeConfig(minimum, not echo, Timeouts(), limits)
    nodes = [
        SimNode(name, plan.conducts.get(name, Conduct.HONEST), bus, registry, disks, config, rng)
        for name in names
    ]
    honest = [node for node in nodes if node.honest]
    recovery: float | None = None
    liveness_failure = False
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        for node in nodes:
            await node.start(nursery)
        for crash in plan.crashes:
            nursery.start_soon(_crash, crash, {n.name: n for n in nodes}, nursery)
        await trio.sleep_until(plan.calm_after)
        baseline = max(node.finalized_rank() for node in honest)
        calm = trio.current_time()
        with trio.move_on_at(calm + LIVENESS_WINDOW):
            while min(node.finalized_rank() for node in honest) < baseline + PROGRESS_AFTER_CALM:
                if recovery is None and min(n.finalized_rank() for n in honest) > baseline:
                    recovery = trio.current_time() - calm
                await trio.sleep(0.25)
        if recovery is None and min(n.finalized_rank() for n in honest) > baseline:
            recovery = trio.current_time() - calm
        liveness_failure = min(node.finalized_rank() for node in honest) < (
            baseline + PROGRESS_AFTER_CALM
        )
        end = trio.current_time()
        stopped = sum(_stopped(node) for node in honest)
        nursery.cancel_scope.cancel()
    senders = len(names) * 2
    return Outcome(
        scenario=scenario.name,
        provers=provers,
        seed=seed,
        echo=echo,
        finalized=min(node.finalized_rank() for node in honest),
        safety_violations=safety_violations([disks[node.name] for node in honest])
        + registry.conflicts({node.name for node in honest}),
        liveness_failure=liveness_failure,
        recovery=recovery,
        peak_stored=max(node.peak_stored for node in nodes),
        memory_bound=memory_bound(limits, senders),
        equivocations=sum(node.inbox.equivocations for node in honest),
        virtual_time=end,
        chain=common_chain([disks[node.name] for node in honest]),
        stopped=stopped,
    )


def _stopped(node: SimNode) -> bool:
    return node.up and node.machine is not None and node.machine.get_state() is State.STOPPED


async def _crash(crash: Crash, nodes: dict[str, SimNode], nursery: trio.Nursery) -> None:
    await trio.sleep_until(crash.at)
    nodes[crash.name].crash()
    await trio.sleep_until(crash.back)
    await nodes[crash.name].start(nursery)


def common_chain(disks: list[Disk]) -> tuple[str, ...]:
    top = min(max(disk.chain) for disk in disks)
    return tuple(disks[0].chain[rank].identity() for rank in range(1, top + 1))


def safety_violations(disks: list[Disk]) -> int:
    """Ranks at which two honest peers hold different frames, plus broken links in any chain."""
    violations = 0
    ranks = sorted({rank for disk in disks for rank in disk.chain})
    for rank in ranks:
        ids = {disk.chain[rank].identity() for disk in disks if rank in disk.chain}
        violations += len(ids) > 1
    for disk in disks:
        for rank, frame in disk.chain.items():
            parent = disk.chain.get(rank - 1)
            if parent is not None and frame.parent != parent.identity():
                violations += 1
    return violations
