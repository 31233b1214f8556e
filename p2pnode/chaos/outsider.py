"""An outsider's floods against running peers, each from many cheap identities: bad signatures,
a GRAFT eclipse, mutations from a thousand origins, empty IWANTs, made-up peers, raw sockets,
gossip streams opened and reset, raw yamux frames opening and resetting streams.

`python -m p2pnode.chaos.outsider ATTACK --network NET --target MA… --seconds S` runs one as a
process of its own (one core), as `scripts/chaos` and `scripts/attack` do; it prints what it
sent as one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import trio
from libp2p.identity_utils import create_identity_from_seed
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.stream_muxer.yamux.yamux import Yamux

from p2pnode.chaos.raw import GOSSIP_PROTOCOL, Attacker, attacker, publish
from p2pnode.net import PeerRecord, Topic, encode_record, topic_name
from p2pnode.net.stack import open_stream
from p2pnode.wire.codec import MutationMsg, encode


@dataclass(frozen=True, slots=True)
class Target:
    network: str
    addrs: tuple[str, ...]
    """Full multiaddrs of the peers attacked, one each."""
    until: float
    """trio time at which the attack ends."""
    third_party: tuple[str, ...] = ()
    """host:port addresses of a bystander the made-up peers point at."""
    source: str | None = None
    """The local address raw sockets come from (libp2p's dials take the system's choice)."""

    def topic(self, topic: Topic) -> str:
        return topic_name(self.network, topic)


Attack = Callable[[Target, str, Counter[str]], Awaitable[None]]
"""One flood against one peer (its multiaddr), counting what it did."""

SIGNED_PAYLOAD = 150
BAD_SIGNATURE_RATE = 76 * 1024
"""Bytes a second of badly signed gossip sent to each peer."""
ECLIPSE_IDENTITIES = 12
MUTATION_ORIGINS = 1000
MUTATIONS_PER_MESSAGE = 320
MUTATION_SIZE = 100
MADE_UP_PEERS = 40
RAW_SOCKETS = 255
IWANTS_PER_RPC = 50_000
CHURN_IDENTITIES = 8
CHURN_LOOPS = 1


async def _under_new_names(
    target: Target,
    addr: str,
    topics: list[str],
    count: Counter[str],
    flood: Callable[[Attacker, str], Awaitable[None]],
    pause: float = 0.05,
) -> None:
    """Run `flood` from a fresh identity joined to `addr`'s `topics` until the attack ends;
    whenever the peer drops it (a ban, a refused seat), again under a new name."""
    while trio.current_time() < target.until:
        count["identities"] += 1
        try:
            async with attacker() as evil:
                await flood(evil, await evil.connect([addr], topics))
        except Exception:
            count["dropped"] += 1
            await trio.sleep(pause)


async def _crowd(
    identities: int,
    target: Target,
    addr: str,
    topics: list[str],
    count: Counter[str],
    flood: Callable[[Attacker, str], Awaitable[None]],
    pause: float = 0.05,
) -> None:
    """`identities` floods at once, each under new names (see `_under_new_names`)."""
    async with trio.open_nursery() as nursery:
        for _ in range(identities):
            nursery.start_soon(_under_new_names, target, addr, topics, count, flood, pause)


async def bad_signatures(target: Target, addr: str, count: Counter[str]) -> None:
    """Votes whose signature does not verify, at BAD_SIGNATURE_RATE."""
    topic = target.topic(Topic.VOTES)
    interval = SIGNED_PAYLOAD / BAD_SIGNATURE_RATE

    async def flood(evil: Attacker, victim: str) -> None:
        while trio.current_time() < target.until:
            msg = evil.message(topic, os.urandom(SIGNED_PAYLOAD))
            msg.signature = os.urandom(64)
            await evil.send(victim, publish(msg))
            count["messages"] += 1
            await trio.sleep(interval)

    await _under_new_names(target, addr, [topic], count, flood)


async def graft_eclipse(target: Target, addr: str, count: Counter[str]) -> None:
    """ECLIPSE_IDENTITIES identities join every topic, GRAFT every topic every second, and
    forward nothing."""
    topics = [target.topic(topic) for topic in Topic]
    grafts = rpc_pb2.RPC(
        control=rpc_pb2.ControlMessage(graft=[rpc_pb2.ControlGraft(topicID=t) for t in topics])
    )

    async def flood(evil: Attacker, victim: str) -> None:
        while trio.current_time() < target.until:
            await evil.send(victim, grafts)
            count["grafts"] += len(topics)
            await trio.sleep(1)

    await _crowd(ECLIPSE_IDENTITIES, target, addr, topics, count, flood, 1.0)


async def mutation_flood(target: Target, addr: str, count: Counter[str]) -> None:
    """Batches of mutations, each signed by the next of MUTATION_ORIGINS origin keys, as fast
    as the peer reads them."""
    topic = target.topic(Topic.MUTATIONS)
    origins = [
        create_identity_from_seed(hashlib.sha256(b"origin %d" % i).digest())
        for i in range(MUTATION_ORIGINS)
    ]

    async def flood(evil: Attacker, victim: str) -> None:
        while trio.current_time() < target.until:
            batch = tuple(os.urandom(MUTATION_SIZE) for _ in range(MUTATIONS_PER_MESSAGE))
            keys = origins[count["messages"] % len(origins)]
            data = encode(MutationMsg(batch))
            await evil.send(victim, publish(evil.message(topic, data, signer=keys)))
            count["messages"] += 1
            count["mutations"] += len(batch)
            await trio.lowlevel.checkpoint()

    await _under_new_names(target, addr, [topic], count, flood)


async def iwant_flood(target: Target, addr: str, count: Counter[str]) -> None:
    """An RPC of IWANTS_PER_RPC empty IWANTs (about 100 KB) every second."""
    empty = rpc_pb2.RPC(
        control=rpc_pb2.ControlMessage(iwant=[rpc_pb2.ControlIWant()] * IWANTS_PER_RPC)
    )

    async def flood(evil: Attacker, victim: str) -> None:
        while trio.current_time() < target.until:
            await evil.send(victim, empty)
            count["rpcs"] += 1
            await trio.sleep(1)

    await _under_new_names(target, addr, [target.topic(Topic.VOTES)], count, flood)


async def made_up_peers(target: Target, addr: str, count: Counter[str]) -> None:
    """MADE_UP_PEERS well-signed announcements of made-up peers at the bystander's addresses,
    every ten seconds: peers that dialled them would aim the network at the bystander."""
    topic = target.topic(Topic.PEERS)
    async with attacker() as evil:
        victim = await evil.connect([addr], [topic])
        while trio.current_time() < target.until:
            for index in range(MADE_UP_PEERS):
                keys = create_identity_from_seed(hashlib.sha256(b"made up %d" % index).digest())
                peer = ID.from_pubkey(keys.public_key).to_base58()
                addrs = tuple(
                    f"/ip4/{host}/tcp/{port}/p2p/{peer}"
                    for host, port in (a.rsplit(":", 1) for a in target.third_party)
                )
                data = encode_record(PeerRecord(peer, addrs))
                await evil.send(victim, publish(evil.message(topic, data, signer=keys)))
                count["records"] += 1
            await trio.sleep(10)


async def raw_sockets(target: Target, addr: str, count: Counter[str]) -> None:
    """RAW_SOCKETS TCP connections that never say a word, opened again as they are closed."""
    host, port = addr.split("/")[2], int(addr.split("/")[4])

    async def hold() -> None:
        while trio.current_time() < target.until:
            try:
                stream = await trio.open_tcp_stream(host, port, local_address=target.source)
            except OSError:
                await trio.sleep(0.1)
                continue
            count["sockets"] += 1
            async with stream:
                with trio.move_on_after(max(0.0, target.until - trio.current_time())):
                    await stream.receive_some(1)  # returns when the peer closes it

    async with trio.open_nursery() as nursery:
        for _ in range(RAW_SOCKETS):
            nursery.start_soon(hold)


async def stream_churn(target: Target, addr: str, count: Counter[str]) -> None:
    """CHURN_IDENTITIES identities, each opening gossip streams and resetting them at once in
    CHURN_LOOPS loops: no RPC is ever read, only streams negotiated."""

    async def churn(evil: Attacker, victim: str) -> None:
        async def loop() -> None:
            while trio.current_time() < target.until:
                try:
                    stream = await open_stream(evil.host, victim, GOSSIP_PROTOCOL)
                    await stream.reset()
                    count["streams"] += 1
                except Exception:
                    count["streams refused"] += 1
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            for _ in range(CHURN_LOOPS):
                nursery.start_soon(loop)

    await _crowd(CHURN_IDENTITIES, target, addr, [], count, churn)


def _syn_resets(first: int, count: int) -> bytes:
    """`count` yamux frames, each opening a stream and resetting it at once (SYN|RST)."""
    header = struct.Struct("!BBHII")  # version, type, flags, stream id, length
    window_update, syn, rst = 1, 0x1, 0x8
    return b"".join(
        header.pack(0, window_update, syn | rst, first + 2 * i, 0) for i in range(count)
    )


async def syn_resets(target: Target, addr: str, count: Counter[str]) -> None:
    """CHURN_IDENTITIES identities writing raw yamux frames that open a stream and reset it in
    one, 64 at a time, as fast as the connection takes them; no answer is ever awaited."""

    async def flood(evil: Attacker, victim: str) -> None:
        muxed = evil.host.get_network().get_connections(ID.from_base58(victim))[0].muxed_conn
        if not isinstance(muxed, Yamux):
            raise TypeError(f"not a yamux connection: {muxed!r}")
        stream_id = 1 if muxed.is_initiator_value else 2
        while trio.current_time() < target.until:
            await muxed.secured_conn.write(_syn_resets(stream_id, 64))
            stream_id += 128
            count["streams"] += 64
            await trio.lowlevel.checkpoint()

    await _crowd(CHURN_IDENTITIES, target, addr, [], count, flood)


ATTACKS: dict[str, Attack] = {
    "bad-signatures": bad_signatures,
    "graft-eclipse": graft_eclipse,
    "mutation-flood": mutation_flood,
    "iwant-flood": iwant_flood,
    "made-up-peers": made_up_peers,
    "raw-sockets": raw_sockets,
    "stream-churn": stream_churn,
    "syn-resets": syn_resets,
}


async def run(name: str, target: Target) -> Counter[str]:
    """Run attack `name` against every peer of `target` at once, until `target.until`."""
    count: Counter[str] = Counter()
    with trio.move_on_after(max(0.0, target.until - trio.current_time()) + 5):
        async with trio.open_nursery() as nursery:
            for addr in target.addrs:
                nursery.start_soon(ATTACKS[name], target, addr, count)
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="outsider", description=__doc__)
    parser.add_argument("attack", choices=sorted(ATTACKS))
    parser.add_argument("--network", required=True)
    parser.add_argument("--target", action="append", required=True, metavar="MULTIADDR")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--third-party", action="append", default=[], metavar="HOST:PORT")
    parser.add_argument("--source", metavar="IP", help="the local address of raw sockets")
    args = parser.parse_args(argv)

    async def attack() -> Counter[str]:
        until = trio.current_time() + args.seconds
        target = Target(
            args.network, tuple(args.target), until, tuple(args.third_party), args.source
        )
        return await run(args.attack, target)

    print(json.dumps(dict(trio.run(attack))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
