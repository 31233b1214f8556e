"""A local testnet's peer processes: started, watched for exits, maybe restarted, stopped."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pnode.local.processes import spawn, stop_all
from p2pnode.peer.home import Home

CHECK = 0.5
"""How often the processes are looked at (another process's exit: polled, not awaited)."""
RESTART_FIRST, RESTART_MOST = 1.0, 30.0
"""Seconds before a restart, doubled while a peer keeps exiting within STABLE of its start."""
STABLE = 60.0


def exit_text(code: int) -> str:
    """`exited with status 1`, or `killed by SIGKILL` for a signal."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


def last_line(log: Path, width: int = 160) -> str:
    """The last line of a peer's output, shortened: often what it said before it ended."""
    try:
        with log.open("rb") as file:
            file.seek(max(0, file.seek(0, 2) - 4096))
            lines = [line.strip() for line in file.read().decode(errors="replace").splitlines()]
    except OSError:
        return ""
    line = next((line for line in reversed(lines) if line), "")
    return line if len(line) <= width else line[: width - 1] + "…"


@dataclass
class Supervised:
    """One peer of the testnet: how it is started, its current process, its exits."""

    home: Home
    args: tuple[str, ...]
    log: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    exits: list[str] = field(default_factory=list)
    """Each exit, as `exit_text` and the last line of its output."""
    delay: float = 0.0
    noted: bool = False
    """Whether the exit of the current process is in `exits`."""

    @property
    def name(self) -> str:
        return self.home.path.name

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def note_exit(self) -> bool:
        """Note the current process's exit once it exited; whether this call noted it."""
        code = self.process.poll()
        if code is None or self.noted:
            return False
        tail = last_line(self.log)
        self.exits.append(exit_text(code) + (f": {tail}" if tail else ""))
        self.noted = True
        return True


class Supervisor:
    """Starts peers in their own sessions; `watch` notes each exit and, with `restart`,
    starts the peer again (the home keeps its ports, so its status URL stays)."""

    def __init__(
        self,
        *,
        restart: bool,
        first_delay: float = RESTART_FIRST,
        told: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.restart = restart
        self.first_delay = first_delay
        self.told = told
        """Called with a line for each exit noted (`peer2 killed by SIGKILL: …`)."""
        self.peers: list[Supervised] = []

    def start(self, home: Home, *args: str) -> Supervised:
        log = home.path / "process.log"
        process = spawn(home, *args, log=log, own_session=True)
        self.peers.append(Supervised(home, args, log, process))
        return self.peers[-1]

    def exited(self, home: Home) -> str | None:
        """What ended the peer of `home`, while it is not running; None while it runs."""
        peer = next((p for p in self.peers if p.home == home), None)
        if peer is None or peer.running or not peer.exits:
            return None
        again = " (restarting)" if self.restart else ""
        return peer.exits[-1] + again

    def check(self) -> list[Supervised]:
        """Note the exits since the last check; the peers that exited."""
        exited = [peer for peer in self.peers if peer.note_exit()]
        for peer in exited:
            self.told(f"{peer.name} {self.exited(peer.home)}")
        return exited

    async def watch(self) -> None:
        """Note each exit as it happens and restart when asked; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self.check():
                    if self.restart:
                        nursery.start_soon(self.restart_later, peer)
                await trio.sleep(CHECK)

    async def restart_later(self, peer: Supervised) -> None:
        """Start an exited peer again, after a delay that doubles (up to RESTART_MOST) while
        it keeps exiting within STABLE seconds of its start."""
        stable = time.monotonic() - peer.started >= STABLE
        again = max(2 * peer.delay, self.first_delay)
        peer.delay = self.first_delay if stable else min(again, RESTART_MOST)
        await trio.sleep(peer.delay)
        peer.process = spawn(peer.home, *peer.args, log=peer.log, own_session=True)
        peer.started, peer.noted = time.monotonic(), False

    def stop(self, timeout: float) -> list[str]:
        """Stop every running peer; a line for each that had ended on its own."""
        for peer in self.peers:
            peer.note_exit()
        ended = [f"{p.name} {p.exits[-1]}" for p in self.peers if not p.running]
        stop_all([p.process for p in self.peers if p.running], timeout)
        return ended
