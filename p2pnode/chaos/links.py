"""Link faults of a chaos run: a prover's cable pulled, f + 1 provers each cut off alone, a link
that flaps. After each, every peer must be connected to every other and finalizing again."""

from __future__ import annotations

import trio

from p2pnode.api.client import ClientError
from p2pnode.chaos import checks
from p2pnode.chaos.cluster import POLL, Cluster
from p2pnode.chaos.faults import (
    RESUME_BOUND,
    RESUME_WAIT,
    Event,
    Fault,
    Held,
    Run,
    cluster_checks,
    hold,
    seeded_quorum_loss,
    wait_resume,
)

ISOLATE_SECONDS = 30.0
FLAPS = 6
FLAP_SECONDS = 5.0
"""A flapping link is down this long, then up this long, FLAPS times."""
RECONNECT_BOUND = 10.0
"""Seconds from a link's return until every peer is connected to every other."""


async def isolate_phase(run: Run, seconds: float = ISOLATE_SECONDS) -> None:
    """Pull one prover's cable: the other three finalize on; plugged in again, it must be
    connected and finalizing within the bounds, however long it was out."""
    victim = run.rng.choice(run.cluster.peers)
    at = run.elapsed()
    run.cluster.fabric.cut(victim.link)
    try:
        await trio.sleep(seconds)
    finally:
        run.cluster.fabric.mend(victim.link)
    run.record(await _back(run, Fault.ISOLATE, victim.name, at, seconds, None))


async def cut_off_phase(run: Run, seconds: float = ISOLATE_SECONDS) -> None:
    """Cut f + 1 provers off, each alone: no quorum is left anywhere; plug them in again."""
    victims = seeded_quorum_loss(run)
    at = run.elapsed()
    for peer in victims:
        run.cluster.fabric.cut(peer.link)
    try:
        held = await hold(run, seconds)
    finally:
        for peer in victims:
            run.cluster.fabric.mend(peer.link)
    target = " + ".join(peer.name for peer in victims) + " each alone"
    run.record(await _back(run, Fault.CUT_OFF, target, at, seconds, held))


async def flap_phase(run: Run, seconds: float = FLAPS * 2 * FLAP_SECONDS) -> None:
    """One prover's link down FLAP_SECONDS, up FLAP_SECONDS, FLAPS times (within `seconds`)."""
    victim = run.rng.choice(run.cluster.peers)
    at, flaps = run.elapsed(), max(1, int(seconds // (2 * FLAP_SECONDS)))
    for flap in range(flaps):
        run.cluster.fabric.cut(victim.link)
        try:
            await trio.sleep(FLAP_SECONDS)
        finally:
            run.cluster.fabric.mend(victim.link)
        if flap + 1 < flaps:
            await trio.sleep(FLAP_SECONDS)
    target = f"{victim.name}, {flaps} times"
    run.record(await _back(run, Fault.FLAP, target, at, flaps * 2 * FLAP_SECONDS, None))


async def _back(
    run: Run, fault: Fault, target: str, at: float, seconds: float, held: Held | None
) -> Event:
    """What is checked once the links are back: connections, then finality, then the rest."""
    mended = trio.current_time()
    above = max(run.cluster.ranks().values()) if held is None else held.high
    reconnect = await wait_connected(run.cluster, mended, RECONNECT_BOUND + RESUME_WAIT)
    back = await wait_resume(run.cluster, mended, above, RESUME_BOUND)
    what = f"{fault.value} {target}"
    found = [
        checks.reconnected(what, reconnect, RECONNECT_BOUND),
        checks.resumed(what, back.seconds, RESUME_BOUND, RESUME_WAIT, back.stuck),
        *cluster_checks(run.cluster),
    ]
    if held is not None:
        found.insert(0, checks.no_progress_without_quorum(held.quiet, held.high))
    return Event(fault, target, at, seconds, back.seconds, tuple(found))


async def wait_connected(cluster: Cluster, since: float, wait: float) -> float | None:
    """Seconds from `since` until every peer shows every other among its peers; None if
    not within `wait`."""
    while trio.current_time() < since + wait:
        if await _all_connected(cluster):
            return trio.current_time() - since
        await trio.sleep(POLL)
    return None


async def _all_connected(cluster: Cluster) -> bool:
    seen: dict[str, set[str]] = {}
    for peer in cluster.peers:
        try:
            status = await cluster.status(peer, timeout=1)
        except ClientError:
            return False
        seen[status.peer_id] = set(status.peers)
    return all(set(seen) - {me} <= peers for me, peers in seen.items())
