"""`scripts/simulate`: run scenarios over many seeds and print a table per scenario."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from p2pnode.sim.scenarios import SCENARIOS, scenario
from p2pnode.sim.world import Outcome, run

Job = tuple[str, int, int, bool]


@dataclass
class Summary:
    """Per scenario and prover count: what the seeds showed."""

    scenario: str
    provers: int
    seeds: int = 0
    finalized: int = 0
    safety_violations: int = 0
    liveness_failures: int = 0
    slow_recoveries: int = 0
    memory_failures: int = 0
    equivocations: int = 0
    slowest_recovery: float = 0.0
    kept: list[float] = field(default_factory=list)
    most_share: float | None = None
    retried: int = 0
    failing: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.seeds += 1
        self.finalized += outcome.finalized
        self.safety_violations += outcome.safety_violations
        self.liveness_failures += outcome.liveness_failure
        self.slow_recoveries += outcome.slow_recovery
        self.memory_failures += not outcome.memory_ok
        self.equivocations += outcome.equivocations
        if outcome.recovery is not None:
            self.slowest_recovery = max(self.slowest_recovery, outcome.recovery)
        if outcome.kept is not None:
            self.kept.append(outcome.kept)
        if outcome.share is not None:
            self.most_share = max(outcome.share, self.most_share or outcome.share)
        self.retried += outcome.retried or 0
        if not outcome.ok:
            self.failing.append(outcome)


def _run_job(job: Job) -> Outcome:
    name, provers, seed, echo = job
    return run(scenario(name), provers, seed, echo=echo)


def jobs(names: Sequence[str], sizes: Sequence[int], seeds: range) -> Iterator[Job]:
    """Every seed of every scenario and size; even seeds echo, odd ones emit on send.

    Seeds are the outer loop so that an interrupted run has covered every scenario equally.
    """
    for seed in seeds:
        for name in names:
            for provers in sizes:
                yield name, provers, seed, seed % 2 == 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def collect(outcomes: Iterable[Outcome], total: int, progress_every: int) -> list[Outcome]:
    """Gather outcomes until done or interrupted; report progress on stderr."""
    done: list[Outcome] = []
    failing = 0
    try:
        for outcome in outcomes:
            done.append(outcome)
            failing += not outcome.ok
            if progress_every and len(done) % progress_every == 0:
                print(f"{len(done)}/{total} runs, {failing} failing", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    return done


def simulate(job_list: list[Job], workers: int, progress_every: int = 0) -> list[Outcome]:
    """Run every job; on SIGINT or SIGTERM stop early and return what has finished."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if workers <= 1:
            return collect(map(_run_job, job_list), len(job_list), progress_every)
        # Workers ignore Ctrl-C: the parent stops them once it has kept what they finished.
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, signal.signal, (signal.SIGINT, signal.SIG_IGN)) as pool:
            results = pool.imap_unordered(_run_job, job_list, chunksize=8)
            return collect(results, len(job_list), progress_every)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _kept(kept: list[float]) -> str:
    if not kept:
        return "-"
    return f"{min(kept):.0%} / {statistics.median(kept):.0%}"


def table(summaries: list[Summary]) -> Table:
    out = Table(title="p2pnode simulation")
    for column in (
        "scenario",
        "n",
        "seeds",
        "rounds finalized",
        "safety violations",
        "liveness failures",
        "slow recoveries",
        "memory over bound",
        "equivocations caught",
        "slowest recovery (s)",
        "throughput kept (least / median)",
        "Byzantine share (most, x fair)",
        "ranks retried",
    ):
        out.add_column(column, justify="left" if column == "scenario" else "right")
    for s in summaries:
        out.add_row(
            s.scenario,
            str(s.provers),
            str(s.seeds),
            str(s.finalized),
            str(s.safety_violations),
            str(s.liveness_failures),
            str(s.slow_recoveries),
            str(s.memory_failures),
            str(s.equivocations),
            f"{s.slowest_recovery:.1f}",
            _kept(s.kept),
            "-" if s.most_share is None else f"{s.most_share:.2f}",
            str(s.retried),
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="simulate", description="Run the consensus simulator over many seeds."
    )
    parser.add_argument("--seeds", type=int, default=100, help="seeds per scenario and size")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS])
    parser.add_argument("--provers", type=int, action="append", help="prover counts (4, 7)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--progress", type=int, default=0, metavar="RUNS", help="report on stderr every RUNS runs"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1 or args.progress < 0:
        parser.error("--seeds and --jobs must be positive, --progress not negative")
    if any(n < 1 for n in args.provers or []):
        parser.error("--provers must be positive")
    names = args.scenario or [s.name for s in SCENARIOS]
    sizes = args.provers or [4, 7]
    job_list = list(jobs(names, sizes, range(args.first_seed, args.first_seed + args.seeds)))
    started = time.perf_counter()
    outcomes = simulate(job_list, args.jobs, args.progress)
    summaries = {(n, p): Summary(n, p) for n in names for p in sizes}
    for outcome in outcomes:
        summaries[(outcome.scenario, outcome.provers)].add(outcome)
    console = Console(width=160)
    console.print(table(list(summaries.values())))
    failing = sorted(
        (o for s in summaries.values() for o in s.failing),
        key=lambda o: (o.scenario, o.provers, o.seed),
    )
    for o in failing:
        console.print(
            f"FAIL {o.scenario} n={o.provers} seed={o.seed}: safety={o.safety_violations} "
            f"liveness_failure={o.liveness_failure} recovery={o.recovery} "
            f"kept={o.kept} share={o.share} retried={o.retried} "
            f"stopped_engines={o.stopped} "
            f"peak_stored={o.peak_stored}/{o.memory_bound}"
            f"  (reproduce: scripts/simulate --scenario {o.scenario} --provers {o.provers} "
            f"--first-seed {o.seed} --seeds 1 --jobs 1)",
            soft_wrap=True,
        )
    console.print(f"{len(outcomes)} runs in {time.perf_counter() - started:.1f} s")
    if len(outcomes) < len(job_list):
        console.print(f"INTERRUPTED: {len(job_list) - len(outcomes)} runs not done")
        return 2
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
