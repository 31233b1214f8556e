"""The faults of a chaos run, each a phase: kill -9 and restart, pause, partition (the link
faults are in `links`)."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from p2pnode.api.client import ClientError
from p2pnode.chaos import checks, stores
from p2pnode.chaos.checks import Check
from p2pnode.chaos.cluster import POLL, Cluster, Peer

RESUME_BOUND = 10.0
"""Seconds from the end of a pause or a partition until every peer finalized a new rank."""
RESTART_BOUND = 15.0
"""Seconds from a restart after kill -9 until every peer, the restarted one included,
finalized a new rank: the restarted process must start Python, load its store, reconnect."""
RESUME_WAIT = 45.0
"""How long a resume is waited for before it is called failed (so a slow one is measured)."""
START_TIMEOUT = 60.0
WARM_RANK = 2
"""Every peer finalizes this rank before the first fault."""
KILL_SECONDS = 30.0
KILL_GAP = 3.0
"""Seconds between one killed peer's resume and the next kill."""
PAUSE_SECONDS = 30.0
PARTITION_SECONDS = 30.0
QUIET_GRACE = 2.0
"""Without a quorum nothing may become final; a rank whose last messages were already in
flight when the fault began may, so the watch starts this many seconds later."""

T = TypeVar("T")


class Fault(enum.Enum):
    START = "start"
    KILL = "kill -9"
    PAUSE = "pause"
    PARTITION = "partition"
    ISOLATE = "isolate"
    CUT_OFF = "cut off"
    FLAP = "flap"
    OUTSIDER = "outsider"
    END = "end"


@dataclass(frozen=True, slots=True)
class Event:
    """One fault (or the start, or the end of the run) and what was checked after it."""

    fault: Fault
    target: str
    at: float
    """Seconds from the start of the run."""
    duration: float | None
    resume: float | None
    """Seconds until every peer finalized a new rank once the fault ended."""
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass(frozen=True, slots=True)
class Held:
    """A fault that was held: the highest final rank once in-flight messages had landed, the
    highest at the fault's end, and when the end came."""

    quiet: int
    high: int
    ended: float


@dataclass
class Run:
    cluster: Cluster
    rng: random.Random
    started: float
    events: list[Event] = field(default_factory=list)
    say: Callable[[Event], None] = lambda event: None

    def elapsed(self) -> float:
        return trio.current_time() - self.started

    def record(self, event: Event) -> None:
        self.events.append(event)
        self.say(event)


@dataclass(frozen=True, slots=True)
class Resume:
    seconds: float | None
    """From the fault's end until every peer finalized a new rank; None: not in time."""
    stuck: str
    """Each peer's round once the bound had passed without a resume; empty otherwise."""


async def wait_resume(
    cluster: Cluster, since: float, above: int, bound: float, wait: float = RESUME_WAIT
) -> Resume:
    """Wait until every peer's final rank is above `above`, at most `wait` seconds after
    `since`; should `bound` pass first, what each peer shows then is kept."""
    stuck = ""
    while min(cluster.ranks().values()) <= above:
        now = trio.current_time()
        if now >= since + wait:
            return Resume(None, stuck)
        if not stuck and now >= since + bound:
            stuck = await snapshot(cluster)
        await trio.sleep(POLL)
    return Resume(trio.current_time() - since, stuck)


async def snapshot(cluster: Cluster) -> str:
    """Each peer's round, one line each, as its status endpoint shows it."""
    lines = []
    for peer in cluster.peers:
        try:
            lines.append(checks.describe(peer.name, await cluster.status(peer, timeout=1)))
        except ClientError as err:
            lines.append(f"{peer.name}: {err}")
    return "\n".join(f"    {line}" for line in lines)


def _read_each(cluster: Cluster, read: Callable[[Peer], T]) -> tuple[dict[str, T], list[str]]:
    values, errors = {}, []
    for peer in cluster.peers:
        try:
            values[peer.name] = read(peer)
        except stores.StoreReadError as err:
            errors.append(str(err))
    return values, errors


def cluster_checks(cluster: Cluster) -> list[Check]:
    """What must hold after every fault: one chain, no double signing, every peer running."""
    chains, errors = _read_each(cluster, lambda p: stores.frame_ids(p.home.store_file))
    agree = checks.frames_agree(chains)
    if errors:
        agree = Check(agree.name, False, "; ".join(errors))
    logs, errors = _read_each(cluster, lambda p: stores.signed_log(p.home.store_file))
    once = checks.signed_once(logs)
    if errors:
        once = Check(once.name, False, "; ".join(errors))
    return [agree, once, alive(cluster)]


def alive(cluster: Cluster) -> Check:
    exited = cluster.exited()
    return checks.alive(exited, _tails(cluster, exited))


def _tails(cluster: Cluster, names: Mapping[str, object]) -> dict[str, str]:
    return {peer.name: cluster.tail(peer) for peer in cluster.peers if peer.name in names}


async def start(run: Run) -> bool:
    """Start every peer and wait for the chain to move; False if the run cannot go on."""
    cluster, at, began = run.cluster, run.elapsed(), trio.current_time()
    for peer in cluster.peers:
        cluster.spawn(peer)
    found = []
    for peer in cluster.peers:
        problem = await cluster.wait_started(peer, START_TIMEOUT)
        found.append(checks.started(peer.name, problem, cluster.tail(peer) if problem else ""))
    up = trio.current_time() - began
    warm = None
    if all(check.ok for check in found):
        first = await wait_resume(cluster, began, WARM_RANK - 1, START_TIMEOUT, START_TIMEOUT)
        warm = first.seconds
        found.append(await _warmed(cluster, warm))
    found.append(alive(cluster))
    event = Event(Fault.START, f"{len(cluster.peers)} provers", at, up, warm, tuple(found))
    run.record(event)
    return event.ok


