"""The outsider phase of a chaos run: floods from a namespace of its own, each against a control
phase of the same run. The provers must keep half their rate, and be connected and finalizing
within the bounds once the flood ends."""

from __future__ import annotations

import sys

import trio

from p2pnode.chaos import checks
from p2pnode.chaos.checks import Check
from p2pnode.chaos.cluster import LISTEN_PORT, Cluster
from p2pnode.chaos.faults import (
    RESUME_BOUND,
    RESUME_WAIT,
    Event,
    Fault,
    Run,
    cluster_checks,
    wait_resume,
)
from p2pnode.chaos.links import RECONNECT_BOUND, wait_connected

FLOODS = ("bad-signatures", "graft-eclipse", "mutation-flood")
FLOOD_SECONDS = 10.0
"""Each flood lasts this long, after a control phase as long."""
PHASE_SECONDS = 2 * len(FLOODS) * FLOOD_SECONDS
KEPT = 0.5
"""The share of the control phase's rate the provers must keep under a flood."""


async def outsider_phase(run: Run, seconds: float = PHASE_SECONDS) -> None:
    """Each flood in turn from the outsider's namespace, against every prover at once; each
    flood and its control phase share `seconds` evenly."""
    seconds /= 2 * len(FLOODS)
    cluster = run.cluster
    link = cluster.outsider
    targets = [
        f"/ip4/{peer.link.address}/tcp/{LISTEN_PORT}/p2p/{peer.home.keypair().prover.identity()}"
        for peer in cluster.peers
    ]
    network = cluster.peers[0].home.genesis().network
    for flood in FLOODS:
        at = run.elapsed()
        control = await _rate(cluster, seconds)
        command = [sys.executable, "-m", "p2pnode.chaos.outsider", flood, "--network", network]
        command += [arg for addr in targets for arg in ("--target", addr)]
        command += ["--seconds", str(seconds)]
        inside = ["ip", "netns", "exec", link.namespace]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_quietly, [*inside, *command])
            attacked = await _rate(cluster, seconds)
        run.record(await _after(run, flood, at, seconds, control, attacked))


async def _quietly(command: list[str]) -> None:
    await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)


async def _rate(cluster: Cluster, seconds: float) -> float:
    """Ranks per second the slowest peer finalized over `seconds` (read from the stores)."""
    before = cluster.ranks()
    await trio.sleep(seconds)
    after = cluster.ranks()
    return min(after[name] - before[name] for name in before) / seconds


async def _after(
    run: Run, flood: str, at: float, seconds: float, control: float, attacked: float
) -> Event:
    ended = trio.current_time()
    above = max(run.cluster.ranks().values())
    reconnect = await wait_connected(run.cluster, ended, RECONNECT_BOUND + RESUME_WAIT)
    back = await wait_resume(run.cluster, ended, above, RESUME_BOUND)
    found = [
        kept_rate(flood, control, attacked),
        checks.reconnected(flood, reconnect, RECONNECT_BOUND),
        checks.resumed(flood, back.seconds, RESUME_BOUND, RESUME_WAIT, back.stuck),
        *cluster_checks(run.cluster),
    ]
    return Event(Fault.OUTSIDER, flood, at, seconds, back.seconds, tuple(found))


def kept_rate(flood: str, control: float, attacked: float) -> Check:
    """Under the flood the provers finalized at least KEPT of what they did just before."""
    name = f"rate ≥ {KEPT:.0%}"
    detail = f"{flood}: {attacked:.2f} rounds/s against {control:.2f} before"
    return Check(name, control > 0 and attacked >= KEPT * control, detail)
