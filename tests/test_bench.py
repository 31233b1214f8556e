"""`scripts/bench`: a short run on real peer processes writes the table and the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

from benchmarks.bench_run import PHASES, mutation


def test_the_benchmark_s_mutations_are_distinct_and_100_bytes() -> None:
    made = [mutation(i) for i in range(1000)]
    assert {len(m) for m in made} == {100}
    assert len(set(made)) == len(made)


async def test_a_short_run_writes_every_figure_per_peer_count(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks.bench", "--peers", "4", "--rounds", "4"]
    with trio.fail_after(240):
        done = await trio.run_process(
            [*command, "--rate", "200", "--json", str(out)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert "rounds/s" in done.stdout.decode()
    (result,) = json.loads(out.read_text())
    assert result["peers"] == 4
    assert result["rounds"] >= 4
    assert result["rounds_per_s"] > 0
    assert result["cpu_ms_per_round"] > 0
    assert 0 < result["round_p50_ms"] <= result["round_p99_ms"]
    assert set(result["phase_p50_ms"]) == set(PHASES)
    assert result["submitted_per_s"] > 0
    assert result["peak_rss_mb"] >= result["rss_end_mb"] > 0
    assert result["rss_at_1000_mb"] is None  # a soak of 4 rounds never reaches the mark


def test_bad_arguments_are_one_line_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--rounds must be positive" in done.stderr
