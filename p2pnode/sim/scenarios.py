"""The simulator's scenarios: which faults, which Byzantine provers, which crashes, and when."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from p2pnode.consensus.rules import max_faults
from p2pnode.sim import stale
from p2pnode.sim.bus import Faults, Partition
from p2pnode.sim.conducts import Conduct
from p2pnode.sim.node import Skew
from p2pnode.sim.stale import Script


@dataclass(frozen=True, slots=True)
class Crash:
    """`name` crashes at `at` and comes back (from its disk) at `back`, or never (None)."""

    name: str
    at: float
    back: float | None


@dataclass(frozen=True, slots=True)
class Plan:
    """One run's adversity; from `calm_after` on the network behaves and every peer is up but
    those crashed for good. Byzantine conducts and clock skews last the whole run."""

    faults: Faults = field(default_factory=Faults)
    conducts: dict[str, Conduct] = field(default_factory=dict)
    crashes: tuple[Crash, ...] = ()
    calm_after: float = 10.0
    skews: dict[str, Skew] = field(default_factory=dict)
    followers: dict[str, float] = field(default_factory=dict)
    """Peers outside the prover set, by name, with how often (seconds) each synchronizes."""
    measure: float = 0.0
    """When set, the run goes on this many seconds after the calm's progress to measure the
    throughput, against the same run with every prover honest, and the Byzantine provers'
    share of the final frames."""
    prove_time: float | None = None
    """Seconds each proof takes, when not the simulator's default; the engine's waits are
    derived from it as a real peer derives them from the genesis difficulty."""
    first_attempt: bool = False
    """Every rank measured must be final in its first attempt."""
    script: Callable[[], Script] | None = None
    """A scripted attack (see `sim.stale`): its network rule holds until it says it ended,
    which is the calm."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    plan: Callable[[list[str], random.Random], Plan]

    @property
    def measured(self) -> bool:
        """Whether its runs go on to measure throughput (and cost about ten times a plain run)."""
        return self.plan([f"p{i}" for i in range(4)], random.Random(0)).measure > 0


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
    return Plan(crashes=tuple(crashes), calm_after=max(c.back or c.at for c in crashes))


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
    conduct = rng.choice([c for c in Conduct if not c.honest])
    crashes = tuple(Crash(name, rng.uniform(1.0, 3.0), rng.uniform(3.5, until)) for name in crashed)
    return Plan(
        faults=faults,
        conducts=dict.fromkeys(bad, conduct),
        crashes=crashes,
        calm_after=max([until, *(c.back or c.at for c in crashes)]),
    )


def _adaptive(names: list[str], rng: random.Random) -> Plan:
    until = rng.uniform(4.0, 12.0)
    return Plan(faults=Faults(until=until, jitter=0.05, adaptive=True), calm_after=until)


def _crash_for_good(names: list[str], rng: random.Random) -> Plan:
    """f provers crash and never come back; the others must go on without them."""
    crashes = tuple(
        Crash(name, rng.uniform(0.5, 6.0), None)
        for name in rng.sample(names, max_faults(len(names)))
    )
    until = max(c.at for c in crashes)
    return Plan(faults=Faults(until=until, jitter=0.1), crashes=crashes, calm_after=until)


