"""The chaos peers: real `p2pnode run` processes in their namespaces; kill -9, restart, pause."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from p2pnode.api.client import status_url
from p2pnode.chaos import nsclient, stores
from p2pnode.chaos.netns import Fabric, Link
from p2pnode.local.homes import generate_testnet
from p2pnode.local.processes import PeerExitedError, serving, spawn
from p2pnode.peer.home import Home, write_config
from p2pnode.peer.status import PeerStatus
from p2pnode.peer.status_read import parse_status

LISTEN_PORT = 4001
"""Every peer listens in its own namespace, so one fixed port serves all and a restarted peer
comes back exactly where the others know it."""
STOP_TIMEOUT = 10.0
"""SIGTERM, then SIGKILL after this many seconds."""
POLL = 0.1
"""How often the harness looks at the peers (other processes: they can only be polled)."""
TAIL_LINES = 12


class ClusterError(Exception):
    """The peers could not be set up; the message says why."""


@dataclass
class Peer:
    """One prover: its home, its place on the bridge and its current process."""

    name: str
    home: Home
    link: Link
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False

    @property
    def output(self) -> Path:
        return self.home.path / "process.log"


async def write_homes(out: Path, links: list[Link]) -> list[Home]:
    """A testnet of len(links) provers (the default difficulty), each listening on every
    address of its namespace (its link's and loopback), as an operator's peer on a host of its
    own would; every peer but peer0 bootstraps from what `p2pnode id` prints for peer0."""
    _, homes = generate_testnet(out, len(links), base_port=LISTEN_PORT)
    listen = [f"/ip4/0.0.0.0/tcp/{LISTEN_PORT}"]
    write_config(homes[0], listen, [])
    # Asked inside peer0's namespace: a wildcard listener shows that namespace's addresses.
    inside = ["ip", "netns", "exec", links[0].namespace]
    command = [*inside, sys.executable, "-m", "p2pnode", "id", "--home", str(homes[0].path)]
    done = await trio.run_process(command, capture_stdout=True, capture_stderr=True, check=False)
    lines = done.stdout.decode().splitlines()
    addresses = [line.split()[1] for line in lines if line.startswith("address: ")]
    if done.returncode != 0 or not addresses:
        raise ClusterError(f"p2pnode id --home {homes[0].path}: {done.stderr.decode().strip()}")
    for home in homes[1:]:
        write_config(home, listen, addresses[:1])
    return homes


class Cluster:
    """The peers of one run. Every process it starts is tracked until it has been reaped."""

    def __init__(self, fabric: Fabric, homes: list[Home]) -> None:
        if fabric.outsider is None:
            raise ClusterError("the fabric was not built")
        self.fabric = fabric
        self.outsider = fabric.outsider
        self.peers = [
            Peer(f"peer{index}", home, link)
            for index, (home, link) in enumerate(zip(homes, fabric.links, strict=True))
        ]

    def spawn(self, peer: Peer) -> None:
        """Start `p2pnode run --home DIR` inside the peer's namespace."""
        peer.process = spawn(
            peer.home,
            log=peer.output,
            own_session=True,  # a terminal's Ctrl-C reaches the harness alone
            # SIGKILL should the harness die without cleaning up: a SIGTERM would wait for
            # ever in a peer it had stopped.
            on_parent_death=signal.SIGKILL,
            inside=["ip", "netns", "exec", peer.link.namespace],
        )
        peer.paused = False

    async def wait_started(self, peer: Peer, timeout: float) -> str | None:
        """None once the peer answers its status endpoint; else what went wrong."""
        process = peer.process
        if process is None:
            return "not started"
        with trio.move_on_after(timeout) as waiting:
            try:
                await serving(peer.home, process, read=lambda: self.status(peer, timeout=1))
            except PeerExitedError:
                return f"exited with {process.returncode} while starting"
        return f"no status within {timeout:g} s" if waiting.cancelled_caught else None

    async def status(self, peer: Peer, *, timeout: float = 3.0) -> PeerStatus:
        url = status_url(peer.home)
        reply = await nsclient.get_json(peer.link.namespace, url, "/status", timeout=timeout)
        return parse_status(reply, url)

    def kill(self, peer: Peer) -> None:
        """kill -9: no shutdown at all (it works on a stopped process too)."""
        if peer.process is not None:
            peer.process.kill()
            peer.process.wait()
        peer.paused = False

    def pause(self, peers: list[Peer]) -> None:
        for peer in peers:
            if peer.process is not None and peer.process.poll() is None:
                peer.process.send_signal(signal.SIGSTOP)
                peer.paused = True

    def resume(self, peers: list[Peer]) -> None:
        for peer in peers:
            if peer.process is not None and peer.process.poll() is None:
                peer.process.send_signal(signal.SIGCONT)
            peer.paused = False

    def ranks(self) -> dict[str, int]:
        """Each peer's final rank, read from its store; -1 if the store cannot be read now."""
        return {peer.name: _rank(peer) for peer in self.peers}

    def exited(self) -> dict[str, int]:
        """The peers whose process ended without the harness ending it: name → exit code."""
        codes = {peer.name: peer.process.poll() for peer in self.peers if peer.process}
        return {name: code for name, code in codes.items() if code is not None}

    def tail(self, peer: Peer) -> str:
        """The last lines of the peer's log and of its output (where a crash's traceback is)."""
        parts = []
        for path in (peer.home.log_file, peer.output):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
                parts.append(f"  {path.name}:\n" + "\n".join(f"    {line}" for line in lines))
        return "\n".join(parts)

    def stop(self) -> dict[str, int]:
        """Stop every peer: SIGCONT a paused one first (else SIGTERM waits for ever), SIGTERM,
        then SIGKILL after STOP_TIMEOUT. The exit codes of the peers that were running."""
        running = {
            peer.name: peer.process
            for peer in self.peers
            if peer.process is not None and peer.process.poll() is None
        }
        for process in running.values():
            process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
        for peer in self.peers:
            peer.paused = False
        deadline = time.monotonic() + STOP_TIMEOUT
        codes = {}
        for name, process in running.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


def _rank(peer: Peer) -> int:
    try:
        return stores.final_rank(peer.home.store_file)
    except stores.StoreReadError:
        return -1
