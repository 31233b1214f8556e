"""One benchmark run: start N peers on loopback, load them, sample them, measure, stop them."""

from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pnode.api.client import ClientError, get_status, status_url, submit_batch
from p2pnode.chain.genesis import DEFAULT_VDF_BITS, wall_clock_ms
from p2pnode.chain.mempool import mutation_id
from p2pnode.local.homes import generate_testnet
from p2pnode.local.processes import serving, spawn, stop_all
from p2pnode.peer.home import Home
from p2pnode.peer.phases import Phase, RoundPhases
from p2pnode.peer.status import PeerStatus, quantile
from p2pnode.peer.store import Store

HOPS_PER_ROUND = 4
"""The critical path of a round: liveness, proposal, vote, confirmation."""
PHASES = tuple(phase.value for phase in Phase if phase is not Phase.OTHER)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_EVERY = 0.5
"""Seconds between status samples: recent_rounds holds 16 rounds, so up to 32 rounds/s."""
SOAK_MARK = 1000
"""The soak compares each peer's memory after this many rounds with its memory at the end."""


@dataclass(frozen=True, slots=True)
class Result:
    peers: int
    seconds: float
    rounds: int
    rounds_per_s: float
    round_p50_ms: float
    round_p99_ms: float
    hop_p50_ms: float
    hop_p99_ms: float
    cpu_ms_per_round: float
    """CPU time one peer spent per final round (mean over the peers)."""
    cores_used: float
    phase_p50_ms: dict[str, float]
    mutations_per_s: float
    submitted_per_s: float
    submit_to_final_p50_s: float | None
    """From a submit to the proof of the frame after the one holding it (an upper bound)."""
    peak_rss_mb: float
    rss_at_1000_mb: float | None
    rss_end_mb: float
    vdf_bits: int = DEFAULT_VDF_BITS
    work_per_round: dict[str, float] = field(default_factory=dict)
    """Each of the status's work counters, per final round per peer (mean over the peers)."""

    @property
    def ratio(self) -> float:
        return self.round_p50_ms / (HOPS_PER_ROUND * self.hop_p50_ms) if self.hop_p50_ms else 0.0


@dataclass
class Samples:
    """What the sampler saw while the load ran."""

    phases: dict[tuple[str, int], RoundPhases] = field(default_factory=dict)
    hops: list[tuple[float, float]] = field(default_factory=list)
    rss_at_mark_mb: float | None = None
    submitted: dict[bytes, int] = field(default_factory=dict)
    """Mutation id → wall-clock ms of its submit."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _memory_mb(pid: int) -> dict[str, float]:
    """A process's memory figures in MB, all from one read of its status."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            figures[key] = int(rest.split()[0]) / 1024
    return figures


async def _status(home: Home) -> PeerStatus | None:
    try:
        return await get_status(status_url(home), timeout=5)
    except ClientError:
        return None


def _rank(status: PeerStatus | None) -> int:
    return -1 if status is None else status.finalized_rank


class Fleet:
    """The peer processes of one run; each listens on a port the system picks."""

    def __init__(self, homes: list[Home]) -> None:
        self.homes = homes
        self.processes: list[subprocess.Popen[bytes]] = []

    async def start(self) -> None:
        first = await self._start(self.homes[0], [])
        addrs = [a for a in first.addrs if "/ip4/127.0.0.1/" in a]
        if not addrs:
            raise RuntimeError("the first peer shows no loopback address")
        for home in self.homes[1:]:
            await self._start(home, ["--bootstrap", addrs[0]])

    async def _start(self, home: Home, extra: list[str]) -> PeerStatus:
        # A session of its own: should the bench be killed outright, each peer gets SIGTERM.
        peer = spawn(home, "--listen", "/ip4/127.0.0.1/tcp/0", *extra, own_session=True)
        self.processes.append(peer)
        with trio.fail_after(60):
            return await serving(home, self.processes[-1])

    def cpu(self) -> list[float]:
        return [_cpu_seconds(p.pid) for p in self.processes]

    def memory_mb(self) -> tuple[float, float]:
        """The largest of the peers' VmHWM (peak) and of their VmRSS (now).

        Both come from one read per peer: read apart, RSS can grow past the peak read first.
        """
        figures = [_memory_mb(p.pid) for p in self.processes]
        return max(f.get("VmHWM", 0.0) for f in figures), max(f.get("VmRSS", 0.0) for f in figures)

    def stop(self) -> None:
        stop_all(self.processes)


async def _sample(fleet: Fleet, samples: Samples, start_rank: int) -> None:
    """Keep each round's phases per peer, the hop latencies, and the memory at the mark."""
    while True:
        statuses = [await _status(home) for home in fleet.homes]
        for index, status in enumerate(statuses):
            if status is None:
                continue
            for row in status.recent_rounds:
                if row.phases is not None and row.rank > start_rank:
                    samples.phases[(str(index), row.rank)] = row.phases
        rank = _rank(statuses[0])
        if samples.rss_at_mark_mb is None and rank - start_rank >= SOAK_MARK:
            samples.rss_at_mark_mb = fleet.memory_mb()[1]
        await trio.sleep(SAMPLE_EVERY)


MUTATION_SIZE = 100
BATCHES_PER_SECOND = 10


def mutation(index: int) -> bytes:
    """The benchmark's `index`th mutation: 100 distinct bytes."""
    return f"bench {index:012d} ".encode().ljust(MUTATION_SIZE, b".")


