"""The p2pnode command in subprocesses: help, every error path in one line, a peer's life."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest

from p2pnode.cli import INTERRUPTED, READER_GONE, build_parser, quiet_exit
from p2pnode.peer.status_read import parse_status

LOOPBACK_0 = "/ip4/127.0.0.1/tcp/0"
ANOTHER_PEER = "12D3KooWKu3SHG1t1ibfrQ5nr8718pxM6aFQ9anZvzcjaat4wPkR"
COMMANDS = [
    "init",
    "run",
    "testnet",
    "config",
    "status",
    "dashboard",
    "submit",
    "mutation",
    "frames",
    "id",
]


def p2pnode(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "p2pnode", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def first_lines(stream: IO[str], count: int, timeout: float = 60) -> list[str]:
    """The next `count` lines of a child's output; fails, instead of hanging, if they never come."""
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(stream.readline() for _ in range(count)), daemon=True
    )
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"only {len(lines)} of {count} lines within {timeout} s"
    return lines


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A user error: non-zero exit, nothing on stdout, one line on stderr naming the problem."""
    assert result.returncode != 0, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_every_command_has_help(command: str) -> None:
    result = p2pnode(*([command] if command else []), "--help")
    assert result.returncode == 0
    assert "usage: p2pnode" in result.stdout


def test_help_says_which_flags_repeat() -> None:
    """`dashboard --help` did not say that --home and --url repeat, nor `run --help` --bootstrap
    and --set: every flag that may be given again says so."""
    parser = build_parser()
    (commands,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    repeating = [
        (name, action)
        for name, sub in commands.choices.items()
        for action in sub._actions
        if isinstance(action, argparse._AppendAction)
    ]
    assert {name for name, _ in repeating} >= {"dashboard", "run"}
    for name, action in repeating:
        assert "(repeatable)" in (action.help or ""), (name, action.option_strings)


def test_output_to_a_reader_that_went_away_ends_quietly(tmp_path: Path) -> None:
    """`p2pnode frames … | head` ended in a BrokenPipeError traceback. The reader is gone
    before the command writes a byte, so the write fails whatever the timing."""
    reader, writer = os.pipe()
    os.close(reader)
    command = ["testnet", "--peers", "2", "--out", str(tmp_path / "net"), "--generate-only"]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "p2pnode", *command],
            stdout=writer,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert result.returncode == READER_GONE
    assert result.stderr == ""


@pytest.mark.parametrize(
    "err",
    [
        KeyboardInterrupt(),
        BaseExceptionGroup("nursery", [KeyboardInterrupt()]),
        BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [KeyboardInterrupt()])]),
    ],
)
def test_ctrl_c_ends_a_command_quietly_also_from_inside_a_nursery(err: BaseException) -> None:
    """Ctrl-C on `p2pnode dashboard` printed a 30-line `BaseExceptionGroup … KeyboardInterrupt`:
    trio hands it over in an exception group, which `except KeyboardInterrupt` missed."""
    assert quiet_exit(err, "dashboard") == INTERRUPTED
    assert quiet_exit(BaseExceptionGroup("other", [RuntimeError("bug")]), "dashboard") is None


def test_init_makes_a_home_and_refuses_to_overwrite_its_key(tmp_path: Path) -> None:
    home = tmp_path / "alice"
    result = p2pnode(
        "init", "--home", str(home), "--network", "demo", "--difficulty", "200", "--vdf-bits", "512"
    )
    assert result.returncode == 0, result.stderr
    assert "peer id: 12D3KooW" in result.stdout
    assert "genesis sha256" in result.stdout
    assert stat.S_IMODE((home / "identity.key").stat().st_mode) == 0o600
    genesis = json.loads((home / "genesis.json").read_text())
    assert genesis["network"] == "demo"
    assert genesis["difficulty"] == 200
    assert genesis["vdf_bits"] == 512
    key = (home / "identity.key").read_bytes()
    one_line_error(p2pnode("init", "--home", str(home)), "already exists")
    assert (home / "identity.key").read_bytes() == key
    ident = p2pnode("id", "--home", str(home))
    assert ident.returncode == 0
    assert "/ip4/127.0.0.1/tcp/" in ident.stdout
    assert "/p2p/12D3KooW" in ident.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["init", "--home", "{tmp}/x", "--listen", "not-a-multiaddr"], "invalid multiaddr"),
        (["init", "--home", "{tmp}/x", "--network", "Bad Name"], "network name"),
        (["init", "--home", "{tmp}/x", "--network", "ok", "--difficulty", "0"], "difficulty"),
        (["init", "--home", "{tmp}/x", "--difficulty", "-5"], "give --network too"),
        (["init", "--home", "{tmp}/x", "--vdf-bits", "512"], "give --network too"),
        (["init", "--home", "{tmp}/x", "--network", "ok", "--vdf-bits", "768"], "invalid choice"),
        (["run", "--home", "{tmp}/nobody"], "no key"),
        (["id", "--home", "{tmp}/nobody"], "no key"),
        (["testnet", "--peers", "0"], "--peers"),
        (["testnet", "--peers", "4", "--base-port", "80"], "--base-port must be 0 or"),
        (["testnet", "--peers", "2", "--base-port", "0", "--generate-only"], "name their ports"),
        (["testnet", "--peers", "nine"], "invalid int"),
        (["status", "--url", "http://127.0.0.1:9"], "cannot reach"),
        (["status", "--url", "ftp://somewhere"], "http://host:port"),
        (["status", "--home", "{tmp}/nobody"], "no peer is running in"),
        (["submit", "--url", "http://127.0.0.1:9", "hello"], "cannot reach"),
        (["submit", "--url", "http://127.0.0.1:9", "hi", "--file", "-"], "not allowed with"),
        (["submit", "--url", "http://127.0.0.1:9"], "one of the arguments data --file"),
        (["submit", "--url", "http://127.0.0.1:9", "--file", "{tmp}/none"], "cannot read"),
        (["mutation", "--url", "http://127.0.0.1:9", "xyz"], "'xyz' is not a mutation id"),
        (["mutation", "--url", "http://127.0.0.1:9", "ab" * 32], "cannot reach"),
        (["frames", "--url", "http://127.0.0.1:9"], "cannot reach"),
        (["bogus"], "invalid choice"),
        (["status"], "required"),
    ],
)
def test_user_errors_are_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    one_line_error(p2pnode(*(a.replace("{tmp}", str(tmp_path)) for a in args)), needle)


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ({"config": "[node\n"}, "not valid TOML"),
        ({"config": "[node]\necho = 3\n"}, "node.echo"),
        ({"config": "[consensus.timeouts]\nvoting = -1\n"}, "voting"),
        ({"config": "[node]\nlistne = []\n"}, "node.listne"),
        ({"env": "P2PNODE_NODE_ECHO=maybe"}, "P2PNODE_NODE_ECHO"),
        ({"env": "P2PNODE_CONSENSUS_LIMITS_RANKS_AHEAD=x"}, "P2PNODE_CONSENSUS_LIMITS_RANKS_AHEAD"),
        ({"flag": "consensus.timeouts.nope=1"}, "consensus.timeouts.nope"),
        ({"flag": "node.status=0.0.0.0:80"}, "node.status"),
        ({"flag": "--bootstrap=/ip4/127.0.0.1/tcp/1"}, "peer's id"),
        ({"flag": "node.bootstrap=/ip4/127.0.0.1/tcp/4009"}, "node.bootstrap"),
        ({"config": '[node]\nbootstrap = ["/ip4/127.0.0.1/tcp/4009"]\n'}, "peer's id"),
        ({"env": "P2PNODE_NODE_BOOTSTRAP=/ip4/127.0.0.1/tcp/4009"}, "peer's id"),
        ({"config": '[node]\nbootstrap = ["/nowhere/1"]\n'}, "not a multiaddr"),
        ({"flag": "--listen=/nowhere"}, "invalid multiaddr"),
        ({"flag": "--listen=/dns4/example.invalid/tcp/4001"}, "node.listen"),
        ({"flag": "consensus.minimum_provers=3"}, "only 1 provers"),
        ({"flag": "node.log_format=xml"}, "node.log_format must be 'text' or 'json'"),
        ({"env": "P2PNODE_NODE_LOG_TO=stdout", "flag": "--dashboard"}, "over the dashboard"),
    ],
)
def test_bad_settings_are_named_in_one_line(solo: Path, setup: dict[str, str], needle: str) -> None:
    args = ["run", "--home", str(solo)]
    env: dict[str, str] = {}
    if "config" in setup:
        (solo / "config.toml").write_text(setup["config"])
    if "env" in setup:
        name, value = setup["env"].split("=", 1)
        env[name] = value
    if "flag" in setup:
        flag = setup["flag"]
        args += [flag] if flag.startswith("--") else ["--set", flag]
    one_line_error(p2pnode(*args, env=env, timeout=30), needle)


def run_solo(home: Path) -> subprocess.Popen[str]:
    """`p2pnode run` of a home, its output read as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_peer_runs_serves_status_takes_mutations_and_stops_on_sigterm(solo: Path) -> None:
    process = run_solo(solo)
    try:
        assert process.stdout is not None
        lines = first_lines(process.stdout, 3)
        assert lines[0].startswith("peer id: 12D3KooW")
        assert lines[1].startswith("listening on /ip4/127.0.0.1/tcp/")
        url = (solo / "status.url").read_text().strip()
        status = json.loads(p2pnode("status", "--url", url, "--json").stdout)
        for key in ("peer_id", "role", "state", "finalized_rank", "finalized_id", "recent"):
            assert key in status
        assert {"peers", "counters", "sync_rejected"} <= set(status)
        assert status["role"] == "prover"
        # A real status reads back whole into the record, which writes it out unchanged.
        seen = parse_status(status, url)
        assert seen.problems == ()
        assert seen.to_json() == status
        submitted = p2pnode("submit", "--home", str(solo), "hello world", "--wait")
        assert submitted.returncode == 0, submitted.stderr
        mutation = submitted.stdout.split()[1]
        rank = submitted.stdout.split("final in rank ")[1].strip()
        listing = p2pnode("frames", "--url", url, "--from", rank).stdout
        assert f"rank {rank:>6}" in listing
        assert mutation in listing
        ranks = [
            int(line.split()[1])
            for line in p2pnode("frames", "--url", url, "--from", "1").stdout.splitlines()
            if line.startswith("rank")
        ]
        assert ranks == sorted(ranks)
        assert ranks[0] == 1
        one_line_error(p2pnode("frames", "--url", url, "--from", "999999"), "the tip is")
        _follow_mutations(solo, url, mutation)
        human = p2pnode("status", "--home", str(solo)).stdout
        assert "final     rank" in human
        metrics = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import urllib.request as u; print(u.urlopen('{url}/metrics').read().decode())",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "p2pnode_consensus_rank " in metrics
        assert 'p2pnode_p2p_messages_total{topic="votes",verdict="accept"}' in metrics
        assert "# TYPE p2pnode_p2p_limited_total counter" in metrics
        assert "# TYPE p2pnode_p2p_dropped_total counter" in metrics
        assert "p2pnode_consensus_round_duration_seconds_bucket" in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    # One banner line per start: a restart shows in the log, with what started.
    banners = [line for line in (solo / "node.log").read_text().splitlines() if "started" in line]
    assert len(banners) == 1
    assert f"pid {process.pid}: peer 12D3KooW" in banners[0]
    assert "prover of network" in banners[0]
    assert "genesis sha256 " in banners[0]
    assert f"status {url}" in banners[0]
    # Stopped: said so, with when it was last seen, not "cannot reach http://…".
    stopped = p2pnode("status", "--home", str(solo))
    one_line_error(stopped, f"no peer is running in {solo} (last seen 20")


