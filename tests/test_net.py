"""The network adapter on real py-libp2p peers over loopback TCP, several per process."""

from __future__ import annotations

import hashlib
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID

from p2pnode.net import (
    MAX_PAYLOAD,
    NetConfig,
    NetError,
    Network,
    SyncServer,
    Topic,
    Verdict,
    fetch_genesis,
    open_network,
)
from p2pnode.net.fixes import tcp_socket
from p2pnode.net.framing import read_uvarint
from p2pnode.net.guards import Malformed
from p2pnode.net.penalty import Limited
from p2pnode.net.stack import client_host, dial, open_stream

GOSSIP = [topic for topic in Topic if topic is not Topic.PEERS]
"""The application topics; PEERS carries the periodic discovery announcements."""


@dataclass
class Recorder:
    """A judge that remembers every call and answers by a policy on the payload."""

    policy: Callable[[Topic, bytes], Verdict] = lambda topic, data: Verdict.ACCEPT
    calls: list[tuple[Topic, str, bytes]] = field(default_factory=list)

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        self.calls.append((topic, origin, data))
        return self.policy(topic, data)

    def gossip(self) -> list[tuple[Topic, str, bytes]]:
        return [call for call in self.calls if call[0] is not Topic.PEERS]


def by_prefix(topic: Topic, data: bytes) -> Verdict:
    if data.startswith(b"ignore"):
        return Verdict.IGNORE
    if data.startswith(b"reject"):
        return Verdict.REJECT
    return Verdict.ACCEPT


def seed_of(index: int) -> bytes:
    return hashlib.sha256(b"test-net peer %d" % index).digest()


def peer_id_of(index: int) -> str:
    return ID.from_pubkey(create_identity_from_seed(seed_of(index)).public_key).to_base58()


TEST_PROVERS = frozenset(peer_id_of(index) for index in range(8))
"""The test peers 0-7 are the prover set, as a genesis would name them; attackers are not."""


def config(index: int, bootstrap: Sequence[str] = (), **overrides: Any) -> NetConfig:
    overrides.setdefault("provers", TEST_PROVERS)
    return NetConfig(network="test", seed=seed_of(index), bootstrap=tuple(bootstrap), **overrides)


async def start(
    stack: AsyncExitStack,
    judges: Sequence[Recorder],
    *,
    servers: Sequence[SyncServer | None] = (),
    **overrides: Any,
) -> list[Network]:
    """One peer per judge; every peer but the first knows only the first."""
    networks: list[Network] = []
    for index, judge in enumerate(judges):
        bootstrap = networks[0].addrs()[:1] if networks else ()
        server = servers[index] if index < len(servers) else None
        cfg = config(index, bootstrap, expected_peers=len(judges), **overrides)
        networks.append(await stack.enter_async_context(open_network(cfg, judge, server)))
    return networks


async def until(condition: Callable[[], bool], poll: float = 0.01) -> None:
    """Wait for `condition`; the test's own `fail_after` bounds the wait."""
    while not condition():
        await trio.sleep(poll)


def fully_meshed(networks: Sequence[Network]) -> bool:
    others = len(networks) - 1
    return all(
        len(network.peers()) == others and min(network.mesh_sizes().values()) == others
        for network in networks
    )


async def test_peers_that_know_only_the_first_mesh_fully_and_judge_each_message_once() -> None:
    with trio.fail_after(10):
        judges = [Recorder() for _ in range(4)]
        async with AsyncExitStack() as stack:
            networks = await start(stack, judges)
            await until(lambda: fully_meshed(networks))
            for index, network in enumerate(networks):
                for topic in GOSSIP:
                    await network.publish(topic, b"%s from %d" % (topic.value.encode(), index))
            expected = Counter(
                (topic, network.peer_id, b"%s from %d" % (topic.value.encode(), index))
                for index, network in enumerate(networks)
                for topic in GOSSIP
            )
            # A duplicate judged by then fails the count (the seen and verdict caches that
            # stop them are tested on their own in test_net_units).
            await until(lambda: all(len(judge.gossip()) >= len(expected) for judge in judges))
            for network, judge in zip(networks, judges, strict=True):
                assert Counter(judge.gossip()) == expected, "every message, own too, once"
                counts = network.counters()
                assert all(counts[(topic, Verdict.ACCEPT)] == 4 for topic in GOSSIP)
                assert counts[(Topic.PEERS, Verdict.ACCEPT)] > 0, "announcements are judged"
                assert not any(
                    counts[(t, v)] for t in Topic for v in (Verdict.IGNORE, Verdict.REJECT)
                )


