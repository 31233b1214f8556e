"""One simulated run: build the peers, play the scenario on virtual time, check the outcome."""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import trio
import trio.testing

from p2pnode.consensus import Limits, State, Timeouts
from p2pnode.sim.bus import Bus
from p2pnode.sim.conducts import Conduct
from p2pnode.sim.model import Frame, quorum
from p2pnode.sim.node import NodeConfig, SimNode, Skew
from p2pnode.sim.providers import Disk, Registry
from p2pnode.sim.scenarios import Crash, Plan, Scenario
from p2pnode.sim.stale import Script

PROGRESS_AFTER_CALM = 3
"""Ranks every honest peer must finalize once the network behaves."""
LIVENESS_WINDOW = 240.0
"""Virtual seconds allowed for that."""
THROUGHPUT_KEPT = 0.75
"""A measured run keeps at least this share of the throughput of the same run all honest."""
SHARE_BOUND = 1.5
"""Byzantine provers win at most this many times their fair share (f/n) of measured ranks."""
RECOVERY_ATTEMPTS = 3
"""Honest provers must finalize a new rank within this many first-attempt lengths of the calm,
however far their attempts grew during the faults."""


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
    winners: tuple[str, ...] = ()
    """The provers of those frames."""
    stopped: int = 0
    """Honest peers, up at the end, whose engine had stopped by itself (a provider crashed)."""
    recovery_bound: float = math.inf
    rate: float | None = None
    """Ranks per second the slowest honest peer finalized in the measured window."""
    kept: float | None = None
    """That rate over the rate of the same run with every prover honest."""
    share: float | None = None
    """The Byzantine provers' share of the measured ranks, over their fair share f/n."""
    retried: int | None = None
    """Measured ranks final only in a later attempt, where the plan wants none."""

    @property
    def memory_ok(self) -> bool:
        return self.peak_stored <= self.memory_bound

    @property
    def slow_recovery(self) -> bool:
        """No new final rank at every honest prover within the recovery bound of the calm."""
        return self.recovery is None or self.recovery > self.recovery_bound

    @property
    def throughput_ok(self) -> bool:
        """The measured throughput and the Byzantine share hold their bounds (if measured)."""
        return (
            (self.kept is None or self.kept >= THROUGHPUT_KEPT)
            and (self.share is None or self.share <= SHARE_BOUND)
            and not self.retried
        )

    @property
    def ok(self) -> bool:
        return (
            not self.safety_violations
            and not self.liveness_failure
            and not self.slow_recovery
            and not self.stopped
            and self.memory_ok
            and self.throughput_ok
        )


def memory_bound(limits: Limits, senders: int) -> int:
    """What the message book may hold: per rank in its window, per kind, per sender (liveness,
    proposals, certified frames, reach, commits, invalid frames, the newest certificate, votes
    in the current attempt and those ahead, confirmations in the attempts behind and ahead)."""
    per_rank = 7 + (limits.attempts_ahead + 1) + (2 * limits.attempts_ahead + 1)
    return limits.ranks_ahead * per_rank * senders


