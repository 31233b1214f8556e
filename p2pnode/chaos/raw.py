"""A raw py-libp2p host that writes gossipsub RPCs field by field, bypassing p2pnode's own
network code, so every field of every layer is its choice: the outsider's tool."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import trio
from libp2p.abc import IHost, INetStream
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import create_identity_from_seed
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils import encode_varint_prefixed

from p2pnode.net.fixes import Guarded
from p2pnode.net.stack import dial, new_libp2p_host, open_stream

GOSSIP_PROTOCOL = "/meshsub/1.1.0"
SIGNING_PREFIX = b"libp2p-pubsub:"


class Attacker:
    """One identity, one host; opens gossip streams to victims and writes what it likes."""

    def __init__(self, host: IHost, keys: KeyPair) -> None:
        self.host = host
        self.keys = keys
        self.peer_id = host.get_id()
        self._streams: dict[str, INetStream] = {}
        self._seqno = secrets.randbits(48)

    async def connect(self, addrs: Sequence[str], topics: Sequence[str] = ()) -> str:
        """Dial a victim and open a gossip stream to it, announcing `topics`."""
        victim = await dial(self.host, addrs)
        self._streams[victim] = await open_stream(self.host, victim, GOSSIP_PROTOCOL)
        if topics:
            subscribe = [rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic) for topic in topics]
            await self.send(victim, rpc_pb2.RPC(subscriptions=subscribe))
        return victim

    async def send(self, victim: str, rpc: rpc_pb2.RPC) -> None:
        await self.send_raw(victim, encode_varint_prefixed(rpc.SerializeToString()))

    async def send_raw(self, victim: str, data: bytes) -> None:
        await self._streams[victim].write(data)

    def message(self, topic: str, data: bytes, *, signer: KeyPair | None = None) -> rpc_pb2.Message:
        """A well-formed message signed by `signer` (by default the attacker)."""
        keys = signer or self.keys
        self._seqno += 1
        msg = rpc_pb2.Message(
            from_id=ID.from_pubkey(keys.public_key).to_bytes(),
            data=data,
            seqno=self._seqno.to_bytes(8, "big"),
            topicIDs=[topic],
        )
        return sign(msg, keys)


def sign(msg: rpc_pb2.Message, keys: KeyPair) -> rpc_pb2.Message:
    """Sign the message's from/data/seqno/topics as gossipsub does (the key field is left)."""
    unsigned = rpc_pb2.Message(
        data=msg.data, topicIDs=msg.topicIDs, from_id=msg.from_id, seqno=msg.seqno
    )
    signed = rpc_pb2.Message()
    signed.CopyFrom(msg)
    signed.signature = keys.private_key.sign(SIGNING_PREFIX + unsigned.SerializeToString())
    return signed


def publish(*messages: rpc_pb2.Message) -> rpc_pb2.RPC:
    return rpc_pb2.RPC(publish=list(messages))


@asynccontextmanager
async def attacker(seed: bytes | None = None) -> AsyncIterator[Attacker]:
    """A running attacker host (it listens nowhere); its streams close when it leaves."""
    seed = seed if seed is not None else secrets.token_bytes(32)
    host = new_libp2p_host(seed)
    async with Guarded(host.run([]), "an attacker host"):
        yield Attacker(host, create_identity_from_seed(seed))
        # As a process that exits would: py-libp2p leaves its connections open otherwise,
        # and the victims keep counting an attacker that is gone.
        with trio.move_on_after(2) as scope:
            scope.shield = True
            for peer in host.get_connected_peers():
                with contextlib.suppress(Exception):
                    await host.disconnect(peer)
