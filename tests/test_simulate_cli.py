"""The `scripts/simulate` front end: job order, interruption, table and exit codes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from p2pnode.sim import cli
from p2pnode.sim.world import Outcome


def outcome(seed: int, *, safety: int = 0, scenario: str = "calm") -> Outcome:
    return Outcome(
        scenario=scenario,
        provers=4,
        seed=seed,
        echo=seed % 2 == 0,
        finalized=5,
        safety_violations=safety,
        liveness_failure=False,
        recovery=1.0,
        peak_stored=1,
        memory_bound=10,
        equivocations=0,
        virtual_time=10.0,
        chain=(),
    )


def test_jobs_take_seeds_as_the_outer_loop_and_alternate_self_delivery() -> None:
    assert list(cli.jobs(["a", "b"], [4, 7], range(2))) == [
        ("a", 4, 0, True),
        ("a", 7, 0, True),
        ("b", 4, 0, True),
        ("b", 7, 0, True),
        ("a", 4, 1, False),
        ("a", 7, 1, False),
        ("b", 4, 1, False),
        ("b", 7, 1, False),
    ]


def test_an_interrupt_keeps_the_runs_that_finished(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted() -> Iterator[Outcome]:
        yield outcome(0)
        yield outcome(1, safety=1)
        yield outcome(2)
        raise KeyboardInterrupt

    done = cli.collect(interrupted(), total=10, progress_every=2)
    assert [o.seed for o in done] == [0, 1, 2]
    assert capsys.readouterr().err == "2/10 runs, 1 failing\n"


def test_a_clean_run_prints_the_table_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--seeds", "2", "--scenario", "calm", "--provers", "4", "--jobs", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "calm" in out
    assert "2 runs in" in out
    assert "FAIL" not in out


def test_a_failing_seed_is_printed_reproducibly_and_exits_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_run_job", lambda job: outcome(job[2], safety=int(job[2] == 1)))
    assert cli.main(["--seeds", "3", "--scenario", "calm", "--provers", "4", "--jobs", "1"]) == 1
    out = capsys.readouterr().out
    assert "FAIL calm n=4 seed=1: safety=1" in out
    assert "--scenario calm --provers 4 --first-seed 1 --seeds 1 --jobs 1" in out
    assert "seed=0" not in out
    assert "seed=2" not in out


def test_an_interrupted_run_exits_two(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "simulate", lambda job_list, workers, progress: [outcome(0)])
    assert cli.main(["--seeds", "3", "--scenario", "calm", "--provers", "4", "--jobs", "1"]) == 2
    assert "INTERRUPTED: 2 runs not done" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--seeds", "--jobs", "--provers"])
def test_non_positive_counts_are_refused(flag: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([flag, "0"])
    assert exit_info.value.code == 2