async def test_every_connection_sets_tcp_user_timeout_to_the_stall_timeout() -> None:
    """Each connection, dialled or accepted, has TCP_USER_TIMEOUT set to `stall_timeout`, so
    it ends once sent data stays unacknowledged that long: else a path that fails and returns
    waits out TCP's backed-off retransmissions (20-30 s after a 30 s outage) with nothing
    crossing. (That the kernel honours the option is its business; the chaos runner's
    partitions show the effect end to end.)"""
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            networks = await start(stack, [Recorder(), Recorder()], stall_timeout=3.5)
            await until(lambda: all(len(n.peers()) == 1 for n in networks))
            # The option is set as the swarm registers the connection, a moment after it is
            # listed: wait for it (the bound above fails the test if it never comes).
            await until(lambda: all(_user_timeouts(n) == [3500] for n in networks))


def _user_timeouts(network: Network) -> list[int | None]:
    """TCP_USER_TIMEOUT (ms) of each connection py-libp2p holds for `network`."""
    swarm = network._stack.host.get_network()
    found: list[int | None] = []
    for held in swarm.connections.values():
        for conn in held if isinstance(held, list | tuple) else [held]:
            sock = tcp_socket(conn)
            option = socket.TCP_USER_TIMEOUT
            found.append(None if sock is None else sock.getsockopt(socket.IPPROTO_TCP, option))
    return found


async def test_without_echo_own_messages_are_published_but_not_judged() -> None:
    with trio.fail_after(10):
        judges = [Recorder() for _ in range(3)]
        async with AsyncExitStack() as stack:
            networks = await start(stack, judges, echo=False)
            await until(lambda: fully_meshed(networks))
            for index, network in enumerate(networks):
                await network.publish(Topic.VOTES, b"vote %d" % index)
            # Our own message would have been judged inside `publish`, before it returned.
            await until(lambda: all(len(judge.gossip()) >= 2 for judge in judges))
            for index, (network, judge) in enumerate(zip(networks, judges, strict=True)):
                others = {(Topic.VOTES, n.peer_id, b"vote %d" % i) for i, n in enumerate(networks)}
                others.discard((Topic.VOTES, network.peer_id, b"vote %d" % index))
                assert sorted(judge.gossip()) == sorted(others)
                assert all(origin != network.peer_id for _, origin, _ in judge.calls)
                assert network.counters()[(Topic.VOTES, Verdict.ACCEPT)] == 2


async def test_an_own_message_the_judge_rejects_is_not_published() -> None:
    """The echo is judged like any message; only a REJECT keeps our own message back (an
    IGNORE, such as a duplicate of what the application already holds, is still sent)."""
    with trio.fail_after(10):
        author, reader = Recorder(by_prefix), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [author, reader], reject_limit=1)
            await until(lambda: fully_meshed(networks))
            for payload in (b"reject mine", b"ignore mine", b"fine"):
                await networks[0].publish(Topic.LIVENESS, payload)
            await until(lambda: len(reader.gossip()) == 2)
            assert sorted(data for _, _, data in reader.gossip()) == [b"fine", b"ignore mine"]
            counts = networks[0].counters()
            assert [counts[(Topic.LIVENESS, v)] for v in Verdict] == [1, 1, 1]
            assert networks[0].banned() == [], "never penalises itself"
            with pytest.raises(ValueError, match="exceeds"):
                await networks[0].publish(Topic.LIVENESS, bytes(MAX_PAYLOAD + 1))


