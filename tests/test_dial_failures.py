"""A failed dial told in one line, from the chains of errors py-libp2p raises."""

from __future__ import annotations

import socket

import pytest
import trio
from libp2p.exceptions import MultiError
from libp2p.network.exceptions import SwarmException
from libp2p.security.noise.exceptions import PeerIDMismatchesPubkey

from p2pnode.net.contracts import networks_served
from p2pnode.net.failures import endpoint, why_dial_failed

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


def test_an_endpoint_is_host_and_port() -> None:
    assert endpoint("/ip6/::1/tcp/4001/p2p/x") == "[::1]:4001"
    assert endpoint("/dns4/seed.example/tcp/4001") == "seed.example:4001"


def test_the_networks_a_peer_serves_are_read_from_its_sync_protocols() -> None:
    protocols = ["/ipfs/id/1.0.0", "/p2pnode/genesis/1", "/p2pnode/mynet/sync/1", "/meshsub/1.1.0"]
    assert networks_served(protocols) == {"mynet"}
    assert networks_served(["/ipfs/id/1.0.0"]) == frozenset()
