"""Linux network namespaces for the chaos peers: one per peer, joined by a bridge of its own."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from dataclasses import dataclass

SUBNET = "10.213.0"
"""Peers get SUBNET.10, .11, ...: the addresses exist only inside this run's namespaces, so two
runs (each with its own bridge namespace) never see each other's."""
FIRST_HOST = 10
CLONE_NEWNET = 0x40000000
IP_TIMEOUT = 10.0


class NetnsError(Exception):
    """A namespace or link could not be made or changed; the message names the `ip` call."""


@dataclass(frozen=True, slots=True)
class Link:
    """One peer's place on the bridge."""

    namespace: str
    address: str
    device: str
    """The veth end inside the peer's namespace."""
    port: str
    """The veth end in the switch namespace, on one of its two bridges."""


def ip(*args: str) -> str:
    """Run `ip ARGS`; its output, or NetnsError with its message."""
    try:
        done = subprocess.run(
            ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise NetnsError(f"ip {' '.join(args)}: {err}") from None
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def namespaces() -> set[str]:
    """The names of every network namespace `ip netns` knows."""
    return {line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()}


class Fabric:
    """The namespaces of one run: a switch namespace with two bridges joined by an uplink (a
    veth pair), and one namespace per peer with a veth pair to the first bridge. A partition
    moves one side's ports to the second bridge, then takes the uplink down: each side still
    talks within itself, as across a failed uplink. Only what this object created is ever
    removed."""

    def __init__(self, prefix: str) -> None:
        # Interface names are at most 15 characters: the prefix leaves room for "p15s".
        if len(prefix) > 11:
            raise NetnsError(f"prefix {prefix!r} is longer than 11 characters")
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.bridge = f"{prefix}br"
        self.island = f"{prefix}is"
        self.uplink = (f"{prefix}u0", f"{prefix}u1")
        self.created: list[str] = []
        self.links: list[Link] = []
        self.outsider: Link | None = None
        """A namespace on the bridge with no peer in it, for an outsider's floods."""

    def build(self, count: int) -> list[Link]:
        self._add_namespace(self.switch)
        for bridge in (self.bridge, self.island):
            ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", bridge, "up")
        near, far = self.uplink
        ip("-n", self.switch, "link", "add", near, "type", "veth", "peer", "name", far)
        ip("-n", self.switch, "link", "set", near, "master", self.bridge, "up")
        ip("-n", self.switch, "link", "set", far, "master", self.island, "up")
        for index in range(count):
            self.links.append(self._add_peer(index))
        self.outsider = self._add_link(f"{self.prefix}-o", f"{SUBNET}.{FIRST_HOST - 1}", "o")
        return list(self.links)

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)  # fails if the name exists: someone else's is never touched
        self.created.append(name)

    def _add_peer(self, index: int) -> Link:
        return self._add_link(
            f"{self.prefix}-p{index}", f"{SUBNET}.{FIRST_HOST + index}", f"p{index}"
        )

    def _add_link(self, namespace: str, address: str, name: str) -> Link:
        link = Link(
            namespace=namespace,
            address=address,
            device=f"{self.prefix}{name}",
            port=f"{self.prefix}{name}s",
        )
        self._add_namespace(link.namespace)
        peer_end = ["peer", "name", link.device, "netns", link.namespace]
        ip("-n", self.switch, "link", "add", link.port, "type", "veth", *peer_end)
        ip("-n", self.switch, "link", "set", link.port, "master", self.bridge, "up")
        ip("-n", link.namespace, "addr", "add", f"{link.address}/24", "dev", link.device)
        ip("-n", link.namespace, "link", "set", link.device, "up")
        # The status endpoint listens on the namespace's own loopback.
        ip("-n", link.namespace, "link", "set", "lo", "up")
        return link

    def split(self, links: list[Link]) -> None:
        """Put these peers behind the uplink and take it down: they reach each other and no
        one else."""
        for link in links:
            ip("-n", self.switch, "link", "set", link.port, "master", self.island)
        ip("-n", self.switch, "link", "set", self.uplink[0], "down")

    def join(self, links: list[Link]) -> None:
        """Bring the uplink up again, then move these peers back to the first bridge."""
        ip("-n", self.switch, "link", "set", self.uplink[0], "up")
        for link in links:
            ip("-n", self.switch, "link", "set", link.port, "master", self.bridge)

    def cut(self, link: Link) -> None:
        """Pull the peer's cable: its port on the bridge goes down, and nothing crosses it."""
        ip("-n", self.switch, "link", "set", link.port, "down")

    def mend(self, link: Link) -> None:
        ip("-n", self.switch, "link", "set", link.port, "up")

    def remove(self) -> list[str]:
        """Delete the namespaces this fabric created (their links go with them); the errors."""
        errors = []
        for name in reversed(self.created):
            try:
                ip("netns", "delete", name)
            except NetnsError as err:
                errors.append(str(err))
        self.created.clear()
        return errors


def namespace_socket(namespace: str) -> socket.socket:
    """A TCP socket that lives in `namespace`.

    A socket belongs to the namespace of the thread that creates it, for good; a short-lived
    thread enters the namespace to create it, so no thread of this process stays switched.
    """
    made: list[socket.socket | OSError] = []

    def enter() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        except OSError as err:
            made.append(err)
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                number = ctypes.get_errno()
                made.append(OSError(number, f"setns {namespace}: {os.strerror(number)}"))
                return
            made.append(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        except OSError as err:
            made.append(err)
        finally:
            os.close(fd)

    worker = threading.Thread(target=enter, name=f"netns {namespace}")
    worker.start()
    worker.join()
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]
