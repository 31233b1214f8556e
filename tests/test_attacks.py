"""A raw py-libp2p attacker against real peers on loopback: malformed envelopes, control
messages and frames cost the attacker, never the peer."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.crypto.keys import KeyPair
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerstore import create_signed_peer_record
from libp2p.pubsub.pb import rpc_pb2

from p2pnode.chaos.raw import Attacker, attacker, publish
from p2pnode.local.homes import generate_testnet
from p2pnode.net import (
    MAX_PAYLOAD,
    NetError,
    Network,
    PeerRecord,
    Topic,
    Verdict,
    encode_record,
    open_network,
)
from p2pnode.net.contracts import sync_protocol, topic_name
from p2pnode.net.framing import frame, read_uvarint
from p2pnode.net.guards import Malformed
from p2pnode.net.penalty import Limited
from p2pnode.net.router import MAX_IWANT, bounded_iwant
from p2pnode.net.stack import dial, open_stream
from tests.fuzz_rpcs import RpcFuzzer
from tests.peers import Peer, chain, cluster, ranks, start_on_free_ports, wait_for
from tests.test_net import (
    Echo,
    Recorder,
    by_prefix,
    config,
    fully_meshed,
    peer_id_of,
    start,
    until,
)

VOTES = topic_name("test", Topic.VOTES)
Tamper = Callable[[rpc_pb2.Message], None]


def _set(**fields: object) -> Tamper:
    def tamper(msg: rpc_pb2.Message) -> None:
        for name, value in fields.items():
            setattr(msg, name, value)

    return tamper


def _topics(*topics: str) -> Tamper:
    def tamper(msg: rpc_pb2.Message) -> None:
        del msg.topicIDs[:]
        msg.topicIDs.extend(topics)

    return tamper


RSA_STYLE_ID = bytes([0x12, 0x20]) + bytes(32)
"""A sha256-multihash peer id: its key is not inline, so py-libp2p reads the `key` field."""

MALFORMED: dict[str, tuple[Tamper, Malformed]] = {
    "key that is not a public key": (_set(from_id=RSA_STYLE_ID, key=b"junk"), Malformed.ORIGIN),
    "from that is not a peer id": (_set(from_id=b"\xff" * 5), Malformed.ORIGIN),
    "empty from": (_set(from_id=b""), Malformed.ORIGIN),
    "key of another peer": (_set(key=b"\x08\x01\x12\x20" + bytes(32)), Malformed.KEY),
    "short seqno": (_set(seqno=b"\x01"), Malformed.SEQNO),
    "no signature": (_set(signature=b""), Malformed.SIGNATURE),
    "long signature": (_set(signature=bytes(65)), Malformed.SIGNATURE),
    "two topics": (_topics(VOTES, topic_name("test", Topic.PROPOSALS)), Malformed.TOPICS),
    "oversized payload": (_set(data=bytes(MAX_PAYLOAD + 1)), Malformed.OVERSIZED),
}


async def _victims(stack: AsyncExitStack) -> tuple[list[Network], Recorder]:
    judge = Recorder()
    networks = await start(stack, [judge, Recorder()])
    await until(lambda: fully_meshed(networks))
    return networks, judge


async def _attacked(stack: AsyncExitStack) -> tuple[list[Network], Recorder, Attacker, str]:
    """A victim (the first network) meshed with an honest peer, and an attacker with a gossip
    stream to the victim on the votes topic."""
    networks, judge = await _victims(stack)
    evil = await stack.enter_async_context(attacker())
    peer = await evil.connect(networks[0].addrs()[:1], [VOTES])
    return networks, judge, evil, peer


async def _still_delivers(networks: list[Network], judge: Recorder, data: bytes) -> None:
    await networks[1].publish(Topic.VOTES, data)
    await until(lambda: any(call[2] == data for call in judge.calls))


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_publish_is_dropped_counted_and_held_against_its_sender(
    case: str,
) -> None:
    tamper, reason = MALFORMED[case]
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge, evil, peer = await _attacked(stack)
            victim = networks[0]
            for index in range(victim.config.reject_limit):
                msg = evil.message(VOTES, b"bad %d" % index)
                tamper(msg)
                await evil.send(peer, publish(msg))
            await until(lambda: evil.peer_id.to_base58() in victim.banned())
            assert victim.malformed()[reason] == victim.config.reject_limit
            assert not [call for call in judge.calls if call[2].startswith(b"bad")]
            await _still_delivers(networks, judge, b"after " + case.encode())


async def test_a_wrongly_signed_message_is_dropped_before_judging() -> None:
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            _, judge, evil, peer = await _attacked(stack)
            msg = evil.message(VOTES, b"bad")
            msg.signature = bytes(64)  # the right size, the wrong bytes
            await evil.send(peer, publish(msg))
            await evil.send(peer, publish(evil.message(VOTES, b"good")))
            await until(lambda: any(call[2] == b"good" for call in judge.calls))
            assert not [call for call in judge.calls if call[2] == b"bad"]


class Authored(Recorder):
    """Accepts a payload only from the peer that wrote it: a copy under another origin is a
    forgery ("signer is not the sender")."""

    def __init__(self, author: str) -> None:
        super().__init__()
        self.author = author

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        self.calls.append((topic, origin, data))
        return Verdict.ACCEPT if origin == self.author else Verdict.REJECT


def _seen(judge: Recorder, call: tuple[Topic, str, bytes]) -> Callable[[], bool]:
    return lambda: call in judge.calls


async def test_a_message_copied_under_another_origin_does_not_censor_the_original() -> None:
    """The copies are rejected; the author's own publication of the same bytes, on any topic,
    is a different message and is judged on its own."""
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks = await start(stack, [Recorder(), Recorder()])
            judge = Authored(networks[1].peer_id)
            victim = await stack.enter_async_context(
                open_network(config(2, networks[0].addrs()[:1], expected_peers=3), judge)
            )
            await until(lambda: fully_meshed([*networks, victim]))
            evil = await stack.enter_async_context(attacker())
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            payload, thief = b"a vote by its author", evil.peer_id.to_base58()
            for topic in (Topic.VOTES, Topic.PROPOSALS):
                await evil.send(peer, publish(evil.message(topic_name("test", topic), payload)))
            await until(lambda: (Topic.PROPOSALS, thief, payload) in judge.calls)
            for topic in (Topic.VOTES, Topic.PROPOSALS):
                await networks[1].publish(topic, payload)
                await until(_seen(judge, (topic, judge.author, payload)))


async def test_peer_exchange_in_a_prune_is_never_dialled() -> None:
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, _ = await _victims(stack)
            victim = networks[0]
            stranger = await stack.enter_async_context(open_network(config(7), Recorder()))
            keys = create_identity_from_seed(stranger.config.seed)
            stranger_id = ID.from_pubkey(keys.public_key)
            envelope = create_signed_peer_record(
                stranger_id,
                [multiaddr.Multiaddr(addr.split("/p2p/")[0]) for addr in stranger.addrs()],
                keys.private_key,
            )
            evil = await stack.enter_async_context(attacker())
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            info = rpc_pb2.PeerInfo(
                peerID=stranger_id.to_bytes(), signedPeerRecord=envelope.marshal_envelope()
            )
            prune = rpc_pb2.ControlPrune(topicID=VOTES, peers=[info], backoff=1)
            await evil.send(peer, rpc_pb2.RPC(control=rpc_pb2.ControlMessage(prune=[prune])))
            # Control messages are handled in order and a PX dial inline: once the RPC after
            # the PRUNE has been handled, any dial it caused has been made.
            probe = evil.message(VOTES, b"probe")
            probe.seqno = b"\x01"
            await evil.send(peer, publish(probe))
            await until(lambda: victim.malformed()[Malformed.SEQNO] == 1)
            assert victim.peer_id not in stranger.peers()
            assert stranger.peer_id not in victim.peers()


async def test_a_failure_inside_py_libp2p_costs_the_sender_not_the_peer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever still escapes py-libp2p's message path is caught, counted as FAILED and held
    against the sender; here its router fails on the attacker's messages."""
    from libp2p.pubsub.gossipsub import GossipSub

    original = GossipSub.publish

    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge = await _victims(stack)
            victim = networks[0]
            evil = await stack.enter_async_context(attacker())
            target = evil.peer_id.to_bytes()

            async def failing(router: GossipSub, forwarder: ID, msg: rpc_pb2.Message) -> None:
                if msg.from_id == target:
                    raise RuntimeError("a bug in the library")
                await original(router, forwarder, msg)

            monkeypatch.setattr(GossipSub, "publish", failing)
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            await evil.send(peer, publish(evil.message(VOTES, b"bad")))
            await until(lambda: victim.malformed()[Malformed.FAILED] == 1)
            await _still_delivers(networks, judge, b"after a failure")