async def _submit_load(homes: list[Home], rate: float, done: trio.Event, samples: Samples) -> None:
    """Submit `rate` distinct mutations per second on a fixed schedule, in ten batches a second
    round robin over the peers, until `done`; each batch is sent on its own, so a slow reply
    does not slow the schedule."""

    async def submit(peer: int, batch: list[bytes]) -> None:
        try:
            at = wall_clock_ms()
            await submit_batch(status_url(homes[peer % len(homes)]), batch, timeout=10)
        except ClientError:
            return
        for data in batch:
            samples.submitted[mutation_id(data)] = at

    start, sent = trio.current_time(), 0
    async with trio.open_nursery() as nursery:
        tick = 0
        while not done.is_set():
            await trio.sleep_until(start + tick / BATCHES_PER_SECOND)
            due = int(rate * (tick + 1) / BATCHES_PER_SECOND)
            if due > sent:
                nursery.start_soon(submit, tick, [mutation(i) for i in range(sent, due)])
                sent = due
            tick += 1


async def _until(home: Home, rank: int | None, seconds: float, done: trio.Event) -> None:
    with trio.move_on_after(seconds if rank is None else float("inf")):
        while rank is None or _rank(await _status(home)) < rank:
            await trio.sleep(SAMPLE_EVERY)
    done.set()


async def run_one(
    peers: int,
    seconds: float,
    rounds: int | None,
    rate: float,
    difficulty: int,
    base: Path,
    *,
    vdf_bits: int = DEFAULT_VDF_BITS,
) -> Result:
    _, homes = generate_testnet(base, peers, base_port=0, difficulty=difficulty, vdf_bits=vdf_bits)
    fleet = Fleet(homes)
    samples = Samples()
    try:
        await fleet.start()
        with trio.fail_after(120):
            while min([_rank(await _status(home)) for home in homes]) < 2:  # warmed up
                await trio.sleep(0.2)
        start_rank = _rank(await _status(homes[0]))
        work_before = [await _work(home) for home in homes]
        cpu_before, started = fleet.cpu(), time.monotonic()
        done = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample, fleet, samples, start_rank)
            nursery.start_soon(_submit_load, homes, rate, done, samples)
            goal = None if rounds is None else start_rank + rounds
            await _until(homes[0], goal, seconds, done)
            nursery.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        cpu = [after - before for after, before in zip(fleet.cpu(), cpu_before, strict=True)]
        end_rank = _rank(await _status(homes[0]))
        statuses = [s for s in [await _status(h) for h in homes] if s is not None]
        work = _per_round(work_before, [await _work(home) for home in homes], end_rank - start_rank)
        memory = fleet.memory_mb()
    finally:
        fleet.stop()
    result = _measure(homes[0], (start_rank, end_rank), elapsed, cpu, statuses, memory, samples)
    return dataclasses.replace(result, work_per_round=work, vdf_bits=vdf_bits)


async def _work(home: Home) -> dict[str, int]:
    status = await _status(home)
    return {} if status is None else dict(status.work)


def _per_round(
    before: Sequence[dict[str, int]], after: Sequence[dict[str, int]], rounds: int
) -> dict[str, float]:
    """Each counter's growth per round, averaged over the peers that reported it both times."""
    names = sorted({name for counts in after for name in counts})
    per_round = {}
    for name in names:
        grown = [
            a[name] - b[name] for b, a in zip(before, after, strict=True) if name in a and name in b
        ]
        if grown:
            per_round[name] = statistics.mean(grown) / max(rounds, 1)
    return per_round


def _measure(
    home: Home,
    ranks: tuple[int, int],
    elapsed: float,
    cpu: Sequence[float],
    statuses: Sequence[PeerStatus],
    memory: tuple[float, float],
    samples: Samples,
) -> Result:
    store = Store(home.store_file, home.genesis())
    try:
        frames = store.frames(ranks[0], ranks[1] - ranks[0] + 2)
    finally:
        store.close()
    frames = [f for f in frames if f.round <= ranks[1] + 1]
    measured = frames[: ranks[1] - ranks[0] + 1]
    gaps = [b.timestamp - a.timestamp for a, b in itertools.pairwise(measured)]
    rounds = max(ranks[1] - ranks[0], 1)
    delays = [
        later.timestamp - samples.submitted[mutation_id(m)]
        for frame, later in itertools.pairwise(frames)
        for m in frame.mutations
        if mutation_id(m) in samples.submitted
    ]
    phases = list(samples.phases.values())
    return Result(
        peers=len(cpu),
        seconds=round(elapsed, 1),
        rounds=ranks[1] - ranks[0],
        rounds_per_s=(ranks[1] - ranks[0]) / elapsed,
        round_p50_ms=_quantile(gaps, 0.5),
        round_p99_ms=_quantile(gaps, 0.99),
        hop_p50_ms=_median_of([s.hop_latency_ms for s in statuses]),
        hop_p99_ms=_median_of([s.hop_latency_p99_ms for s in statuses]),
        cpu_ms_per_round=statistics.mean(cpu) * 1000 / rounds,
        cores_used=sum(cpu) / elapsed,
        phase_p50_ms={p: _quantile([ph.millis[Phase(p)] for ph in phases], 0.5) for p in PHASES},
        mutations_per_s=sum(len(f.mutations) for f in measured[1:]) / elapsed,
        submitted_per_s=len(samples.submitted) / elapsed,
        submit_to_final_p50_s=_quantile(delays, 0.5) / 1000 if delays else None,
        peak_rss_mb=memory[0],
        rss_at_1000_mb=samples.rss_at_mark_mb,
        rss_end_mb=memory[1],
    )


def _quantile(values: Sequence[float], q: float) -> float:
    return quantile(values, q) or 0.0


def _median_of(values: Sequence[float | None]) -> float:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else 0.0