@contextlib.contextmanager
def _reproducible_scheduling(seed: int) -> Iterator[None]:
    """Make trio's choice among runnable tasks a function of `seed` alone, inside the block.

    trio shuffles each batch of runnable tasks; by default the batch's order before the
    shuffle follows wake-ups that can depend on object addresses, so a seed's run could differ
    between processes. With deterministic scheduling (what trio's hypothesis plugin turns on)
    the batch is first sorted by task creation order, then shuffled by the seeded generator.
    Both are trio internals, so they are checked first and restored after: the rest of the
    process schedules as it did before.
    """
    from trio._core import _run

    version = importlib.metadata.version("trio")
    if not (
        version.startswith("0.")
        and isinstance(getattr(_run, "_ALLOW_DETERMINISTIC_SCHEDULING", None), bool)
        and isinstance(getattr(_run, "_r", None), random.Random)
    ):
        raise RuntimeError(f"trio {version} has no seedable scheduler the simulator knows")
    allowed, state = _run._ALLOW_DETERMINISTIC_SCHEDULING, _run._r.getstate()
    _run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _run._r.seed(seed)
    try:
        yield
    finally:
        _run._ALLOW_DETERMINISTIC_SCHEDULING = allowed  # type: ignore[misc]
        _run._r.setstate(state)


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
    without it the flag is on. `minimum_provers` defaults to the quorum, n - f. A plan that
    measures throughput is played a second time with every prover honest, for comparison.
    """
    seed_value = _seed_of(scenario.name, provers, seed, echo)
    minimum = quorum(provers) if minimum_provers is None else minimum_provers
    outcome = _run_once(scenario, provers, seed, echo, minimum, seed_value, honest=False)
    if outcome.rate is None:
        return outcome
    if outcome.share is None:  # no Byzantine prover: the run is its own control
        return replace(outcome, kept=1.0)
    control = _run_once(scenario, provers, seed, echo, minimum, seed_value, honest=True)
    kept = outcome.rate / control.rate if control.rate else None
    return replace(outcome, kept=kept)


def _run_once(
    scenario: Scenario,
    provers: int,
    seed: int,
    echo: bool,
    minimum: int,
    seed_value: int,
    *,
    honest: bool,
) -> Outcome:
    clock = trio.testing.MockClock(autojump_threshold=0)
    rng = random.Random(seed_value)
    names = [f"p{i}" for i in range(provers)]
    plan = scenario.plan(names, rng)
    if honest:
        plan = replace(plan, conducts={})
    with _reproducible_scheduling(seed_value):
        return trio.run(_play, scenario.name, plan, names, seed, echo, minimum, rng, clock=clock)


class Directory:
    """Every simulated peer by name: the sync servers a peer can ask."""

    def __init__(self) -> None:
        self.nodes: dict[str, SimNode] = {}

    def names(self) -> list[str]:
        return sorted(self.nodes)

    def serve(self, server: str, start: int, limit: int) -> list[Frame]:
        node = self.nodes.get(server)
        return [] if node is None or not node.up else node.serve(start, limit)


def build(
    plan: Plan,
    names: list[str],
    bus: Bus,
    config: NodeConfig,
    rng: random.Random,
    script: Script | None = None,
) -> tuple[Registry, dict[str, Disk], Directory]:
    """The peers of a plan (provers `names` and its followers), each with its disk."""
    registry = Registry(names)
    everyone = [*names, *sorted(plan.followers)]
    disks = {name: Disk() for name in everyone}
    directory = Directory()
    for name in everyone:
        node_config = config
        if name in plan.followers:
            resync = plan.followers[name]
            node_config = replace(config, timeouts=replace(config.timeouts, resync=resync))
        directory.nodes[name] = SimNode(
            name,
            plan.conducts.get(name, Conduct.HONEST),
            bus,
            registry,
            disks,
            node_config,
            rng,
            servers=directory,
            skew=plan.skews.get(name, Skew()),
            coalition=None if script is None else script.coalition,
        )
    return registry, disks, directory


async def _play(
    name: str,
    plan: Plan,
    names: list[str],
    seed: int,
    echo: bool,
    minimum: int,
    rng: random.Random,
) -> Outcome:
    provers = len(names)
    bus = Bus(rng, plan.faults, echo=echo, quorum=quorum(provers))
    limits, timeouts = Limits(), Timeouts()
    config = NodeConfig(minimum, not echo, timeouts, limits)
    if plan.prove_time is not None:
        config = replace(
            config, timeouts=timeouts.for_proving(plan.prove_time), prove_time=plan.prove_time
        )
    script = plan.script() if plan.script is not None else None
    if script is not None:
        bus.drop_rules.append(script.rule)
    registry, disks, directory = build(plan, names, bus, config, rng, script)
    nodes = list(directory.nodes.values())
    honest = [node for node in nodes if node.honest]
    gone = {crash.name for crash in plan.crashes if crash.back is None}
    watched = [node for node in honest if node.name not in gone]
    measured: Measured | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bus.run)
        for node in nodes:
            await node.start(nursery)
        for crash in plan.crashes:
            nursery.start_soon(_crash, crash, directory.nodes, nursery)
        await trio.sleep_until(plan.calm_after)
        if script is not None:
            with trio.move_on_after(LIVENESS_WINDOW):
                await script.rule.ended.wait()
        progress = await _watch(watched)
        if plan.measure and progress.live:
            measured = await _measure(watched, plan)
        stopped = sum(_stopped(node) for node in watched)
        nursery.cancel_scope.cancel()
    senders = len(nodes) * 2
    return Outcome(
        scenario=name,
        provers=provers,
        seed=seed,
        echo=echo,
        finalized=min(node.finalized_rank() for node in watched),
        safety_violations=safety_violations([disks[node.name] for node in honest])
        + registry.conflicts({node.name for node in honest}),
        liveness_failure=not progress.live,
        recovery=progress.recovery,
        peak_stored=max(node.peak_stored for node in nodes),
        memory_bound=memory_bound(limits, senders),
        equivocations=sum(node.inbox.equivocations for node in honest),
        virtual_time=trio.current_time(),
        chain=common_chain([disks[node.name] for node in honest]),
        winners=common_chain([disks[node.name] for node in honest], by_prover=True),
        stopped=stopped,
        recovery_bound=RECOVERY_ATTEMPTS * config.timeouts.attempt,
        rate=None if measured is None else measured.rate,
        share=None if measured is None else measured.share,
        retried=None if measured is None or not plan.first_attempt else measured.retried,
    )


@dataclass(frozen=True, slots=True)
class Measured:
    rate: float
    share: float | None
    retried: int


async def _measure(watched: list[SimNode], plan: Plan) -> Measured:
    """Ranks per second over `plan.measure` seconds, and who won them."""
    start = min(node.finalized_rank() for node in watched)
    await trio.sleep(plan.measure)
    end = min(node.finalized_rank() for node in watched)
    chain = watched[0].disk.chain
    frames = [chain[rank] for rank in range(start + 1, end + 1)]
    share = None  # no Byzantine prover: no share to measure
    if plan.conducts:
        fair = len(plan.conducts) / len(watched[0].registry.provers)
        won = sum(frame.prover in plan.conducts for frame in frames) / max(len(frames), 1)
        share = won / fair
    retried = sum(frame.cert_attempt > 0 for frame in frames)
    return Measured((end - start) / plan.measure, share, retried)


@dataclass(frozen=True, slots=True)
class Progress:
    live: bool
    """Every watched peer finalized PROGRESS_AFTER_CALM new ranks within the window."""
    recovery: float | None
    """Seconds from the calm until every watched prover had finalized a new rank."""
    end: float


async def _watch(watched: list[SimNode]) -> Progress:
    """From the calm on, time the first new rank at every prover and wait for the rest."""
    provers = [node for node in watched if node.prover]
    baseline = max(node.finalized_rank() for node in watched)
    calm = trio.current_time()
    recovery: float | None = None
    with trio.move_on_at(calm + LIVENESS_WINDOW):
        while True:
            if recovery is None and min(n.finalized_rank() for n in provers) > baseline:
                recovery = trio.current_time() - calm
            if min(n.finalized_rank() for n in watched) >= baseline + PROGRESS_AFTER_CALM:
                break
            await trio.sleep(0.25)
    live = min(n.finalized_rank() for n in watched) >= baseline + PROGRESS_AFTER_CALM
    return Progress(live, recovery, trio.current_time())


def _stopped(node: SimNode) -> bool:
    return node.up and node.machine is not None and node.machine.get_state() is State.STOPPED


async def _crash(crash: Crash, nodes: dict[str, SimNode], nursery: trio.Nursery) -> None:
    await trio.sleep_until(crash.at)
    nodes[crash.name].crash()
    if crash.back is not None:
        await trio.sleep_until(crash.back)
        await nodes[crash.name].start(nursery)


def common_chain(disks: list[Disk], *, by_prover: bool = False) -> tuple[str, ...]:
    """The frames of ranks 1.. every disk holds (by id, or by prover)."""
    top = min(max(disk.chain) for disk in disks)
    frames = [disks[0].chain[rank] for rank in range(1, top + 1)]
    return tuple(frame.prover if by_prover else frame.identity() for frame in frames)


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