async def test_ignored_and_rejected_messages_are_counted_and_not_forwarded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A line a - b - c: b ignores announcements from others, so a and c never learn of each
    other, and everything a says reaches c only through b's verdict."""

    def middle(topic: Topic, data: bytes) -> Verdict:
        return Verdict.IGNORE if topic is Topic.PEERS else by_prefix(topic, data)

    with trio.fail_after(10):
        a, b, c = Recorder(), Recorder(middle), Recorder()
        async with AsyncExitStack() as stack:
            hub = await stack.enter_async_context(open_network(config(1), b))
            ends = [
                await stack.enter_async_context(open_network(config(i, hub.addrs()[:1]), judge))
                for i, judge in ((0, a), (2, c))
            ]
            await until(lambda: len(hub.peers()) == 2 and min(hub.mesh_sizes().values()) == 2)
            for payload in (b"ignore me", b"reject me", b"ok 1", b"reject again", b"ok 2"):
                await ends[0].publish(Topic.PROPOSALS, payload)
            counts = hub.counters
            await until(lambda: counts()[(Topic.PROPOSALS, Verdict.REJECT)] == 2)
            await until(lambda: counts()[(Topic.PROPOSALS, Verdict.IGNORE)] == 1)
            await until(lambda: len(c.gossip()) == 2)
            assert sorted(data for _, _, data in c.gossip()) == [b"ok 1", b"ok 2"]
            assert counts()[(Topic.PROPOSALS, Verdict.ACCEPT)] == 2
            assert counts()[(Topic.PEERS, Verdict.IGNORE)] > 0
            assert "discovery only learns and forwards accepted" in caplog.text
            assert ends[0].peer_id not in ends[1].peers(), "still a line"
            assert ends[0].peer_id in hub.peers(), "two rejects are below the ban limit"


async def test_a_peer_that_keeps_sending_rejected_messages_is_disconnected_and_refused() -> None:
    with trio.fail_after(10):
        judges = [Recorder(), Recorder(by_prefix)]
        async with AsyncExitStack() as stack:
            # The spammer is a stranger: a prover's rejects are counted, never banned.
            provers = frozenset({peer_id_of(1)})
            spammer, victim = await start(
                stack, judges, reject_limit=3, ban_period=30.0, provers=provers
            )
            await until(lambda: fully_meshed([spammer, victim]))
            for index in range(3):
                await spammer.publish(Topic.VOTES, b"reject %d" % index)
            await until(lambda: spammer.peer_id not in victim.peers())
            assert victim.banned() == [spammer.peer_id]
            assert victim.counters()[(Topic.VOTES, Verdict.REJECT)] == 3
            assert victim.limited()[Limited.BANNED] == 0

            # The spammer dials again and again: each connection is counted and dropped.
            host = spammer._stack.host
            for attempt in range(1, 6):
                # Its own end may not have noticed the drop yet: a fresh connection each time.
                await host.disconnect(ID.from_base58(victim.peer_id))
                await dial(host, victim.addrs()[:1])
                await until(lambda: victim.limited()[Limited.BANNED] >= attempt)  # noqa: B023
                await until(lambda: spammer.peer_id not in victim.peers())
            assert victim.limited()[Limited.BANNED] == 5
            assert sum(victim.mesh_sizes().values()) == 0
            assert victim.banned() == [spammer.peer_id]


