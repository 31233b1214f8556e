"""The secure channel: a peer speaks Noise only, so no one connects under another's peer id."""

from __future__ import annotations

from typing import Any, cast

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair, PrivateKey
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.config import ConnectionConfig
from libp2p.network.exceptions import SwarmDialAllFailedError
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport

from p2pnode.net.stack import new_libp2p_host

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


class _Claimed:
    """An attacker's own private key, presenting a prover's public key as its own."""

    def __init__(self, real: Any, claimed: Any) -> None:
        self._real, self._claimed = real, claimed

    def get_public_key(self) -> Any:
        return self._claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


async def test_a_stranger_claiming_a_prover_s_id_over_plaintext_is_not_connected() -> None:
    """py-libp2p's default also offered plaintext, which takes the peer id on the remote's
    word: one with a prover's public key alone was connected as that prover, and so trusted
    as one (never paced or banned, first to be asked for sync)."""
    victim = new_libp2p_host(b"\x01" * 32)
    prover = create_identity_from_seed(b"\x02" * 32)
    claimed = cast(PrivateKey, _Claimed(create_new_key_pair().private_key, prover.public_key))
    fake = KeyPair(claimed, prover.public_key)
    attacker = new_host(
        key_pair=fake,
        sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(fake)},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )
    with trio.fail_after(30):
        async with victim.run(listen_addrs=[LOOPBACK]), attacker.run(listen_addrs=[LOOPBACK]):
            with pytest.raises(SwarmDialAllFailedError):
                await attacker.connect(PeerInfo(victim.get_id(), victim.get_transport_addrs()))
            assert ID.from_pubkey(prover.public_key) not in victim.get_connected_peers()