def _long_partition(names: list[str], rng: random.Random) -> Plan:
    """A partition that lasts more than eight attempts (over five minutes) with no quorum on
    either side, so attempts grow on both: the network split in halves, or one prover cut off
    while f others crash for good (locks taken on both sides must still be released)."""
    start = rng.uniform(1.0, 3.0)
    end = start + rng.uniform(320.0, 420.0)
    crashes: tuple[Crash, ...] = ()
    if rng.random() < 0.5:
        side = frozenset(rng.sample(names, len(names) // 2))
    else:
        alone = rng.choice(names)
        side = frozenset({alone})
        others = rng.sample([n for n in names if n != alone], max_faults(len(names)))
        crashes = tuple(Crash(name, rng.uniform(start, start + 8.0), None) for name in others)
    faults = Faults(until=end, partitions=(Partition(start, end, side),))
    return Plan(faults=faults, crashes=crashes, calm_after=end)


def _sync_liar(names: list[str], rng: random.Random) -> Plan:
    """f provers lie to sync requests and a follower lags; an honest prover cut off for a while
    must catch up past them."""
    liars = rng.sample(names, max_faults(len(names)))
    victim = rng.choice([n for n in names if n not in liars])
    start = rng.uniform(1.0, 3.0)
    end = start + rng.uniform(4.0, 12.0)
    faults = Faults(until=end, partitions=(Partition(start, end, frozenset({victim})),))
    return Plan(
        faults=faults,
        conducts=dict.fromkeys(liars, Conduct.SYNC_LIAR),
        followers={"follower": 15.0},
        calm_after=end,
    )


def _clock_skew(names: list[str], rng: random.Random) -> Plan:
    """Every peer's clock is off by up to 3 s and runs up to 10 % fast or slow, for good."""
    skews = {name: Skew(rng.uniform(-3.0, 3.0), rng.uniform(0.9, 1.1)) for name in names}
    return Plan(faults=Faults(until=4.0, jitter=0.05), skews=skews, calm_after=4.0)


def _anything(names: list[str], rng: random.Random) -> Plan:
    """Any mix of the above, drawn per seed: up to f Byzantine provers of any conduct, the
    rest of the f crashed (for good or for a while), up to three partitions of any shape,
    loss, duplication, delay, adaptive delays and clock skew, for up to 30 s."""
    f = max_faults(len(names))
    shuffled = rng.sample(names, len(names))
    bad = shuffled[: rng.randint(0, f)]
    crashed = shuffled[len(bad) : f]
    until = rng.uniform(3.0, 30.0)
    faults = Faults(
        until=until,
        adaptive=rng.random() < 0.3,
        loss=rng.uniform(0.0, 0.4),
        jitter=rng.uniform(0.0, 1.0),
        duplicate=rng.uniform(0.0, 0.3),
        proposal_delay=rng.uniform(0.0, 0.7),
        partitions=tuple(_any_partition(names, rng, until) for _ in range(rng.randint(0, 3))),
    )
    crashes = []
    for name in crashed:
        at = rng.uniform(0.5, until)
        crashes.append(Crash(name, at, None if rng.random() < 0.5 else at + rng.uniform(0.5, 10)))
    skews = {}
    if rng.random() < 0.3:
        skews = {n: Skew(rng.uniform(-2.0, 2.0), rng.uniform(0.92, 1.08)) for n in names}
    return Plan(
        faults=faults,
        conducts={name: rng.choice([c for c in Conduct if not c.honest]) for name in bad},
        crashes=tuple(crashes),
        calm_after=max([until, *(c.back or c.at for c in crashes)]),
        skews=skews,
    )


MEASURED = 60.0
"""Seconds a throughput scenario measures, after the calm's progress."""


def _measured(conduct: Conduct) -> Callable[[list[str], random.Random], Plan]:
    """f provers of one conduct on a network that behaves: the throughput they cost and the
    share of the ranks they win, measured."""

    def plan(names: list[str], rng: random.Random) -> Plan:
        bad = rng.sample(names, max_faults(len(names)))
        faults = Faults(until=1.0, jitter=0.05)
        conducts = dict.fromkeys(bad, conduct)
        return Plan(faults=faults, conducts=conducts, calm_after=1.0, measure=MEASURED)

    return plan


def _heir(names: list[str], rng: random.Random) -> Plan:
    """An honest prover crashes for a few seconds, loses its turn and its place; the f provers
    after it in the rotation are Byzantine heirs that fail the ranks they inherit from it."""
    base = sorted(names)
    victim = rng.randrange(len(base))
    bad = [base[(victim + k) % len(base)] for k in range(1, max_faults(len(base)) + 1)]
    return Plan(
        faults=Faults(until=1.0, jitter=0.05),
        conducts=dict.fromkeys(bad, Conduct.HEIR),
        crashes=(Crash(base[victim], 0.5, 4.0),),
        calm_after=4.0,
        measure=MEASURED,
    )


def _stale_certificate(names: list[str], rng: random.Random) -> Plan:
    """The script of `sim.stale`: a rank with certificates for two frames of one Byzantine
    proposer, the older one replayed whenever the newer one is heard."""
    cast = stale.cast(names, rng)
    return Plan(
        conducts=dict.fromkeys(cast.byzantine, Conduct.CERT_REPLAYER),
        crashes=(Crash(cast.pivot, 3.0, 5.0),),
        calm_after=5.0,
        script=functools.partial(stale.Script.of, cast),
    )


def _slow_proving(names: list[str], rng: random.Random) -> Plan:
    """Proofs take 0.9 to 2.5 s, longer than the default wait for proposals: the waits derived
    from the proving time keep every rank in its first attempt."""
    return Plan(
        faults=Faults(until=1.0, jitter=0.05),
        calm_after=1.0,
        measure=MEASURED,
        prove_time=rng.uniform(0.9, 2.5),
        first_attempt=True,
    )


def _any_partition(names: list[str], rng: random.Random, until: float) -> Partition:
    start = rng.uniform(0.5, until - 0.5)
    side = frozenset(rng.sample(names, rng.randint(1, len(names) - 1)))
    return Partition(start, min(until, start + rng.uniform(0.5, 12.0)), side)


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
    Scenario(
        "split_voter",
        "f provers vote for two real proposals, each to half the peers",
        _byzantine(Conduct.SPLIT_VOTER),
    ),
    Scenario(
        "withholder",
        "f provers send precommits and commits to some peers only, or to none",
        _byzantine(Conduct.WITHHOLDER),
    ),
    Scenario(
        "replayer",
        "f provers replay old confirmations and certificates to some peers",
        _byzantine(Conduct.REPLAYER),
    ),
    Scenario(
        "late_leader",
        "f provers publish their proposals late and to some peers only",
        _byzantine(Conduct.LATE_LEADER),
    ),
    Scenario(
        "adaptive",
        "the network holds back exactly the messages that would complete a certificate",
        _adaptive,
    ),
    Scenario("crash_for_good", "f provers crash and never come back", _crash_for_good),
    Scenario("long_partition", "a partition that lasts more than eight attempts", _long_partition),
    Scenario(
        "sync_liar",
        "f provers answer sync with nothing, stale or invalid frames; a follower lags",
        _sync_liar,
    ),
    Scenario(
        "bad_parent",
        "f provers propose frames that do not extend the final frame",
        _byzantine(Conduct.BAD_PARENT),
    ),
    Scenario(
        "bad_proof",
        "f provers propose frames whose proof of work does not hold",
        _byzantine(Conduct.BAD_PROOF),
    ),
    Scenario("clock_skew", "every peer's clock is off and runs fast or slow", _clock_skew),
    Scenario(
        "fuzzer",
        "f provers misbehave at random, message by message, in every way above",
        _byzantine(Conduct.FUZZER),
    ),
    Scenario("anything", "any mix of the faults and conducts above, drawn per seed", _anything),
    Scenario(
        "stale_certificate",
        "a rank certified for two frames of one prover, the older replayed after the newer",
        _stale_certificate,
    ),
    Scenario(
        "silent_leader",
        "f provers announce liveness and vote but never propose (throughput measured)",
        _measured(Conduct.SILENT_LEADER),
    ),
    Scenario(
        "mute",
        "f provers only announce liveness (throughput measured)",
        _measured(Conduct.MUTE),
    ),
    Scenario(
        "subset_leader",
        "f provers send their proposals to one other prover only (throughput measured)",
        _measured(Conduct.SUBSET_LEADER),
    ),
    Scenario(
        "laggard",
        "f provers send half their messages 0.45 s late, the rest 3 s (throughput measured)",
        _measured(Conduct.LAGGARD),
    ),
    Scenario(
        "grinder",
        "f provers re-stamp their frames to lead the next rank, 0.4 s late (share measured)",
        _measured(Conduct.GRINDER),
    ),
    Scenario(
        "last_voter",
        "f provers equivocate, and send each vote to one peer just before the attempt ends",
        _byzantine(Conduct.LAST_VOTER),
    ),
    Scenario(
        "strander",
        "f provers leave the next rank's leader one vote short of their rank (throughput measured)",
        _measured(Conduct.STRANDER),
    ),
    Scenario(
        "heir",
        "an honest prover crashes and loses its place; its Byzantine heirs fail its ranks",
        _heir,
    ),
    Scenario(
        "slow_proving",
        "proofs take 0.9-2.5 s; every rank must be final in its first attempt",
        _slow_proving,
    ),
)


def scenario(name: str) -> Scenario:
    for candidate in SCENARIOS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