async def test_a_prover_that_sends_rejected_messages_is_counted_but_never_refused() -> None:
    """A version skew or a bug on either side must not cut the prover set apart."""
    with trio.fail_after(10):
        judges = [Recorder(), Recorder(by_prefix)]
        async with AsyncExitStack() as stack:
            prover, victim = await start(stack, judges, reject_limit=3, ban_period=30.0)
            await until(lambda: fully_meshed([prover, victim]))
            for index in range(6):
                await prover.publish(Topic.VOTES, b"reject %d" % index)
            await until(lambda: victim.counters()[(Topic.VOTES, Verdict.REJECT)] == 6)
            await prover.publish(Topic.VOTES, b"accepted after all")
            await until(lambda: any(c[2] == b"accepted after all" for c in judges[1].calls))
            assert victim.banned() == []
            assert prover.peer_id in victim.peers()


async def test_a_burst_of_500_messages_is_delivered_whole_thanks_to_backpressure() -> None:
    """py-libp2p drops RPCs once a peer's outbound queue holds 32; an unpaced burst of 500
    fills it within milliseconds. Two peers: a third only adds relayed duplicates, and all
    peers share this one CPU core."""
    with trio.fail_after(10):
        sender, receiver = Recorder(), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [sender, receiver])
            await until(lambda: fully_meshed(networks))
            burst = [b"burst %d" % index for index in range(500)]
            deepest = 0
            for payload in burst:
                await networks[0].publish(Topic.MUTATIONS, payload)
                # What `publish` waits on: the longest per-peer outbound queue.
                deepest = max([deepest, *networks[0]._stack.queue_depths().values()])
            assert deepest >= networks[0].config.queue_threshold, "the burst did press"
            await until(lambda: len(receiver.gossip()) >= len(burst), poll=0.05)
            assert sorted(data for _, _, data in receiver.gossip()) == sorted(burst)


async def test_republished_bytes_reach_only_the_peers_that_ignored_them_before() -> None:
    """Re-broadcasting a stalled round's vote must work although message ids are payload
    hashes: a peer that ignored it (too early) judges it again, one that accepted it does not,
    and the author's own judge saw it once."""
    early = {b"too early"}

    def patient(topic: Topic, data: bytes) -> Verdict:
        return Verdict.IGNORE if data in early else Verdict.ACCEPT

    def judged(judge: Recorder, data: bytes) -> int:
        return sum(payload == data for _, _, payload in judge.gossip())

    with trio.fail_after(10):
        author, reader = Recorder(), Recorder(patient)
        async with AsyncExitStack() as stack:
            networks = await start(stack, [author, reader])
            await until(lambda: fully_meshed(networks))
            for payload in (b"too early", b"on time"):
                await networks[0].publish(Topic.VOTES, payload)
            await until(lambda: judged(reader, b"too early") == judged(reader, b"on time") == 1)
            early.clear()
            for payload in (b"too early", b"on time"):
                await networks[0].publish(Topic.VOTES, payload)
            await until(lambda: judged(reader, b"too early") == 2)
            assert judged(reader, b"on time") == 1, "seen already: not judged again"
            assert judged(author, b"too early") == judged(author, b"on time") == 1
            counts = networks[1].counters()
            assert counts[(Topic.VOTES, Verdict.IGNORE)] == 1
            assert counts[(Topic.VOTES, Verdict.ACCEPT)] == 2


