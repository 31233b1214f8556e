"""Starting peer processes: a peer that cannot start is reported with what it said, and one
started in its own session ends with the process that started it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from p2pnode.local.homes import generate_testnet
from p2pnode.local.processes import PeerExitedError, serving, spawn, stop_all
from p2pnode.peer.home import Home, HomeError
from p2pnode.peer.status import PeerStatus
from tests.status_sample import OTHERS, SAMPLE


async def test_a_peer_that_exits_on_start_is_reported_with_its_last_words(tmp_path: Path) -> None:
    home, log = Home(tmp_path / "never-made"), tmp_path / "process.log"
    process = spawn(home, log=log)
    try:
        with trio.fail_after(60), pytest.raises(PeerExitedError, match=r"exited with 1: .*no key"):
            await serving(home, process, log)
    finally:
        stop_all([process])
    assert process.returncode == 1


async def test_a_home_held_by_a_peer_refuses_a_second_and_keeps_its_status_url(
    tmp_path: Path,
) -> None:
    home = generate_testnet(tmp_path, 1, base_port=0, difficulty=100)[1][0]
    home.status_url_file.write_text("http://127.0.0.1:1\n")
    assert not home.in_use()
    with home.locked():
        assert home.in_use()
        with (
            pytest.raises(HomeError, match=rf"in use by another p2pnode run \(pid {os.getpid()}\)"),
            home.locked(),
        ):
            pass
        log = tmp_path / "second.log"
        process = spawn(home, log=log)
        try:
            with trio.fail_after(60), pytest.raises(PeerExitedError, match="in use"):
                await serving(home, process, log)
        finally:
            stop_all([process])
        assert home.status_url_file.read_text() == "http://127.0.0.1:1\n", "the holder's own"
    assert not home.in_use(), "released when its holder leaves"


class Running:
    returncode = None

    def poll(self) -> None:
        return None


async def test_a_status_url_left_by_a_last_run_counts_only_once_its_own_peer_answers(
    tmp_path: Path, autojump_clock: object
) -> None:
    """A home keeps its status.url across runs (and so its port): until the new run serves,
    another process may answer there, and must not pass for the peer."""
    home = generate_testnet(tmp_path, 1, base_port=0, difficulty=100)[1][0]
    own = replace(SAMPLE, peer_id=home.keypair().prover.identity())
    answers = iter([replace(SAMPLE, peer_id=OTHERS[0]), replace(SAMPLE, peer_id=OTHERS[1]), own])

    async def read() -> PeerStatus:
        return next(answers)

    with trio.fail_after(10):
        assert await serving(home, Running(), read=read) == own


PARENT = """
import signal, sys, trio
from collections.abc import Iterator
from pathlib import Path
from p2pnode.local.processes import serving, spawn
from p2pnode.peer.home import Home
home = Home(Path(sys.argv[1]))
peer = spawn(home, "--listen", "/ip4/127.0.0.1/tcp/0", own_session=True,
             on_parent_death=signal.SIGKILL, inside=["nice", "-n", "0"])
trio.run(serving, home, peer)
print(peer.pid, flush=True)
"""


PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """Make this process the one orphaned descendants are handed to (so it can reap them and
    read how they ended), and give the role back after."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0)


async def test_a_peer_in_its_own_session_dies_with_the_process_that_started_it(
    tmp_path: Path,
) -> None:
    """The parent starts a peer through `nice` (which execs it), waits until it serves, and
    exits without stopping it: the peer, handed to this process, ends by the death signal it
    was given (SIGKILL here)."""
    _, [home] = generate_testnet(tmp_path / "net", 1, difficulty=200)
    with adopting_orphans():
        with trio.fail_after(60):
            parent = await trio.run_process(
                [sys.executable, "-c", PARENT, str(home.path)], capture_stdout=True
            )
        pid = int(parent.stdout)
        exited = os.pidfd_open(pid)  # an unreaped child: this works even once it has ended
        try:
            with trio.fail_after(30):
                await trio.lowlevel.wait_readable(exited)
        finally:
            os.close(exited)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # only if the test failed: it must not outlive it
            _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
