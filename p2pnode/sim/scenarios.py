"""The simulator's scenarios: which faults, which Byzantine provers, which crashes, and when."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pnode.consensus.rules import max_faults
from p2pnode.sim.bus import Faults, Partition
from p2pnode.sim.node import Conduct


@dataclass(frozen=True, slots=True)
class Crash:
    """`name` crashes at `at` and comes back (from its disk) at `back`."""

    name: str
    at: float
    back: float


@dataclass(frozen=True, slots=True)
class Plan:
    """One run's adversity; from `calm_after` on the network behaves and every peer is up."""

    faults: Faults = field(default_factory=Faults)
    conducts: dict[str, Conduct] = field(default_factory=dict)
    crashes: tuple[Crash, ...] = ()
    calm_after: float = 10.0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    plan: Callable[[list[str], random.Random], Plan]


def _calm(names: list[str], rng: random.Random) -> Plan:
    return Plan(calm_after=3.0)


def _lossy(names: list[str], rng: random.Random) -> Plan:
    until = rng.uniform(4.0, 10.0)
    faults = Faults(
        until=until,
        loss=rng.uniform(0.05, 0.3),
        duplicate=rng.uniform(0.0, 0.2),
        jitter=rng.uniform(0.05, 0.5),
    )
    return Plan(faults=faults, calm_after=until)


def _partition(names: list[str], rng: random.Random) -> Plan:
    start = rng.uniform(1.0, 4.0)
    end = start + rng.uniform(2.0, 8.0)
    side = frozenset(rng.sample(names, len(names) // 2))
    return Plan(faults=Faults(until=end, partitions=(Partition(start, end, side),)), calm_after=end)


def _crash_restart(names: list[str], rng: random.Random) -> Plan:
    crashes = []
    for name in rng.sample(names, max_faults(len(names))):
        at = rng.uniform(1.0, 5.0)
        crashes.append(Crash(name, at, at + rng.uniform(1.0, 6.0)))
    return Plan(crashes=tuple(crashes), calm_after=max(c.back for c in crashes))


def _split_vote(names: list[str], rng: random.Random) -> Plan:
    until = rng.uniform(4.0, 10.0)
    faults = Faults(until=until, proposal_delay=rng.uniform(0.3, 0.7), jitter=0.05)
    return Plan(faults=faults, calm_after=until)


def _witness(names: list[str], rng: random.Random) -> Plan:
    """One muted peer alone hears the confirmations: it commits a frame nobody else sees
    committed. Only the locks keep the others from certifying another frame afterwards."""
    witness = rng.choice(names)
    until = rng.uniform(1.5, 4.0) + rng.uniform(6.0, 16.0)
    faults = Faults(until=until, muted=frozenset({witness}), confirmations_to=frozenset({witness}))
    return Plan(faults=faults, calm_after=until)


def _byzantine(conduct: Conduct) -> Callable[[list[str], random.Random], Plan]:
    def plan(names: list[str], rng: random.Random) -> Plan:
        bad = rng.sample(names, max_faults(len(names)))
        until = rng.uniform(4.0, 10.0)
        faults = Faults(until=until, jitter=0.1, proposal_delay=0.2)
        return Plan(faults=faults, conducts=dict.fromkeys(bad, conduct), calm_after=until)

    return plan


def _mixed(names: list[str], rng: random.Random) -> Plan:
    f = max_faults(len(names))
    shuffled = rng.sample(names, len(names))
    bad, crashed = shuffled[: f // 2 or 1], shuffled[f // 2 or 1 :][: max(f - (f // 2 or 1), 0)]
    until = rng.uniform(4.0, 10.0)
    side = frozenset(rng.sample(names, len(names) // 2))
    start = rng.uniform(1.0, 3.0)
    faults = Faults(
        until=until,
        loss=rng.uniform(0.0, 0.2),
        duplicate=0.1,
        jitter=0.2,
        proposal_delay=0.3,
        partitions=(Partition(start, start + rng.uniform(1.0, 4.0), side),),
    )
    conduct = rng.choice([Conduct.EQUIVOCATING_PROPOSER, Conduct.DOUBLE_VOTER])
    crashes = tuple(Crash(name, rng.uniform(1.0, 3.0), rng.uniform(3.5, until)) for name in crashed)
    return Plan(
        faults=faults,
        conducts=dict.fromkeys(bad, conduct),
        crashes=crashes,
        calm_after=max([until, *(c.back for c in crashes)]),
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("calm", "no faults", _calm),
    Scenario("lossy", "loss, duplication, delay and reordering", _lossy),
    Scenario("partition", "the network splits in halves, then heals", _partition),
    Scenario("crash_restart", "f provers crash and restart from disk", _crash_restart),
    Scenario("split_vote", "late proposals split the vote", _split_vote),
    Scenario("witness", "one muted peer alone sees a commit; the locks must hold", _witness),
    Scenario(
        "equivocating_proposer",
        "f provers send different frames to different peers",
        _byzantine(Conduct.EQUIVOCATING_PROPOSER),
    ),
    Scenario(
        "double_voter", "f provers vote for two frames each time", _byzantine(Conduct.DOUBLE_VOTER)
    ),
    Scenario(
        "spam",
        "f provers flood far-future ranks and non-prover messages",
        _byzantine(Conduct.SPAMMER),
    ),
    Scenario("mixed", "loss, a partition, a crash and a Byzantine prover at once", _mixed),
)


def scenario(name: str) -> Scenario:
    for candidate in SCENARIOS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