async def _warmed(cluster: Cluster, seconds: float | None) -> Check:
    if seconds is None:
        detail = f"no rank {WARM_RANK} on every peer within {START_TIMEOUT:g} s"
        return Check("first ranks", False, detail, await snapshot(cluster))
    return Check("first ranks", True, f"rank {WARM_RANK} on every peer in {seconds:.1f} s")


async def kill_phase(run: Run, seconds: float = KILL_SECONDS) -> None:
    """kill -9 a seeded random prover and restart it from its home, every few seconds."""
    end = trio.current_time() + seconds
    while True:
        run.record(await _kill_and_restart(run, run.rng.choice(run.cluster.peers)))
        if trio.current_time() + KILL_GAP >= end:
            return
        await trio.sleep(KILL_GAP)


async def _kill_and_restart(run: Run, victim: Peer) -> Event:
    cluster, at = run.cluster, run.elapsed()
    found = []
    if victim.process is not None and (code := victim.process.poll()) is not None:
        found.append(checks.alive({victim.name: code}, _tails(cluster, {victim.name: code})))
    before = await _finalized(cluster, victim)
    cluster.kill(victim)
    killed = trio.current_time()
    cluster.spawn(victim)
    spawned, above = trio.current_time(), max(cluster.ranks().values())
    problem = await cluster.wait_started(victim, START_TIMEOUT)
    down = trio.current_time() - killed
    found.append(checks.started(victim.name, problem, cluster.tail(victim) if problem else ""))
    resume = None
    if problem is None:
        after = cluster.ranks()[victim.name]
        found.append(checks.nothing_lost(victim.name, before, after))
        back = await wait_resume(cluster, spawned, above, RESTART_BOUND)
        resume = back.seconds
        what = f"{victim.name} restarted"
        found.append(checks.resumed(what, resume, RESTART_BOUND, RESUME_WAIT, back.stuck))
    found += cluster_checks(cluster)
    return Event(Fault.KILL, victim.name, at, down, resume, tuple(found))


async def _finalized(cluster: Cluster, peer: Peer) -> int:
    """The rank the peer had finalized: its store's, or the higher one its status reports."""
    rank = cluster.ranks()[peer.name]
    try:
        status = await cluster.status(peer)
    except ClientError:
        return rank
    return max(rank, status.finalized_rank)


async def pause_phase(run: Run, seconds: float = PAUSE_SECONDS) -> None:
    """SIGSTOP f+1 provers, so no quorum is left; SIGCONT them; time the resume."""
    victims = seeded_quorum_loss(run)
    at = run.elapsed()
    run.cluster.pause(victims)
    try:
        held = await hold(run, seconds)
    finally:
        run.cluster.resume(victims)
    target = " + ".join(peer.name for peer in victims)
    run.record(await _recovered(run, Fault.PAUSE, target, at, seconds, held))


async def partition_phase(run: Run, seconds: float = PARTITION_SECONDS) -> None:
    """Split the provers 2 | 2 (neither side has a quorum, each side's pair still talks);
    join them again; time the heal."""
    side = seeded_quorum_loss(run)
    links = [peer.link for peer in side]
    at = run.elapsed()
    run.cluster.fabric.split(links)
    try:
        held = await hold(run, seconds)
    finally:
        run.cluster.fabric.join(links)
    rest = [peer.name for peer in run.cluster.peers if peer not in side]
    target = " + ".join(peer.name for peer in side) + " | " + " + ".join(rest)
    run.record(await _recovered(run, Fault.PARTITION, target, at, seconds, held))


def seeded_quorum_loss(run: Run) -> list[Peer]:
    """f + 1 provers, chosen by the run's seed: without them no quorum is left."""
    count = (len(run.cluster.peers) - 1) // 3 + 1
    return sorted(run.rng.sample(run.cluster.peers, count), key=lambda peer: peer.name)


async def hold(run: Run, seconds: float) -> Held:
    began = trio.current_time()
    await trio.sleep(QUIET_GRACE)
    quiet = max(run.cluster.ranks().values())
    await trio.sleep_until(began + seconds)
    return Held(quiet, max(run.cluster.ranks().values()), trio.current_time())


async def _recovered(
    run: Run, fault: Fault, target: str, at: float, seconds: float, held: Held
) -> Event:
    back = await wait_resume(run.cluster, held.ended, held.high, RESUME_BOUND)
    what = f"{fault.value} {target}"
    found = [
        checks.no_progress_without_quorum(held.quiet, held.high),
        checks.resumed(what, back.seconds, RESUME_BOUND, RESUME_WAIT, back.stuck),
        *cluster_checks(run.cluster),
    ]
    return Event(fault, target, at, seconds, back.seconds, tuple(found))


async def finish(run: Run) -> None:
    """The end of the run: every peer still running, then stopped; the final stores checked."""
    cluster, at = run.cluster, run.elapsed()
    running = alive(cluster)
    began = trio.current_time()
    codes = cluster.stop()
    stopped = trio.current_time() - began
    found = [running, checks.stopped(codes), *cluster_checks(cluster)[:2]]
    target = f"{len(cluster.peers)} provers stopped"
    run.record(Event(Fault.END, target, at, stopped, None, tuple(found)))
