"""`scripts/bench`: N peers as processes on loopback under a steady submit load; one table."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path

import trio
from rich.console import Console
from rich.table import Table

from benchmarks.bench_run import HOPS_PER_ROUND, PHASES, Result, run_one
from p2pnode.chain.genesis import DEFAULT_DIFFICULTY, DEFAULT_VDF_BITS, VDF_BITS


def _table(title: str, columns: Sequence[str]) -> Table:
    out = Table(title=title)
    for column in columns:
        out.add_column(column, justify="right")
    return out


def table(results: list[Result]) -> Table:
    bits = sorted({r.vdf_bits for r in results})
    title = (
        f"p2pnode on loopback (each peer its own process), {'/'.join(map(str, bits))}-bit proofs"
    )
    columns = [
        "peers",
        "rounds/s",
        "round p50/p99 (ms)",
        "hop p50/p99 (ms)",
        f"round / ({HOPS_PER_ROUND} hops)",
        "CPU ms per\nround per peer",
        "cores used",
        "phase p50s (ms)\n" + " ".join(p[:4] for p in PHASES),
        "mutations/s (submitted/s)",
        "submit→final p50 (s)",
        "peak RSS (MB)",
    ]
    out = _table(title, columns)
    for r in results:
        out.add_row(
            str(r.peers),
            f"{r.rounds_per_s:.2f}",
            f"{r.round_p50_ms:.0f} / {r.round_p99_ms:.0f}",
            f"{r.hop_p50_ms:.1f} / {r.hop_p99_ms:.1f}",
            f"{r.ratio:.1f}x",
            f"{r.cpu_ms_per_round:.0f}",
            f"{r.cores_used:.2f}",
            " ".join(f"{r.phase_p50_ms[p]:.0f}" for p in PHASES),
            f"{r.mutations_per_s:.0f} ({r.submitted_per_s:.0f})",
            "—" if r.submit_to_final_p50_s is None else f"{r.submit_to_final_p50_s:.2f}",
            f"{r.peak_rss_mb:.0f}",
        )
    return out


def work_table(results: list[Result]) -> Table:
    """What each peer did per final round; the bench JSON has every counter, per topic too."""
    columns = (
        "peers",
        "copies received: new / duplicate",
        "duplicates",
        "messages published",
        "re-sends",
        "store commits",
        "commit ms on the event loop",
    )
    out = _table("work per final round per peer (mean over the peers)", columns)
    for r in results:
        work = r.work_per_round
        new, duplicate = work.get("copies_new", 0.0), work.get("copies_duplicate", 0.0)
        share = duplicate / (new + duplicate) if new + duplicate else 0.0
        out.add_row(
            str(r.peers),
            f"{new:.1f} / {duplicate:.1f}",
            f"{share:.0%}",
            f"{_sum(work, 'published_'):.2f}",
            f"{_sum(work, 'resent_'):.2f}",
            f"{work.get('store_commits', 0.0):.2f}",
            f"{work.get('store_blocking_us', 0.0) / 1000:.2f}",
        )
    return out


def _sum(work: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in work.items() if name.startswith(prefix))


def soak_table(results: list[Result]) -> Table:
    columns = ("peers", "rounds", "RSS at 1,000 rounds (MB)", "RSS at the end (MB)", "growth")
    out = _table("memory over the soak (largest resident set of any peer)", columns)
    for r in results:
        if r.rss_at_1000_mb is None:
            continue
        growth = r.rss_end_mb / r.rss_at_1000_mb - 1
        out.add_row(
            str(r.peers),
            str(r.rounds),
            f"{r.rss_at_1000_mb:.1f}",
            f"{r.rss_end_mb:.1f}",
            f"{growth:+.1%}",
        )
    return out


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _runs(args: argparse.Namespace) -> list[Result]:
    """One run per peer count, each in a folder of its own that is removed after it."""
    results = []
    with tempfile.TemporaryDirectory(prefix="p2pnode-bench-") as folder:
        for peers in args.peers or [4, 7]:
            base = Path(folder) / f"n{peers}"
            run = (peers, args.seconds, args.rounds, args.rate, args.difficulty, base)
            results.append(trio.run(partial(run_one, *run, vdf_bits=args.vdf_bits)))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description="Measure p2pnode on loopback.")
    parser.add_argument("--peers", type=int, action="append", help="peer counts (default 4 and 7)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument(
        "--rounds", type=int, help="measure until this many rounds are final instead (a soak)"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="mutations submitted per second")
    parser.add_argument(
        "--difficulty", type=int, default=DEFAULT_DIFFICULTY, help="VDF iterations per frame"
    )
    parser.add_argument(
        "--vdf-bits", type=int, choices=VDF_BITS, default=DEFAULT_VDF_BITS, help="proof size"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.difficulty < 1:
        parser.error("--seconds, --rate and --difficulty must be positive")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be positive")
    if any(n < 1 for n in args.peers or []):
        parser.error("--peers must be positive")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = _runs(args)
    except KeyboardInterrupt:
        print("bench: interrupted; the peers it started are stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    console = Console(width=200)
    console.print(table(results))
    console.print(work_table(results))
    if args.rounds is not None:
        console.print(soak_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
