"""The chaos harness: its checks over synthetic data, its verdict, its arguments, and real
namespaces joined by a bridge, split in two and joined again."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from rich.console import Console

from p2pnode.chaos import checks, cli, report, stores
from p2pnode.chaos.checks import Check
from p2pnode.chaos.cluster import Cluster, write_homes
from p2pnode.chaos.faults import RESUME_BOUND, Event, Fault
from p2pnode.chaos.netns import Fabric, Link, ip, namespace_socket, namespaces
from p2pnode.chaos.stores import Signed
from p2pnode.chaos.strangers import kept_rate
from p2pnode.peer.home import KEY_FILE
from p2pnode.peer.status_read import parse_status
from tests.status_sample import SAMPLE

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


# -- frames agree -------------------------------------------------------------------------


def test_chains_that_agree_on_every_shared_rank_pass() -> None:
    check = checks.frames_agree({"peer0": {1: A, 2: B}, "peer1": {1: A, 2: B, 3: C}})
    assert check.ok
    assert "2 shared ranks" in check.detail


def test_two_frames_at_one_rank_fail_and_name_the_rank_and_peers() -> None:
    chains = {"peer0": {1: A, 2: B}, "peer1": {1: A, 2: C}, "peer2": {2: B}}
    check = checks.frames_agree(chains)
    assert not check.ok
    assert "rank 2" in check.detail
    assert "peer0+peer2" in check.detail
    assert "peer1" in check.detail
    assert "rank 1" not in check.detail


def test_a_rank_only_one_peer_holds_is_not_compared() -> None:
    assert checks.frames_agree({"peer0": {5: A}, "peer1": {6: B}}).ok


# -- signed once --------------------------------------------------------------------------


def test_one_vote_and_one_precommit_per_attempt_pass() -> None:
    log = [
        Signed("vote", 1, 0, A),
        Signed("precommit", 1, 0, A),
        Signed("vote", 1, 1, B),  # a later attempt may vote otherwise
        Signed("vote", 1, 1, B),  # a re-sent vote is logged again: the same frame
    ]
    check = checks.signed_once({"peer0": log, "peer1": []})
    assert check.ok
    assert "4 signatures" in check.detail


def test_two_different_votes_in_one_attempt_fail() -> None:
    log = [Signed("vote", 7, 2, A), Signed("vote", 7, 2, B), Signed("precommit", 7, 2, A)]
    check = checks.signed_once({"peer0": [], "peer3": log})
    assert not check.ok
    assert "peer3" in check.detail
    assert "rank 7 attempt 2" in check.detail
    assert "vote" in check.detail


def test_two_different_precommits_in_one_attempt_fail() -> None:
    log = [Signed("precommit", 3, 0, A), Signed("precommit", 3, 0, None)]
    assert not checks.signed_once({"peer1": log}).ok


def test_a_store_without_the_signed_table_fails_with_its_name() -> None:
    check = checks.signed_once({"peer0": [], "peer1": None, "peer2": None})
    assert not check.ok
    assert "no `signed` table" in check.detail
    assert "peer1, peer2" in check.detail
    assert "peer0" not in check.detail


# -- the other checks ---------------------------------------------------------------------


def test_nothing_lost_compares_ranks_before_and_after_a_restart() -> None:
    assert checks.nothing_lost("peer2", 40, 40).ok
    assert checks.nothing_lost("peer2", 40, 44).ok
    lost = checks.nothing_lost("peer2", 40, 39)
    assert not lost.ok
    assert "rank 40 before the kill, 39 after" in lost.detail


def test_resume_within_over_and_without_the_bound() -> None:
    assert checks.resumed("pause", 9.9, 10.0, 30.0).ok
    slow = checks.resumed("pause", 10.1, 10.0, 30.0)
    assert not slow.ok
    assert "10.1 s" in slow.detail
    never = checks.resumed("partition", None, 10.0, 30.0)
    assert not never.ok
    assert "30 s" in never.detail


def test_reconnect_within_over_and_without_the_bound() -> None:
    assert checks.reconnected("isolate peer1", 2.0, 10.0).ok
    assert "10.5 s" in checks.reconnected("isolate peer1", 10.5, 10.0).detail
    assert not checks.reconnected("isolate peer1", None, 10.0).ok


def test_a_flood_must_leave_half_the_control_rate() -> None:
    assert kept_rate("graft-eclipse", 2.0, 1.0).ok
    slow = kept_rate("graft-eclipse", 2.0, 0.9)
    assert not slow.ok
    assert "0.90 rounds/s against 2.00" in slow.detail
    assert not kept_rate("bad-signatures", 0.0, 0.0).ok, "no control rate, nothing shown"


def test_a_rank_finalized_without_a_quorum_fails() -> None:
    assert checks.no_progress_without_quorum(12, 12).ok
    assert not checks.no_progress_without_quorum(12, 13).ok


def test_a_peer_that_exited_fails_alive_with_its_log_tail() -> None:
    assert checks.alive({}, {}).ok
    check = checks.alive({"peer1": 1}, {"peer1": "    engine stopped: boom"})
    assert not check.ok
    assert "peer1 exited with 1" in check.detail
    assert "engine stopped: boom" in check.evidence


def test_a_peer_that_needed_sigkill_fails_the_clean_stop() -> None:
    assert checks.stopped({"peer0": 0, "peer1": 0}).ok
    check = checks.stopped({"peer0": 0, "peer1": -9})
    assert not check.ok
    assert "peer1 needed SIGKILL" in check.detail


def test_a_peer_status_is_described_in_one_line() -> None:
    line = checks.describe("peer3", SAMPLE)
    assert "\n" not in line
    assert line.startswith(f"peer3: {SAMPLE.state} for {SAMPLE.state_time} s")
    assert "rank 7 attempt 0: 4 live, 2 proposals, 0 votes (quorum 3), lock none; 3 peers" in line
    taken = next(v.accept for v in SAMPLE.counters if v.topic == "votes")
    assert f"votes mesh 3, {taken} in, confirmations mesh 3, " in line
    assert "unread" not in line
    assert checks.describe("peer1", parse_status({})).startswith("peer1: ? for 0.0 s")
    votes = {"a": "aaaa1111ff", "b": "bbbb2222ff", "c": "aaaa1111ff"}
    split = parse_status({"round": {"votes_for": votes}})
    assert "3 votes: 2 for aaaa1111, 1 for bbbb2222 (quorum" in checks.describe("peer2", split)
    assert "; unread finalized_rank, " in checks.describe("peer2", split)


# -- the verdict ----------------------------------------------------------------------------


def _event(fault: Fault, *results: bool) -> Event:
    found = tuple(Check(f"check{i}", ok, "why") for i, ok in enumerate(results))
    return Event(fault, "peer1", 12.0, 30.0, 2.5, found)


def test_a_complete_run_with_every_check_passed_passes() -> None:
    events = [_event(Fault.START, True), _event(Fault.PAUSE, True, True), _event(Fault.END, True)]
    result = report.verdict(events, wall=75, seed=9, interrupted=False)
    assert result.ok
    assert result.line.startswith("PASS")
    assert result.line == "PASS: 1 fault, all 4 checks passed in 1m15s (seed 9)"


def test_one_failed_check_fails_the_run_and_is_named() -> None:
    events = [_event(Fault.START, True), _event(Fault.KILL, True, False), _event(Fault.END, True)]
    result = report.verdict(events, wall=10, seed=1, interrupted=False)
    assert not result.ok
    assert result.line.startswith("FAIL: 1 of 4 checks failed (check1 x1)")
    assert report.failures(events) == ["FAIL kill -9 peer1 (+0m12s): check1: why"]


def test_an_interrupted_or_incomplete_run_does_not_pass() -> None:
    events = [_event(Fault.START, True), _event(Fault.KILL, True)]
    assert not report.verdict(events, wall=10, seed=1, interrupted=True).ok
    assert not report.verdict(events, wall=10, seed=1, interrupted=False).ok
    assert not report.verdict([], wall=1, seed=1, interrupted=False).ok


def test_the_table_has_a_row_per_event_and_the_json_every_check() -> None:
    events = [_event(Fault.START, True), _event(Fault.PARTITION, False), _event(Fault.END, True)]
    console = Console(width=140, record=True)
    console.print(report.table(events))
    text = console.export_text()
    rows = [line for line in text.splitlines() if "partition peer1" in line]
    assert len(rows) == 1
    assert "0/1 ✗ check0" in rows[0]
    assert "FAIL" in rows[0]
    result = report.verdict(events, wall=5, seed=3, interrupted=False)
    document = report.to_json(events, result, wall=5, seed=3)
    assert document["ok"] is False
    listed = document["events"]
    assert isinstance(listed, list)
    assert [e["fault"] for e in listed] == ["start", "partition", "end"]
    assert listed[1]["checks"] == [{"name": "check0", "ok": False, "detail": "why", "evidence": ""}]


# -- the schedule of a --minutes run --------------------------------------------------------


def test_a_long_run_cycles_and_a_short_remainder_becomes_kill_or_the_end() -> None:
    assert cli.next_phase(Fault.PAUSE, 600) == (Fault.PAUSE, 30.0)
    assert cli.next_phase(Fault.KILL, 600) == (Fault.KILL, 30.0)
    assert cli.next_phase(Fault.PARTITION, 30 + RESUME_BOUND - 1) == (Fault.KILL, 30.0)
    assert cli.next_phase(Fault.KILL, 12) == (Fault.KILL, 12)
    assert cli.next_phase(Fault.PAUSE, 4) is None


def test_the_faults_are_picked_by_name_in_the_order_given() -> None:
    assert cli._faults("flap,kill,outsider") == (Fault.FLAP, Fault.KILL, Fault.OUTSIDER)
    assert cli._faults("cut-off, pause") == (Fault.CUT_OFF, Fault.PAUSE)


# -- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments --quick --minutes is required"),
        (["--quick", "--minutes", "3"], "not allowed with argument"),
        (["--minutes", "0"], "--minutes must be positive"),
        (["--minutes", "soon"], "invalid float value"),
        (["--quick", "--seed", "x"], "invalid int value"),
        (["--quick", "--json", "/no/such/folder/out.json"], "no folder /no/such/folder"),
        (["--quick", "--faults", "isolate,earthquake"], "not a fault"),
        (["--quick", "--outage", "0"], "--outage must be positive"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_an_out_folder_that_holds_something_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "precious").write_text("keep me")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--quick", "--out", str(tmp_path)])
    assert stopped.value.code == 2
    assert "is not empty" in capsys.readouterr().err
    assert (tmp_path / "precious").read_text() == "keep me"


# -- reading stores -------------------------------------------------------------------------


def _store(path: Path, *, signed: bool) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE frames (rank INTEGER PRIMARY KEY, id BLOB, data BLOB)")
        db.executemany("INSERT INTO frames VALUES (?, ?, ?)", [(1, A, b"x"), (2, B, b"y")])
        if signed:
            db.execute("CREATE TABLE signed (kind TEXT, rank INTEGER, attempt INTEGER, frame BLOB)")
            db.execute("INSERT INTO signed VALUES ('vote', 2, 0, ?)", (B,))
    os.sync()


def test_stores_are_read_without_being_written(tmp_path: Path) -> None:
    with_log, without = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    _store(with_log, signed=True)
    _store(without, signed=False)
    assert stores.final_rank(with_log) == 2
    assert stores.frame_ids(with_log) == {1: A, 2: B}
    assert stores.signed_log(with_log) == [Signed("vote", 2, 0, B)]
    assert stores.signed_log(without) is None
    with pytest.raises(stores.StoreReadError, match="no store"):
        stores.final_rank(tmp_path / "absent.sqlite")
    assert not (tmp_path / "absent.sqlite").exists()


# -- real namespaces -----------------------------------------------------------------------


async def _echo_across(server: Link, client: Link, port: int) -> bytes:
    """Connect from the client's namespace to the server's address; what comes back."""
    listener = trio.socket.from_stdlib_socket(namespace_socket(server.namespace))
    with listener:
        await listener.bind((server.address, port))
        listener.listen()
        dialer = trio.socket.from_stdlib_socket(namespace_socket(client.namespace))
        with dialer:
            await dialer.connect((server.address, port))
            accepted, _ = await listener.accept()
            with accepted:
                await accepted.send(b"across the bridge")
                return await dialer.recv(100)


async def _unreachable(target: Link, client: Link) -> bool:
    """True once the client's kernel reports the target's address unreachable (its ARP
    requests go unanswered: a few seconds)."""
    ip("-n", client.namespace, "neigh", "flush", "all")  # no cached way across
    dialer = trio.socket.from_stdlib_socket(namespace_socket(client.namespace))
    with dialer:
        try:
            await dialer.connect((target.address, 9))
        except OSError as err:
            return err.errno == errno.EHOSTUNREACH
    return False


async def test_namespaces_talk_split_two_ways_join_lose_a_cable_and_are_removed() -> None:
    fabric = Fabric(f"p2pt{os.getpid()}")
    made = {fabric.switch, f"{fabric.prefix}-o"} | {f"{fabric.prefix}-p{i}" for i in range(3)}
    try:
        with trio.fail_after(30):
            first, second, third = fabric.build(3)
            assert fabric.outsider is not None
            spaces = {first.namespace, second.namespace, third.namespace}
            assert made == {fabric.switch, fabric.outsider.namespace} | spaces
            assert made <= namespaces()
            assert len({first.address, second.address, third.address}) == 3
            assert await _echo_across(first, second, 4001) == b"across the bridge"
            assert await _echo_across(fabric.outsider, first, 4004) == b"across the bridge"
            fabric.split([second, third])
            assert await _echo_across(second, third, 4002) == b"across the bridge"
            assert await _unreachable(first, second)
            fabric.join([second, third])
            assert await _echo_across(first, third, 4003) == b"across the bridge"
            fabric.cut(third)
            assert await _unreachable(first, third)
            fabric.mend(third)
            assert await _echo_across(first, third, 4005) == b"across the bridge"
    finally:
        errors = fabric.remove()
    assert errors == []
    assert not made & namespaces()
    assert fabric.created == []


async def test_a_peer_that_cannot_start_or_never_serves_is_named_for_it(tmp_path: Path) -> None:
    """`wait_started` reports a peer that exits while starting (no key here) by its exit code,
    and one that runs but never answers by the time it waited."""
    fabric = Fabric(f"p2pw{os.getpid()}")
    cluster: Cluster | None = None
    try:
        with trio.fail_after(60):
            links = fabric.build(1)
            cluster = Cluster(fabric, await write_homes(tmp_path, links))
            [peer] = cluster.peers
            (peer.home.path / KEY_FILE).unlink()
            cluster.spawn(peer)
            assert await cluster.wait_started(peer, 30) == "exited with 1 while starting"
            # Runs, serves nothing: the harness's stop ends it.
            peer.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            assert await cluster.wait_started(peer, 0.5) == "no status within 0.5 s"
    finally:
        if cluster is not None:
            cluster.stop()
        errors = fabric.remove()
    assert errors == []