class Echo:
    """Answers a request with `count` items derived from it."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def serve(self, request: bytes) -> list[bytes]:
        return [request + b" %d" % index for index in range(self.count)]


class Stuck:
    async def serve(self, request: bytes) -> list[bytes]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")


class Big:
    async def serve(self, request: bytes) -> list[bytes]:
        return [b"small", b"x" * (256 * 1024 + 1), b"never sent"]


async def test_sync_requests_round_trip_and_fail_with_net_error() -> None:
    with trio.fail_after(10):
        judges = [Recorder() for _ in range(5)]
        servers: list[SyncServer | None] = [None, Echo(3), Echo(100), Stuck(), Big()]
        async with AsyncExitStack() as stack:
            client, *peers = await start(stack, judges, servers=servers, max_response_items=64)
            await until(lambda: fully_meshed([client, *peers]))
            echo, many, stuck, big = (peer.peer_id for peer in peers)
            assert await client.request(echo, b"ask", timeout=5) == [b"ask 0", b"ask 1", b"ask 2"]
            assert await client.request(echo, b"", timeout=5) == [b" 0", b" 1", b" 2"]
            assert len(await client.request(many, b"q", timeout=5)) == 64, "capped by the server"
            assert await client.request(big, b"q", timeout=5) == [b"small"], "cut at oversize"
            with pytest.raises(NetError, match=r"timed out after 0\.5 s"):
                await client.request(stuck, b"q", timeout=0.5)
            with pytest.raises(NetError, match=f"sync request to {client.peer_id} failed"):
                await peers[0].request(client.peer_id, b"q", timeout=5)  # serves nothing
            with pytest.raises(NetError, match="exceeds"):
                await client.request(echo, b"x" * (256 * 1024 + 1), timeout=5)
            with pytest.raises(NetError, match="itself"):
                await client.request(client.peer_id, b"q", timeout=5)
            assert await client.request(echo, b"again", timeout=5) == [
                b"again 0",
                b"again 1",
                b"again 2",
            ], "a failed request leaves the connection usable"


async def test_the_genesis_is_fetched_before_knowing_the_network() -> None:
    with trio.fail_after(10):
        async with AsyncExitStack() as stack:
            holder = await stack.enter_async_context(
                open_network(config(0, genesis=b"the genesis"), Recorder())
            )
            bare = await stack.enter_async_context(open_network(config(1), Recorder()))
            address = holder.addrs()[0]
            assert await fetch_genesis(address, timeout=5) == b"the genesis"
            with pytest.raises(NetError, match=r"genesis from .* failed"):
                await fetch_genesis(bare.addrs()[0], timeout=5)  # has none
            gone = address.replace(address.split("/")[4], "1")  # port 1: nobody listens
            with pytest.raises(NetError, match=r"genesis from .* failed"):
                await fetch_genesis(gone, timeout=3)
            with pytest.raises(NetError, match="bad multiaddr"):
                await fetch_genesis("/not/a/multiaddr", timeout=3)


async def test_closing_while_every_peer_publishes_raises_nothing() -> None:
    closed = trio.Event()
    after_close = [0] * 4

    async def chatter(network: Network, index: int) -> None:
        count = 0
        while True:
            for topic in GOSSIP:
                await network.publish(topic, b"chatter %d %d" % (index, count))
                count += 1
                after_close[index] += closed.is_set()
            await trio.sleep(0.005)

    with trio.fail_after(10):
        judges = [Recorder() for _ in range(4)]
        async with trio.open_nursery() as publishers:
            async with AsyncExitStack() as stack:
                networks = await start(stack, judges)
                await until(lambda: fully_meshed(networks))
                for index, network in enumerate(networks):
                    publishers.start_soon(chatter, network, index)
                await until(lambda: all(len(judge.gossip()) > 40 for judge in judges))
            # Every network is closed now: each publisher calls publish on it again.
            closed.set()
            await until(lambda: min(after_close) > 0)
            publishers.cancel_scope.cancel()


async def test_an_undecodable_rpc_costs_its_stream_not_the_peer() -> None:
    """Bytes that are not a pubsub RPC, sent on the gossip protocol, make py-libp2p raise a
    protobuf DecodeError in the connection's task; the peer drops that stream and lives on."""
    with trio.fail_after(15):
        first, second = Recorder(), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [first, second])
            await until(lambda: fully_meshed(networks))
            async with client_host() as attacker:
                peer = await dial(attacker, networks[0].addrs()[:1])
                stream = await open_stream(attacker, peer, "/meshsub/1.1.0")
                await stream.write(b"\x05\xff\xff\xff\xff\xff")  # a length, then junk
                with pytest.raises((StreamEOF, StreamReset)):  # the peer drops the stream
                    await read_uvarint(stream, 64)
                assert networks[0].malformed()[Malformed.UNDECODABLE] == 1
                # The connection lives on: a new stream on it is accepted.
                await open_stream(attacker, peer, "/meshsub/1.1.0")
            await networks[1].publish(Topic.VOTES, b"after the junk")
            await until(lambda: any(data == b"after the junk" for _, _, data in first.calls))


