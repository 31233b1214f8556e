"""Running real peers as processes on loopback for tests: start, observe, kill, clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pnode.api.client import get_status, status_url
from p2pnode.local.processes import serving
from p2pnode.peer.home import Home
from p2pnode.peer.status import PeerStatus

POLL = 0.25
"""How often tests look at another process's status (it cannot be awaited from here)."""


@dataclass
class Peer:
    home: Home
    process: trio.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def status(self) -> PeerStatus:
        """The peer's status, read whole (a field the reader could not use fails the test)."""
        status = await get_status(status_url(self.home))
        assert status.problems == (), status.problems
        return status

    def addrs(self) -> list[str]:
        """The multiaddrs the peer printed it listens on (read back, so port 0 works)."""
        marker = "listening on "
        lines = self.log.read_text(errors="replace").splitlines()
        return [line.split(marker, 1)[1].strip() for line in lines if marker in line]


@dataclass
class Cluster:
    """Peer processes started by a test; every one is ended when the test ends."""

    peers: list[Peer] = field(default_factory=list)

    async def start(self, home: Home, *args: str) -> Peer:
        home.status_url_file.unlink(missing_ok=True)
        log = home.path / "process.log"
        with log.open("ab") as out:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "p2pnode", "run", "--home", str(home.path), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        peer = Peer(home, process, log)
        self.peers.append(peer)
        with trio.fail_after(60):
            await serving(home, process, log)
        return peer

    async def kill(self, peer: Peer) -> None:
        """kill -9: no shutdown at all."""
        peer.process.send_signal(signal.SIGKILL)
        await peer.process.wait()

    async def stop_all(self) -> None:
        for peer in self.peers:
            if peer.process.returncode is None:
                peer.process.send_signal(signal.SIGTERM)
        for peer in self.peers:
            with trio.move_on_after(15):
                await peer.process.wait()
            if peer.process.returncode is None:
                peer.process.kill()
                await peer.process.wait()


async def start_on_free_ports(group: Cluster, homes: list[Home]) -> list[Peer]:
    """Start every home listening on a port the system picks; all join the first peer."""
    first = await group.start(homes[0], "--listen", "/ip4/127.0.0.1/tcp/0")
    bootstrap = first.addrs()[0]
    rest = [
        await group.start(home, "--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", bootstrap)
        for home in homes[1:]
    ]
    return [first, *rest]


@asynccontextmanager
async def cluster() -> AsyncIterator[Cluster]:
    started = Cluster()
    try:
        yield started
    finally:
        with trio.CancelScope(shield=True):
            await started.stop_all()


async def wait_for(check: Callable[[], object], *, timeout: float, what: str) -> None:
    """Poll `check` (sync or async) until it is true; fail with `what` after `timeout`."""
    with trio.move_on_after(timeout):
        while True:
            result = check()
            if hasattr(result, "__await__"):
                result = await result
            if result:
                return
            await trio.sleep(POLL)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def ranks(peers: list[Peer]) -> list[int]:
    return [(await peer.status()).finalized_rank for peer in peers]


async def chain(peer: Peer) -> dict[int, str]:
    """The peer's last 64 final frames, rank → id."""
    return dict((await peer.status()).recent)
