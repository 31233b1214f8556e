"""`scripts/bench`: a short run on real peer processes writes the table and the JSON."""

from __future__ import annotations

import json
import os
import signal
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


def _peers(pid: int) -> list[int]:
    """The peer processes `pid` started (not, say, the ldconfig its imports ran)."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        children = [int(child) for child in f.read().split()]
    peers = []
    for child in children:
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if b"p2pnode" in command and b"run" in command:
            peers.append(child)
    return peers


async def test_sigterm_stops_the_bench_its_peers_and_removes_its_folder(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "benchmarks.bench", "--peers", "1", "--seconds", "600"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    with trio.fail_after(120):
        bench = await trio.lowlevel.open_process(command, env=env, stderr=subprocess.PIPE)
        try:
            while not (peers := _peers(bench.pid)):
                await trio.sleep(0.05)  # nothing to await: the bench starts its peer by itself
            bench.send_signal(signal.SIGTERM)
            assert await bench.wait() == 130
        finally:
            if bench.returncode is None:
                bench.kill()
                await bench.wait()
        assert bench.stderr is not None
        assert b"interrupted" in await bench.stderr.receive_some()
    assert not any(Path(f"/proc/{peer}").exists() for peer in peers)
    assert list(tmp_path.iterdir()) == []