async def test_a_dial_goes_where_it_is_told_whatever_identify_stored_before() -> None:
    """py-libp2p dials one address per transport among all it holds for a peer, and identify
    adds the listen addresses the peer reports: a wildcard there (/ip4/0.0.0.0) reached the
    dialler itself on another host, every time, while the right address sat unused."""
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            (target,) = await start(stack, [Recorder()])
            host = await stack.enter_async_context(client_host())
            peer = ID.from_base58(target.peer_id)
            stale = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/1")  # nobody listens on port 1
            host.get_peerstore().add_addrs(peer, [stale], 3600)
            assert await dial(host, target.addrs()[:1]) == target.peer_id
            assert stale not in host.get_peerstore().addrs(peer)


async def _reset_our_stream(network: Network, other: ID, note: bytes) -> None:
    """Reset `network`'s stream to `other`; a publish finds it dead and another is opened."""
    pubsub = network._stack.pubsub
    dead = pubsub.peers[other]
    await dead.reset()
    await network.publish(Topic.VOTES, note)
    await until(lambda: pubsub.peers.get(other) not in (None, dead))


async def _heard(networks: Sequence[Network], judge: Recorder, data: bytes) -> None:
    """Once meshed again, what the first network publishes reaches `judge`."""
    await until(lambda: fully_meshed(networks))
    await networks[0].publish(Topic.VOTES, data)
    await until(lambda: any(call[2] == data for call in judge.calls))


async def test_a_peer_whose_stream_from_us_failed_still_gets_our_messages() -> None:
    """Our stream to a peer fails while its stream to us lives on (a flapping link ends the two
    at different moments): we open another, keep the subscriptions it announced on its own
    stream, and send it our messages again."""
    with trio.fail_after(15):
        first, second = Recorder(), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [first, second])
            await until(lambda: fully_meshed(networks))
            other = ID.from_base58(networks[1].peer_id)
            await _reset_our_stream(networks[0], other, b"on the dead stream")
            await _heard(networks, second, b"on the new stream")


async def test_a_peer_that_resets_each_of_our_streams_is_not_sent_the_cache_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stream we open again to a peer used to replay the whole message cache of every
    topic to it: a peer resetting our streams had it sent at the rate of a round trip."""
    with trio.fail_after(15):
        first, second = Recorder(), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [first, second])
            await until(lambda: fully_meshed(networks))
            pubsub = networks[0]._stack.pubsub
            other = ID.from_base58(networks[1].peer_id)
            replays: list[str] = []
            original = pubsub.router.send_recent_messages

            async def counted(peer: ID, topic: str) -> None:
                if peer == other:
                    replays.append(topic)
                await original(peer, topic)

            monkeypatch.setattr(pubsub.router, "send_recent_messages", counted)
            for index in range(3):
                await _reset_our_stream(networks[0], other, b"reset %d" % index)
            await _heard(networks, second, b"still heard")
            assert replays == []


async def test_a_connected_peer_left_without_our_stream_gets_one_again() -> None:
    """py-libp2p retries a stream only from the failure it sees; one lost while its retry
    still counted as pending left a connected peer without our messages for good."""
    with trio.fail_after(15):
        first, second = Recorder(), Recorder()
        async with AsyncExitStack() as stack:
            networks = await start(stack, [first, second])
            await until(lambda: fully_meshed(networks))
            pubsub = networks[0]._stack.pubsub
            other = ID.from_base58(networks[1].peer_id)
            del pubsub.peers[other]  # as the lost retry left it: no stream, none pending
            pubsub.peer_queues.pop(other).close()
            pubsub.router.remove_peer(other)
            await until(lambda: other in pubsub.peers)
            await _heard(networks, second, b"on the mended stream")