async def test_malformed_publishes_sent_to_every_peer_of_a_testnet_stop_none(
    tmp_path: Path,
) -> None:
    """Each peer of a 4-prover testnet gets publishes whose `key` is not a public key and
    whose `from` is not a peer id: once, each of these ended the peer it was sent to."""
    with trio.fail_after(150):
        genesis, homes = generate_testnet(tmp_path, 4, difficulty=300)
        async with cluster() as group, AsyncExitStack() as stack:
            peers = await start_on_free_ports(group, homes)
            await wait_for(lambda: _finalized(peers, 2), timeout=60, what="rank 2")
            votes = topic_name(genesis.network, Topic.VOTES)
            evil = await stack.enter_async_context(attacker())
            for peer in peers:
                victim = await evil.connect(peer.addrs()[:1], [votes])
                for index, case in enumerate(("key that is not a public key", "empty from")):
                    msg = evil.message(votes, b"junk %d" % index)
                    MALFORMED[case][0](msg)
                    await evil.send(victim, publish(msg))
            await wait_for(lambda: _malformed_everywhere(peers), timeout=30, what="counts")
            start = max(await ranks(peers))
            await wait_for(lambda: _finalized(peers, start + 2), timeout=60, what="2 more ranks")
            chains = [await chain(peer) for peer in peers]
            shared = set.intersection(*(set(c) for c in chains))
            assert len(shared) >= 2  # the ranks every peer holds: compared, not vacuous
            assert all(c[rank] == chains[0][rank] for c in chains for rank in shared)
            assert all(peer.process.returncode is None for peer in peers)


