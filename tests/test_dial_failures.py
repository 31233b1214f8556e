"""A failed dial told in one line, from the chains of errors py-libp2p raises."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import cast

import pytest
import trio
import trio.testing
from libp2p.exceptions import MultiError
from libp2p.network.exceptions import SwarmException
from libp2p.security.noise.exceptions import PeerIDMismatchesPubkey

from p2pnode.net.contracts import NetConfig, NetError, networks_served
from p2pnode.net.dialer import Dialer
from p2pnode.net.failures import endpoint, why_dial_failed
from p2pnode.net.stack import Stack
from p2pnode.net.tiers import Tiers

WANTED = "12D3KooWKu3SHG1t1ibfrQ5nr8718pxM6aFQ9anZvzcjaat4wPkR"
OTHER = "12D3KooWGJ49pNsaueT23WhGgjXYAkkWuG6csDLKPphn3XfRbKWC"
ADDRESS = f"/ip4/127.0.0.1/tcp/4009/p2p/{WANTED}"


def _as_libp2p_raises(leaf: BaseException) -> BaseException:
    """`leaf` wrapped as py-libp2p 0.8.1 wraps a dial's failure (swarm.py: a SwarmException
    per address, a MultiError of them, the SwarmException that dial_peer raises)."""
    per_address = SwarmException("fail to open connection to peer")
    per_address.__cause__ = leaf
    dial = SwarmException("unable to connect")
    dial.__cause__ = MultiError([per_address])
    return dial


@pytest.mark.parametrize(
    ("leaf", "line"),
    [
        (
            BaseExceptionGroup("all attempts failed", [ConnectionRefusedError(111, "x")]),
            "cannot reach 127.0.0.1:4009: connection refused",
        ),
        (
            PeerIDMismatchesPubkey(f"remote_peer={WANTED}, remote_peer_id_from_pubkey={OTHER}"),
            f"127.0.0.1:4009 is {OTHER}, not {WANTED}",
        ),
        (socket.gaierror(-2, "Name or service not known"), "the name does not resolve"),
        (trio.TooSlowError(), "cannot reach 127.0.0.1:4009: no answer within 10 s"),
        (
            ValueError('`msg_bytes` is not delimited by b"\\n": HTTP/1.1 400'),
            "127.0.0.1:4009 answered, but not as a libp2p peer",
        ),
    ],
)
def test_a_failed_dial_is_one_line_naming_the_address_and_why(
    leaf: BaseException, line: str
) -> None:
    told = why_dial_failed(_as_libp2p_raises(leaf), ADDRESS, WANTED, 10.0)
    assert line in told
    assert "\n" not in told


def test_an_address_of_this_peer_itself_is_said_so() -> None:
    mismatch = PeerIDMismatchesPubkey(f"remote_peer={WANTED}, remote_peer_id_from_pubkey={OTHER}")
    told = why_dial_failed(_as_libp2p_raises(mismatch), ADDRESS, WANTED, 10.0, own=OTHER)
    assert told == f"127.0.0.1:4009 is this peer itself, not {WANTED}"


def test_an_endpoint_is_host_and_port() -> None:
    assert endpoint("/ip6/::1/tcp/4001/p2p/x") == "[::1]:4001"
    assert endpoint("/dns4/seed.example/tcp/4001") == "seed.example:4001"


def test_the_networks_a_peer_serves_are_read_from_its_sync_protocols() -> None:
    protocols = ["/ipfs/id/1.0.0", "/p2pnode/genesis/1", "/p2pnode/mynet/sync/1", "/meshsub/1.1.0"]
    assert networks_served(protocols) == {"mynet"}
    assert networks_served(["/ipfs/id/1.0.0"]) == frozenset()


A = "12D3KooWGJ49pNsaueT23WhGgjXYAkkWuG6csDLKPphn3XfRbKWC"
B = "12D3KooWLAtQbK8gs6UhWeDxcxdz37maBytkeSfcN3QvhAoLuc9k"


@dataclass
class FakeStack:
    """What the dialler asks of the stack when a bootstrap peer connected: what it serves."""

    served: dict[str, frozenset[str] | None]
    peer_id: str = "12D3KooWSelf"
    dropped: list[str] = field(default_factory=list)

    def networks_of(self, peer: str) -> frozenset[str] | None:
        return self.served[peer]

    async def disconnect(self, peer: str) -> None:
        self.dropped.append(peer)

    def peer_of(self, address: str) -> str:
        return address.rsplit("/", 1)[-1]


async def _judged(served: dict[str, frozenset[str] | None]) -> tuple[list[bool], FakeStack]:
    stack = FakeStack(served)
    addresses = tuple(f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{p}" for i, p in enumerate(served))
    config = NetConfig(network="mine", seed=bytes(32), bootstrap=addresses)
    async with trio.open_nursery() as nursery:  # the dialler's, unused by what is tested
        dialer = Dialer(
            config,
            cast(Stack, stack),
            Tiers(),
            nursery,
            banned=lambda now: (),
            prover_ips=lambda ips: None,
            changed=lambda: None,
        )
    judged = [await dialer._same_network(p, a) for p, a in zip(served, addresses, strict=True)]
    return judged, stack


async def test_a_peer_that_serves_no_network_yet_or_says_nothing_is_not_foreign(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A peer caught starting up (no sync protocol yet), or whose identify never came, proved
    nothing: it stopped a healthy peer."""
    judged, stack = await _judged({A: frozenset(), B: None})
    assert judged == [True, True]
    assert stack.dropped == []


async def test_a_foreign_peer_is_dropped_and_stops_the_peer_only_if_none_is_ours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    judged, stack = await _judged({A: frozenset({"mine"}), B: frozenset({"other"})})
    assert judged == [True, False]
    assert stack.dropped == [B]
    with pytest.raises(NetError, match="no bootstrap peer is of this network"):
        await _judged({A: frozenset({"other"}), B: frozenset({"other", "third"})})