def _follow_mutations(home: Path, url: str, final: str) -> None:
    """A file of mutations waited for, and `p2pnode mutation` of a final and an unknown one
    (submit --file printed counts only and refused --wait; no command told where one was)."""
    batch = home / "batch.txt"
    batch.write_text("first\nsecond\nhello world\n")
    waited = p2pnode("submit", "--url", url, "--file", str(batch), "--wait", "--json")
    assert waited.returncode == 0, waited.stderr
    results = json.loads(waited.stdout)["results"]
    assert [r["admission"] for r in results] == ["added", "added", "duplicate"]
    assert all(isinstance(r["rank"], int) for r in results)
    assert results[2]["id"] == final
    told = p2pnode("mutation", "--url", url, final)
    assert told.returncode == 0
    assert told.stdout.startswith(f"mutation {final}: final in rank {results[2]['rank']}, frame ")
    unknown = p2pnode("mutation", "--home", str(home), "ab" * 32)
    assert (unknown.returncode, unknown.stdout) == (
        1,
        f"mutation {'ab' * 32}: unknown to the peer (never submitted to it, or long gone)\n",
    )


def test_a_peer_logging_json_to_stdout_writes_only_json_lines_there(solo: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(solo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "P2PNODE_NODE_LOG_TO": "stdout", "P2PNODE_NODE_LOG_FORMAT": "json"},
    )
    try:
        assert process.stderr is not None
        assert process.stdout is not None
        assert first_lines(process.stderr, 1)[0].startswith("peer id: 12D3KooW")
        banner = json.loads(first_lines(process.stdout, 1)[0])
        assert banner["message"].startswith("started p2pnode")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    records = [json.loads(line) for line in process.stdout.read().splitlines()]
    messages = [record["message"] for record in records]
    assert "signal 15: stopping" in messages
    assert messages.index("stopped") > messages.index("signal 15: stopping"), "the banner's pair"
    assert not (solo / "node.log").exists()