async def _finalized(peers: list[Peer], rank: int) -> bool:
    return min(await ranks(peers)) >= rank


async def _malformed_everywhere(peers: list[Peer]) -> bool:
    for peer in peers:
        malformed = dict((await peer.status()).malformed)
        if malformed.get(Malformed.ORIGIN.value, 0) < 2:
            return False
    return True


def _record_of(keys: KeyPair, evil: Attacker, topic: str) -> rpc_pb2.Message:
    """A well-signed announcement of a made-up peer, at a loopback port nobody listens on."""
    peer = ID.from_pubkey(keys.public_key).to_base58()
    data = encode_record(PeerRecord(peer, (f"/ip4/127.0.0.1/tcp/9/p2p/{peer}",)))
    return evil.message(topic, data, signer=keys)


async def test_a_flood_of_made_up_peers_is_neither_kept_nor_dialled_nor_passed_on() -> None:
    """Only provers' own announcements are learned: 300 made-up peers (each well signed by
    its own key) naming a port nobody listens on cost a decode each, and nothing else."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, judge = await _victims(stack)
            victim = networks[0]
            evil = await stack.enter_async_context(attacker())
            peers_topic = topic_name("test", Topic.PEERS)
            peer = await evil.connect(victim.addrs()[:1], [peers_topic])
            flood = 300
            ignored = victim.counters()[(Topic.PEERS, Verdict.IGNORE)]
            for index in range(flood):
                keys = create_identity_from_seed(hashlib.sha256(b"ground %d" % index).digest())
                await evil.send(peer, publish(_record_of(keys, evil, peers_topic)))
            await until(lambda: victim.counters()[(Topic.PEERS, Verdict.IGNORE)] >= ignored + flood)
            assert victim.known_peers() == 1, "the honest prover alone"
            assert networks[1].peer_id in victim.peers()
            judged = {origin for topic, origin, _ in judge.calls if topic is Topic.PEERS}
            assert judged <= {victim.peer_id, networks[1].peer_id}, "never even judged"
            await _still_delivers(networks, judge, b"after the flood")


async def test_ignored_messages_beyond_a_rate_count_against_their_forwarder() -> None:
    """IGNOREs are never cached: the same one replayed would cost the peer a judgement each
    time, for free. Past the bucket, each counts as a reject, and rejects ban."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            judges = [Recorder(by_prefix), Recorder()]
            networks = await start(stack, judges, ignore_burst=50, ignore_rate=1.0)
            await until(lambda: fully_meshed(networks))
            victim = networks[0]
            evil = await stack.enter_async_context(attacker())
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            replayed = evil.message(VOTES, b"ignore me")
            for _ in range(50 + victim.config.reject_limit):
                await evil.send(peer, publish(replayed))
            await until(lambda: evil.peer_id.to_base58() in victim.banned())
            assert victim.limited()[Limited.IGNORES] == victim.config.reject_limit
            assert networks[1].peer_id not in victim.banned()


