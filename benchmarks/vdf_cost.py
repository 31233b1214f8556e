"""The VDF's cost per proof size, as CPU time of the calling thread: one table.

Usage: .venv/bin/python -m benchmarks.vdf_cost [--difficulty N] [--samples N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import chiavdf
from rich.console import Console
from rich.table import Table

from p2pnode.chain import vdf
from p2pnode.chain.genesis import DEFAULT_DIFFICULTY, VDF_BITS
from p2pnode.chain.types import digest

T = TypeVar("T")


def _timed(call: Callable[..., T], *args: object) -> tuple[T, float]:
    """The call's result and the CPU ms it took on this thread (chiavdf runs on the calling
    thread; thread_time leaves out whatever else the machine is doing)."""
    started = time.thread_time()
    result = call(*args)
    return result, (time.thread_time() - started) * 1000


def measure(bits: int, difficulty: int, samples: int) -> dict[str, list[float]]:
    """Per fresh challenge: derive its discriminant, prove (deriving it again inside chiavdf),
    and verify with the discriminant given (cached, as a peer's verification takes it)."""
    costs: dict[str, list[float]] = {"derive": [], "prove": [], "verify": []}
    for index in range(samples):
        challenge = digest(b"vdf cost %d %d" % (bits, index))
        _, derive = _timed(chiavdf.create_discriminant, challenge, bits)
        (output, proof), prove = _timed(vdf.prove, challenge, difficulty, bits)
        vdf._discriminant(challenge, bits)
        _, verify = _timed(vdf.verify, challenge, difficulty, output, proof, bits)
        for name, cost in (("derive", derive), ("prove", prove), ("verify", verify)):
            costs[name].append(cost)
    return costs


def table(results: dict[int, dict[str, list[float]]], difficulty: int) -> Table:
    out = Table(title=f"VDF CPU ms per call (thread time), {difficulty} iterations, p50 / mean")
    out.add_column("bits", justify="right")
    for column in ("derive a discriminant", "prove (derivation included)", "verify (given)"):
        out.add_column(column, justify="right")
    for bits, costs in results.items():
        cells = [
            f"{statistics.median(costs[k]):.1f} / {statistics.mean(costs[k]):.1f}"
            for k in ("derive", "prove", "verify")
        ]
        out.add_row(str(bits), *cells)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vdf_cost", description=__doc__)
    parser.add_argument("--difficulty", type=int, default=DEFAULT_DIFFICULTY)
    parser.add_argument("--samples", type=int, default=40)
    args = parser.parse_args(argv)
    results = {bits: measure(bits, args.difficulty, args.samples) for bits in VDF_BITS}
    Console().print(table(results, args.difficulty))
    return 0


if __name__ == "__main__":
    sys.exit(main())