def _log_lines_with(home: Path, *needles: str, timeout: float = 30) -> list[str]:
    """The lines of the home's node.log holding each needle, once all are there."""
    deadline = time.monotonic() + timeout
    while True:
        text = (home / "node.log").read_text() if (home / "node.log").exists() else ""
        found = [next((ln for ln in text.splitlines() if n in ln), None) for n in needles]
        if all(found) or time.monotonic() > deadline:
            assert all(found), f"{needles} not all in {home / 'node.log'}:\n{text}"
            return [line for line in found if line is not None]
        time.sleep(0.05)


def test_bootstrap_problems_are_told_in_a_line_and_a_foreign_network_stops_the_peer(
    solo: Path, tmp_path: Path
) -> None:
    """Dial failures printed py-libp2p's lines; a bootstrap peer of another network went
    unnoticed, and the peer ran alone."""
    process = run_solo(solo)
    other = tmp_path / "other"
    assert p2pnode("init", "--home", str(other), "--network", "other").returncode == 0
    refused = socket.socket()
    try:
        assert process.stdout is not None
        address = first_lines(process.stdout, 3)[1].split()[2]
        solo_id = address.split("/p2p/")[1]
        # Bound, never listening: a dial to it is refused, and the port stays ours.
        refused.bind(("127.0.0.1", 0))
        refused_port = refused.getsockname()[1]
        wrong_id = address.replace(solo_id, ANOTHER_PEER)
        unreachable = [
            "--bootstrap",
            wrong_id,
            "--bootstrap",
            f"/ip4/127.0.0.1/tcp/{refused_port}/p2p/{solo_id}",
        ]
        retrying = subprocess.Popen(
            [sys.executable, "-m", "p2pnode", "run", "--home", str(other), *unreachable],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            lines = _log_lines_with(other, "connection refused", f"not {ANOTHER_PEER}")
        finally:
            retrying.send_signal(signal.SIGTERM)
            assert retrying.wait(timeout=20) == 0
        assert lines[0].endswith(
            f"cannot reach 127.0.0.1:{refused_port}: connection refused (retrying)"
        )
        # One line per address and reason: not py-libp2p's ERROR lines per attempt.
        assert " ERROR " not in (other / "node.log").read_text()
        host_port = address.split("/")[2] + ":" + address.split("/")[4]
        assert lines[1].endswith(f"{host_port} is {solo_id}, not {ANOTHER_PEER} (retrying)")
        foreign = p2pnode("run", "--home", str(other), "--bootstrap", address, timeout=60)
        assert foreign.returncode == 1
        assert foreign.stderr.strip().splitlines() == [
            f"p2pnode run: no bootstrap peer is of this network: bootstrap peer {solo_id} at "
            f"{host_port} serves 'solo', not 'other'"
        ]
    finally:
        refused.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_id_of_a_running_peer_prints_what_it_listens_on(solo: Path) -> None:
    """`p2pnode id` printed the address of the config, not the one the running peer chose."""
    configured = p2pnode("id", "--home", str(solo)).stdout
    process = subprocess.Popen(
        [sys.executable, "-m", "p2pnode", "run", "--home", str(solo), "--listen", LOOPBACK_0],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = first_lines(process.stdout, 3)  # the third once its status is served
        listening = lines[1].split()[2]
        assert listening.startswith("/ip4/127.0.0.1/tcp/")
        assert listening not in configured
        running = p2pnode("id", "--home", str(solo)).stdout
        assert listening in running
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


def test_a_second_run_of_a_home_or_on_a_taken_port_is_one_line_and_leaves_the_peer_be(
    solo: Path, tmp_path: Path
) -> None:
    process = run_solo(solo)
    try:
        assert process.stdout is not None
        listening = first_lines(process.stdout, 2)[1].split()[-1]
        url = (solo / "status.url").read_text()
        one_line_error(
            p2pnode("run", "--home", str(solo)),
            str(solo),
            f"in use by another p2pnode run (pid {process.pid})",
        )
        other = tmp_path / "other"
        made = p2pnode("init", "--home", str(other), "--network", "other", "--difficulty", "100")
        assert made.returncode == 0, made.stderr
        port = listening.split("/p2p/")[0]
        one_line_error(
            p2pnode("run", "--home", str(other), "--listen", port),
            f"cannot listen on {port}",
            "in use",
        )
        assert process.poll() is None
        assert (solo / "status.url").read_text() == url
        status = json.loads(p2pnode("status", "--url", url.strip(), "--json").stdout)
        assert status["addrs"] == [listening]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0


SCRIPT = Path(sys.executable).parent / "p2pnode"
if SCRIPT.is_relative_to(Path.cwd()):  # the command that works from here, .venv/bin/p2pnode
    SCRIPT = SCRIPT.relative_to(Path.cwd())


def test_testnet_generate_only_writes_homes_that_run_by_hand(tmp_path: Path) -> None:
    out = tmp_path / "net"
    result = p2pnode("testnet", "--peers", "3", "--out", str(out), "--generate-only")
    assert result.returncode == 0, result.stderr
    for index in range(3):
        home = out / f"peer{index}"
        assert (home / "identity.key").exists()
        assert (home / "genesis.json").read_text() == (out / "peer0" / "genesis.json").read_text()
        assert f"{SCRIPT} run --home {home}" in result.stdout
    config = (out / "peer2" / "config.toml").read_text()
    assert "/p2p/12D3KooW" in config, "the bootstrap address of peer0 is filled in"
    genesis = json.loads((out / "peer0" / "genesis.json").read_text())
    assert result.stdout.splitlines()[:2] == [
        f"created 3 prover homes in {out}",
        f"network {genesis['network']}, genesis sha256 "
        + hashlib.sha256((out / "peer0" / "genesis.json").read_bytes()).hexdigest(),
    ]
    again = p2pnode("testnet", "--peers", "3", "--out", str(out), "--generate-only")
    assert "reusing the 3 prover homes" in again.stdout
    elsewhere = ["--base-port", "5000", "--generate-only"]
    one_line_error(
        p2pnode("testnet", "--peers", "3", "--out", str(out), *elsewhere),
        "listen from port 4001, not 5000",
    )
    alone = p2pnode("testnet", "--peers", "1", "--out", str(tmp_path / "one"), "--generate-only")
    assert "created 1 prover home in" in alone.stdout
    one_line_error(
        p2pnode("testnet", "--peers", "2", "--out", str(out), "--generate-only"), "something else"
    )


@pytest.mark.parametrize("server", ["status", "metrics"])
def test_a_busy_status_or_metrics_port_is_one_line_before_the_peer_starts(
    solo: Path, server: str
) -> None:
    """Over the metrics port, the peer had run consensus and printed its addresses first."""
    with closing(socket.socket()) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = p2pnode("run", "--home", str(solo), "--set", f"node.{server}=127.0.0.1:{port}")
    one_line_error(result, f"cannot serve {server} on 127.0.0.1:{port}", "in use")
    assert result.stdout == "", "nothing started, nothing said"
    assert not (solo / "status.url").exists()


def test_a_failed_init_leaves_no_home(tmp_path: Path) -> None:
    home = tmp_path / "bad"
    one_line_error(p2pnode("init", "--home", str(home), "--network", "Bad Name"), "network name")
    assert not home.exists()
    assert p2pnode("init", "--home", str(home), "--network", "good").returncode == 0