async def test_sync_requests_beyond_a_stranger_s_rate_are_refused_never_a_prover_s() -> None:
    """A prover catching up on a long outage asks a hundred times in a row: held to 2 a
    second, a ten-minute outage took minutes to catch up on."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            provers = frozenset({peer_id_of(0), peer_id_of(1)})  # peer 2 is a stranger
            networks = await start(
                stack,
                [Recorder(), Recorder(), Recorder()],
                servers=[Echo(1)],
                sync_burst=3,
                sync_rate=0.001,
                provers=provers,
            )
            victim, prover, stranger = networks
            await until(lambda: stranger.peer_id in victim.peers())
            asked = [await stranger.request(victim.peer_id, b"hi", timeout=5) for _ in range(3)]
            assert asked == [[b"hi 0"]] * 3
            with pytest.raises(NetError):
                await stranger.request(victim.peer_id, b"hi", timeout=5)
            assert victim.limited()[Limited.SYNC] == 1
            for _ in range(10):
                assert await prover.request(victim.peer_id, b"hi", timeout=5) == [b"hi 0"]


async def test_a_sync_request_over_its_bound_is_not_read() -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks = await start(stack, [Recorder(), Recorder()], servers=[Echo(1)])
            victim, _ = networks
            evil = await stack.enter_async_context(attacker())
            peer = await dial(evil.host, victim.addrs()[:1])
            stream = await open_stream(evil.host, peer, sync_protocol("test"))
            await stream.write(frame(bytes(victim.config.max_sync_request + 1)))
            with pytest.raises((StreamEOF, StreamReset)):  # refused, not answered
                await read_uvarint(stream, 64)


FUZZ_SEED = 20261129
FUZZ_RPCS = 3000


async def test_a_seeded_fuzz_of_raw_rpcs_leaves_the_peer_running_and_bounded() -> None:
    """Thousands of random RPCs (envelopes, subscriptions, every control message, junk
    frames) from one attacker that is never banned; the peer keeps delivering, keeps only
    its own topics' state, and counts what it dropped."""
    rng = random.Random(FUZZ_SEED)
    with trio.fail_after(120):
        async with AsyncExitStack() as stack:
            judge = Recorder()
            networks = await start(stack, [judge, Recorder()], reject_limit=10**9)
            await until(lambda: fully_meshed(networks))
            victim = networks[0]
            evil = await stack.enter_async_context(attacker())
            ours = [topic_name("test", topic) for topic in Topic]
            fuzzer = RpcFuzzer(rng, evil, ours)
            peer = await evil.connect(victim.addrs()[:1], ours)
            for _ in range(FUZZ_RPCS):
                junk = rng.random() < 0.02
                try:
                    if junk:
                        await evil.send_raw(peer, fuzzer.junk())
                    else:
                        await evil.send(peer, fuzzer.rpc())
                except Exception:  # the victim dropped the stream: open another
                    peer = await evil.connect(victim.addrs()[:1], ours)
            await _still_delivers(networks, judge, b"after the fuzz")
            assert sum(victim.malformed().values()) > 100
            pubsub = victim._stack.pubsub
            assert set(pubsub.peer_topics) <= set(ours)
            assert set(victim._stack.router.mesh) <= set(ours)
            assert victim.known_peers() <= victim.config.max_known_peers


@pytest.mark.parametrize("protocol", ["/ipfs/id/push/1.0.0", "/ipfs/id/1.0.0", "/meshsub/1.1.0"])
async def test_junk_on_any_protocol_stream_costs_only_that_stream(protocol: str) -> None:
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge = await _victims(stack)
            victim = networks[0]
            evil = await stack.enter_async_context(attacker())
            peer = await dial(evil.host, victim.addrs()[:1])
            for junk in (b"\x05\xff\xff\xff\xff\xff", b"\xff" * 12, b"\x7f" + bytes(10)):
                stream = await open_stream(evil.host, peer, protocol)
                await stream.write(junk)
                await stream.close()
            # Each junk stream cost only itself: the connection still takes new streams.
            await open_stream(evil.host, peer, protocol)
            await _still_delivers(networks, judge, b"after junk on " + protocol.encode())


