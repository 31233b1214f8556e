"""Peer processes on this machine: start `p2pnode run`, wait until it serves, stop them all."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

import trio

from p2pnode.api.client import ClientError, get_status, status_url
from p2pnode.peer.home import Home
from p2pnode.peer.status import PeerStatus

PR_SET_PDEATHSIG = 1
POLL = 0.1
"""How often a starting peer's status is asked for (another process: nothing to await)."""


class PeerExitedError(Exception):
    """A peer process ended before its status answered; the message ends with its log's tail."""


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, or None where there is none (not Linux)."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    except OSError:
        return None


# Looked up in the parent: a child forked from a threaded parent may only make plain calls
# between fork and exec, and loading or looking up a symbol takes locks another thread may
# have held.
_PRCTL = _prctl()


def spawn(
    home: Home,
    *args: str,
    log: Path | None = None,
    own_session: bool = False,
    on_parent_death: signal.Signals = signal.SIGTERM,
    inside: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """`p2pnode run --home HOME ARGS…`, its output appended to `log` (or dropped).

    `own_session`: a terminal's Ctrl-C then reaches only this parent, which stops every peer
    in order; and should the parent die, the peer gets `on_parent_death`. `inside` is a
    command that execs the peer (`ip netns exec NAME`), so the process is still the peer.
    """
    command = [*inside, sys.executable, "-m", "p2pnode", "run", "--home", str(home.path), *args]
    death = None
    if own_session and _PRCTL is not None:
        death = functools.partial(_PRCTL, PR_SET_PDEATHSIG, on_parent_death)
    if log is None:
        return _popen(command, subprocess.DEVNULL, own_session, death)
    with log.open("ab") as out:
        return _popen(command, out, own_session, death)


def _popen(
    command: list[str],
    out: IO[bytes] | int,
    own_session: bool,
    before_exec: Callable[[], object] | None,
) -> subprocess.Popen[bytes]:
    # Popen must run in the thread that stays: the death signal follows the thread that forked.
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=own_session,
        preexec_fn=before_exec,  # noqa: PLW1509 - one prctl call
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its log is read as it is written
    )


class Polled(Protocol):
    """A child process as `subprocess.Popen` and `trio.Process` both show it."""

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...


async def serving(
    home: Home,
    process: Polled,
    log: Path | None = None,
    *,
    read: Callable[[], Awaitable[PeerStatus]] | None = None,
) -> PeerStatus:
    """The peer's first status, once it answers (the caller bounds the wait); `PeerExitedError`
    if the process ends first. `read` asks for the status (by default over loopback). The
    home's status.url is that of its last run until the new one serves (it keeps its port),
    so only a status of the home's own peer id counts."""
    ask = read if read is not None else lambda: get_status(status_url(home), timeout=1)
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:].strip() if log is not None else ""
            raise PeerExitedError(f"{home.path.name} exited with {process.returncode}: {tail}")
        with contextlib.suppress(ClientError):
            status = await ask()
            if status.peer_id == home.keypair().prover.identity():
                return status
        await trio.sleep(POLL)


def stop_all(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM every peer (each stops gracefully), then SIGKILL any that outlive `timeout`."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
