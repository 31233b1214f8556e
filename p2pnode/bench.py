"""`scripts/bench`: N peers as processes on loopback under a steady submit load; one table."""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

from p2pnode.client import ClientError, get_json, post_json, status_url
from p2pnode.home import Home
from p2pnode.store import Store
from p2pnode.testnet import generate_testnet

HOPS_PER_ROUND = 4
"""The critical path of a round: liveness, proposal, vote, confirmation."""
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Result:
    peers: int
    seconds: float
    rounds: int
    round_p50: float
    round_p99: float
    mutations: int
    submitted: int
    cpu: float
    """Mean CPU of one peer, in percent of one core."""
    rss_mb: float
    """Largest peak resident memory of a peer."""
    hop_ms: float

    @property
    def ratio(self) -> float:
        return self.round_p50 * 1000 / (HOPS_PER_ROUND * self.hop_ms) if self.hop_ms else 0.0


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _status(home: Home) -> dict[str, object] | None:
    try:
        return await get_json(status_url(home), "/status", timeout=2)
    except ClientError:
        return None


async def _rank(home: Home) -> int:
    status = await _status(home)
    return -1 if status is None else int(str(status["finalized_rank"]))


async def _submit_load(homes: list[Home], rate: float, until: float, counter: list[int]) -> None:
    """Submit `rate` distinct mutations per second on a fixed schedule, round robin over the
    peers; each submit runs on its own so a slow reply does not slow the schedule."""

    async def submit(index: int) -> None:
        home = homes[index % len(homes)]
        try:
            await post_json(status_url(home), "/submit", f"bench-{index}".encode(), timeout=5)
            counter[0] += 1
        except ClientError:
            pass

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        index = 0
        while (due := start + index / rate) < until:
            await trio.sleep_until(due)
            nursery.start_soon(submit, index)
            index += 1


async def run_one(peers: int, seconds: float, rate: float, difficulty: int, base: Path) -> Result:
    _, homes = generate_testnet(
        base / f"n{peers}", peers, base_port=_free_base(peers), difficulty=difficulty
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "p2pnode", "run", "--home", str(home.path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for home in homes
    ]
    try:
        with trio.fail_after(120):
            while min([await _rank(home) for home in homes]) < 2:  # warmed up
                await trio.sleep(0.2)
        start_rank = await _rank(homes[0])
        cpu_before = [_cpu_seconds(p.pid) for p in processes]
        started = time.monotonic()
        submitted = [0]
        await _submit_load(homes, rate, trio.current_time() + seconds, submitted)
        elapsed = time.monotonic() - started
        cpu = [
            (_cpu_seconds(p.pid) - c) / elapsed * 100
            for p, c in zip(processes, cpu_before, strict=True)
        ]
        rss = max(_peak_rss_mb(p.pid) for p in processes)
        hops = [s.get("hop_latency_ms") for s in [await _status(h) for h in homes] if s]
        hop_ms = statistics.median(float(str(h)) for h in hops if h is not None)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return _measure(homes[0], peers, start_rank, elapsed, submitted[0], cpu, rss, hop_ms)


def _measure(
    home: Home,
    peers: int,
    start_rank: int,
    elapsed: float,
    submitted: int,
    cpu: list[float],
    rss: float,
    hop_ms: float,
) -> Result:
    store = Store(home.store_file, home.genesis())
    try:
        frames = store.frames(start_rank, 1_000_000)
    finally:
        store.close()
    gaps = [(b.timestamp - a.timestamp) / 1000 for a, b in itertools.pairwise(frames)]
    gaps.sort()
    return Result(
        peers=peers,
        seconds=elapsed,
        rounds=len(frames) - 1,
        round_p50=statistics.median(gaps) if gaps else 0.0,
        round_p99=gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))] if gaps else 0.0,
        mutations=sum(len(f.mutations) for f in frames[1:]),
        submitted=submitted,
        cpu=statistics.mean(cpu),
        rss_mb=rss,
        hop_ms=hop_ms,
    )


def _free_base(count: int) -> int:
    import socket

    for candidate in range(20000, 60000, 97):
        sockets = []
        try:
            for offset in range(count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", candidate + offset))
            return candidate
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no free ports")


def table(results: list[Result]) -> Table:
    out = Table(title="p2pnode on loopback (each peer its own process)")
    columns = [
        "peers",
        "rounds/s",
        "round p50 (ms)",
        "round p99 (ms)",
        "mutations/s (submitted/s)",
        "CPU per peer",
        "peak RSS (MB)",
        "hop p50 (ms)",
        f"round / ({HOPS_PER_ROUND} hops)",
    ]
    for column in columns:
        out.add_column(column, justify="right")
    for r in results:
        out.add_row(
            str(r.peers),
            f"{r.rounds / r.seconds:.2f}",
            f"{r.round_p50 * 1000:.0f}",
            f"{r.round_p99 * 1000:.0f}",
            f"{r.mutations / r.seconds:.1f} ({r.submitted / r.seconds:.1f})",
            f"{r.cpu:.0f}%",
            f"{r.rss_mb:.0f}",
            f"{r.hop_ms:.1f}",
            f"{r.ratio:.1f}x",
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description="Measure p2pnode on loopback.")
    parser.add_argument("--peers", type=int, action="append", help="peer counts (default 4 and 7)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--rate", type=float, default=20.0, help="mutations submitted per second")
    parser.add_argument("--difficulty", type=int, default=1000, help="VDF iterations per frame")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.difficulty < 1:
        parser.error("--seconds, --rate and --difficulty must be positive")
    results = []
    with tempfile.TemporaryDirectory(prefix="p2pnode-bench-") as folder:
        for peers in args.peers or [4, 7]:
            results.append(
                trio.run(run_one, peers, args.seconds, args.rate, args.difficulty, Path(folder))
            )
    Console(width=160).print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