class FirstSeen(Recorder):
    """Accepts a payload the first time this peer sees it and ignores every copy after, as
    the mempool does with a mutation it holds already."""

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        seen = topic is not Topic.PEERS and any(call[2] == data for call in self.calls)
        self.calls.append((topic, origin, data))
        return Verdict.IGNORE if seen else Verdict.ACCEPT


async def test_one_payload_under_two_origins_at_two_peers_gets_no_relay_banned() -> None:
    """An outsider sends each payload to two peers at once under two names; each peer accepts
    its copy and forwards it, and the other copy is a duplicate. The relay forwarded it in
    good faith: it is charged nothing (with a tiny ignore bucket, it would be banned)."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            judges = [FirstSeen(), FirstSeen()]
            # Strangers to each other: a prover's ignores are never charged at all.
            networks = await start(
                stack, judges, ignore_burst=2, ignore_rate=0.001, provers=frozenset()
            )
            await until(lambda: fully_meshed(networks))
            first = await stack.enter_async_context(attacker())
            second = await stack.enter_async_context(attacker())
            to_first = await first.connect(networks[0].addrs()[:1], [VOTES])
            to_second = await second.connect(networks[1].addrs()[:1], [VOTES])
            copies = 20
            for index in range(copies):
                payload = b"twice %d" % index
                await first.send(to_first, publish(first.message(VOTES, payload)))
                await second.send(to_second, publish(second.message(VOTES, payload)))
            ignored = [(Topic.VOTES, Verdict.IGNORE)]
            await until(lambda: all(n.counters()[ignored[0]] == copies for n in networks))
            for network, other in zip(networks, reversed(networks), strict=True):
                assert other.peer_id not in network.banned()
                assert network.limited()[Limited.IGNORES] == 0


async def test_control_messages_for_topics_not_ours_leave_no_state() -> None:
    """py-libp2p kept a backoff per PRUNEd topic and scores per GRAFTed one, for any name, for
    ever: made-up names grew memory without bound."""
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge, evil, peer = await _attacked(stack)
            victim = networks[0]
            made_up = [f"/made/up/{index}" for index in range(200)]
            control = rpc_pb2.ControlMessage(
                prune=[rpc_pb2.ControlPrune(topicID=topic, backoff=60) for topic in made_up],
                graft=[rpc_pb2.ControlGraft(topicID=topic) for topic in made_up],
                ihave=[rpc_pb2.ControlIHave(topicID=topic, messageIDs=[b"x"]) for topic in made_up],
            )
            await evil.send(peer, rpc_pb2.RPC(control=control))
            probe = evil.message(VOTES, b"probe")
            probe.seqno = b"\x01"
            await evil.send(peer, publish(probe))  # handled after the control message
            await until(lambda: victim.malformed()[Malformed.SEQNO] == 1)
            router = victim._stack.router
            assert not set(made_up) & set(router.back_off)
            assert not set(made_up) & set(router.graft_flood_tracking[evil.peer_id])
            assert not set(made_up) & set(router.mesh)
            await _still_delivers(networks, judge, b"after the made-up topics")


async def test_an_iwant_is_answered_once_per_distinct_id_and_at_most_max_iwant() -> None:
    repeated = rpc_pb2.ControlIWant(messageIDs=[b"one"] * 4000)
    assert list(bounded_iwant(repeated).messageIDs) == [b"one"]
    many = rpc_pb2.ControlIWant(messageIDs=[b"%d" % index for index in range(1000)])
    assert len(bounded_iwant(many).messageIDs) == MAX_IWANT


async def test_a_signed_peer_record_in_an_rpc_is_not_stored() -> None:
    """py-libp2p stored the addresses of a sender's record for two hours, 3,000 of them if
    asked; peers are found through our own announcements only."""
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge, evil, peer = await _attacked(stack)
            victim = networks[0]
            addrs = [
                multiaddr.Multiaddr(f"/ip4/10.0.{i // 250}.{i % 250}/tcp/9") for i in range(300)
            ]
            record = create_signed_peer_record(evil.peer_id, addrs, evil.keys.private_key)
            rpc = publish(evil.message(VOTES, b"with a record"))
            rpc.senderRecord = record.marshal_envelope()
            await evil.send(peer, rpc)
            await until(lambda: any(call[2] == b"with a record" for call in judge.calls))
            peerstore = victim._stack.host.get_peerstore()
            stored = peerstore.addrs(evil.peer_id) if evil.peer_id in peerstore.peer_ids() else []
            assert len(stored) < 10
