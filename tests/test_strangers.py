"""Many cheap identities against real peers on loopback: strangers share what one address is
given, whatever number of names they come under, and provers keep their places."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.utils import encode_varint_prefixed

from p2pnode.chaos import outsider
from p2pnode.chaos.raw import Attacker, attacker, publish
from p2pnode.net import Network, Topic, Verdict, topic_name
from p2pnode.net.admission import Refused
from p2pnode.net.contracts import sync_protocol
from p2pnode.net.framing import write_frame
from p2pnode.net.guards import Malformed
from p2pnode.net.penalty import Limited
from p2pnode.net.stack import dial, open_stream
from p2pnode.net.sync import ask_sync
from p2pnode.net.yamux import BUFFER_BOUND, STREAM_BOUND
from tests.test_net import Echo, Recorder, config, fully_meshed, start, until

VOTES = topic_name("test", Topic.VOTES)
OURS = [topic_name("test", topic) for topic in Topic]


async def _delivers(networks: list[Network], judge: Recorder, data: bytes) -> None:
    """A message published by the second network reaches the first's judge."""
    await networks[1].publish(Topic.VOTES, data)
    await until(lambda: any(call[2] == data for call in judge.calls))


async def _meshed(stack: AsyncExitStack, **overrides: Any) -> tuple[list[Network], Recorder]:
    """A victim (the first network, its judge returned) meshed with one prover."""
    judge = Recorder()
    networks = await start(stack, [judge, Recorder()], **overrides)
    await until(lambda: fully_meshed(networks))
    return networks, judge


async def _attackers(stack: AsyncExitStack, count: int) -> list[Attacker]:
    return [await stack.enter_async_context(attacker()) for _ in range(count)]


async def _try_connect(evil: Attacker, addrs: list[str], topics: list[str]) -> str | None:
    """Connect and subscribe; None when the victim drops the connection on the way."""
    try:
        return await evil.connect(addrs, topics)
    except Exception:
        return None


async def test_a_bad_signature_is_charged_and_the_same_bytes_are_verified_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """py-libp2p dropped a message whose signature failed without charging anyone and
    without remembering it: the same bytes again cost a verify, for ever, for free."""
    from libp2p.pubsub.validators import signature_validator as original

    from p2pnode.net import guards

    verified: list[bytes] = []

    def counting(msg: rpc_pb2.Message) -> bool:
        verified.append(msg.data)
        return original(msg)

    monkeypatch.setattr(guards, "signature_validator", counting)
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            evil = (await _attackers(stack, 1))[0]
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            forged = evil.message(VOTES, b"forged")
            forged.signature = bytes(64)
            limit = victim.config.reject_limit
            for _ in range(limit):
                await evil.send(peer, publish(forged))
            await until(lambda: evil.peer_id.to_base58() in victim.banned())
            assert victim.malformed()[Malformed.SIGNATURE_INVALID] == limit
            assert verified.count(b"forged") == 1
            assert not [call for call in judge.calls if call[2] == b"forged"]
            await _delivers(networks, judge, b"after the forgeries")


async def test_identities_from_one_address_share_its_stranger_seats() -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            # The inbound rate lifted: the seats are what is tried here.
            networks, judge = await _meshed(stack, max_strangers_per_prefix=3, inbound_rate=100.0)
            victim = networks[0]
            for evil in await _attackers(stack, 8):
                await _try_connect(evil, victim.addrs()[:1], [VOTES])
            await until(lambda: victim.refused()[Refused.STRANGER_SEATS] == 5)
            await until(lambda: len(victim.peers()) == 4)  # the prover and 3 strangers
            assert victim.strangers() == 3
            assert networks[1].peer_id in victim.peers()
            await _delivers(networks, judge, b"with the seats taken")


def _count_heartbeats(network: Network) -> Callable[[], int]:
    router = network._stack.router
    beats = [0]
    original = router.mesh_heartbeat

    def counted() -> Any:
        beats[0] += 1
        return original()

    router.mesh_heartbeat = counted  # type: ignore[method-assign]
    return lambda: beats[0]


async def test_strangers_grafting_every_topic_leave_the_provers_meshed() -> None:
    """Twelve identities that GRAFT every topic and forward nothing once made heartbeats
    prune honest peers out of each other's meshes; now they share two places per topic."""
    with trio.fail_after(40):
        async with AsyncExitStack() as stack:
            judge = Recorder()
            # Seats (and the inbound rate) for all twelve: the mesh is what is tried here.
            networks = await start(
                stack,
                [judge, Recorder(), Recorder()],
                max_strangers_per_prefix=12,
                inbound_rate=100.0,
            )
            await until(lambda: fully_meshed(networks))
            victim = networks[0]
            beats = _count_heartbeats(victim)
            async with AsyncExitStack() as attack:
                for evil in await _attackers(attack, 12):
                    peer = await evil.connect(victim.addrs()[:1], OURS)
                    grafts = [rpc_pb2.ControlGraft(topicID=topic) for topic in OURS]
                    await evil.send(peer, rpc_pb2.RPC(control=rpc_pb2.ControlMessage(graft=grafts)))
                await until(lambda: victim.refused()[Refused.MESH] >= 10 * len(OURS))
                start_beats = beats()
                await until(lambda: beats() >= start_beats + 3)
                provers = {ID.from_base58(network.peer_id) for network in networks[1:]}
                for members in victim._stack.router.mesh.values():
                    assert provers <= members
                    assert len(members - provers) == 2, "the strangers' two places"
                await _delivers(networks, judge, b"under the eclipse")
            await until(lambda: fully_meshed(networks))
            await _delivers(networks, judge, b"after the eclipse")


async def test_raw_sockets_that_never_handshake_keep_no_honest_dial_out() -> None:
    """260 sockets that never speak once held py-libp2p's 250 inbound places for 10 s each:
    9 of 13 honest dials failed. Now a network's newcomers take its oldest quiet places (the
    inbound rate is lifted here, so that every socket gets that far)."""
    with trio.fail_after(40):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack, max_handshakes=16, inbound_rate=1000.0)
            victim = networks[0]
            host, port = victim.addrs()[0].split("/")[2], int(victim.addrs()[0].split("/")[4])
            sockets = [
                await trio.open_tcp_stream(host, port, local_address="127.0.1.1")
                for _ in range(260)
            ]
            try:
                await until(lambda: victim.refused()[Refused.HANDSHAKE_DISPLACED] >= 240)
                late = await stack.enter_async_context(
                    _network(config(2, victim.addrs()[:1], expected_peers=3))
                )
                await until(lambda: late.peer_id in victim.peers())
            finally:
                for sock in sockets:
                    await sock.aclose()
            await _delivers(networks, judge, b"after the raw sockets")


async def test_a_storm_of_sockets_from_an_address_no_prover_uses_is_closed_unread() -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack, inbound_rate=4.0)
            victim = networks[0]
            host, port = victim.addrs()[0].split("/")[2], int(victim.addrs()[0].split("/")[4])
            for _ in range(50):
                sock = await trio.open_tcp_stream(host, port, local_address="127.0.1.1")
                await sock.aclose()
            await until(lambda: victim.refused()[Refused.INBOUND_RATE] >= 50 - 8 - 1)
            # The provers' own address is not held to it: a late prover joins at once.
            late = await stack.enter_async_context(
                _network(config(2, victim.addrs()[:1], expected_peers=3, inbound_rate=4.0))
            )
            await until(lambda: late.peer_id in victim.peers())
            await _delivers(networks, judge, b"after the storm")


async def test_streams_a_stranger_opens_and_resets_in_a_loop_are_paced_then_reset() -> None:
    """Each stream a stranger opened was negotiated at no charge: one that opened gossip
    streams and reset them in a loop took 46 % of a peer's core. Each now costs its network
    STREAM_COST of the strangers' work budget; beyond a second's wait, it is reset unread."""
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack, stranger_rate=16.0, stranger_prefix_rate=16.0)
            victim = networks[0]
            (evil,) = await _attackers(stack, 1)
            peer = await evil.connect(victim.addrs())
            opened = 0

            async def open_and_reset() -> None:
                nonlocal opened
                with contextlib.suppress(Exception):
                    stream = await open_stream(evil.host, peer, "/meshsub/1.1.0")
                    opened += 1
                    await stream.reset()

            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(open_and_reset)
            assert victim.refused()[Refused.STREAMS] > 0
            assert opened < 40
            await _delivers(networks, judge, b"after the streams")


def _network(cfg: Any) -> Any:
    from p2pnode.net import open_network

    return open_network(cfg, Recorder())


async def test_a_flood_of_empty_iwants_is_charged_and_leaves_the_log_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two 100 KB RPCs of empty IWANTs wrote 99,850 log lines once (one WARNING each past
    py-libp2p's 10/s), and were never charged."""
    with trio.fail_after(30), caplog.at_level(logging.DEBUG):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            evil = (await _attackers(stack, 1))[0]
            peer = await evil.connect(victim.addrs()[:1], [VOTES])
            empty = [rpc_pb2.ControlIWant() for _ in range(50_000)]
            caplog.clear()
            for _ in range(2):
                rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(iwant=empty))
                await evil.send(peer, rpc)
            await until(lambda: victim.malformed()[Malformed.CONTROL] == 2)
            await _delivers(networks, judge, b"after the iwants")
            lines = [r for r in caplog.records if r.levelno >= logging.INFO]
            assert len(lines) < 20, [r.getMessage() for r in lines[:5]]


async def _ask(evil: Attacker, victim: Network) -> bool:
    """One sync request from `evil`; whether it was answered."""
    try:
        stream = await open_stream(evil.host, victim.peer_id, sync_protocol("test"))
        await ask_sync(stream, b"hi", max_request=256, max_items=1, max_item_size=64, max_bytes=64)
    except Exception:
        return False
    return True


async def test_strangers_of_one_address_share_its_sync_budget_whatever_their_names() -> None:
    """Each answer can be a MiB read from the store: per identity, new names bought answers."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks = await start(
                stack, [Recorder(), Recorder()], servers=[Echo(1)], sync_burst=3, sync_rate=0.001
            )
            victim = networks[0]
            evils = await _attackers(stack, 4)
            for evil in evils:
                await dial(evil.host, victim.addrs()[:1])
            answered = [await _ask(evil, victim) for evil in evils]
            assert answered == [True, True, True, False]
            assert victim.limited()[Limited.SYNC] == 1
            # A prover keeps a budget of its own.
            assert await networks[1].request(victim.peer_id, b"hi", timeout=5) == [b"hi 0"]


@pytest.mark.parametrize(
    ("flood", "counted"),
    [
        ("bad-signatures", lambda v: v.malformed()[Malformed.SIGNATURE_INVALID]),
        ("graft-eclipse", lambda v: v.refused()[Refused.MESH]),
        ("mutation-flood", lambda v: v.counters()[(Topic.MUTATIONS, Verdict.ACCEPT)]),
        ("iwant-flood", lambda v: v.malformed()[Malformed.CONTROL]),
        ("stream-churn", lambda v: v.refused()[Refused.STREAMS] + v.refused()[Refused.PACED]),
    ],
)
async def test_the_outsiders_floods_reach_the_peer_and_leave_it_delivering(
    flood: str, counted: Callable[[Network], int]
) -> None:
    """The floods `scripts/chaos` and `scripts/attack` run, each for a moment against one
    peer: they arrive (the peer counts them) and the peer goes on delivering."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            target = outsider.Target("test", (victim.addrs()[0],), trio.current_time() + 1.5)
            sent = await outsider.run(flood, target)
            assert sum(sent.values()) > 0
            await until(lambda: counted(victim) > 0)
            await _delivers(networks, judge, b"after the " + flood.encode())


def _buffered(network: Network) -> int:
    """Bytes the network's yamux connections hold unread."""
    connections = network._stack.host.get_network().connections.values()
    muxers: list[Any] = [conn.muxed_conn for conns in connections for conn in conns]
    return sum(len(buffer) for muxer in muxers for buffer in muxer.stream_buffers.values())


async def test_a_sender_past_its_receive_window_loses_the_connection_not_our_memory() -> None:
    """py-libp2p's yamux reads on past the window it gave and only logs it: while a stranger's
    reads were paced, 20 MB it wrote sat in memory within a second."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            evil = (await _attackers(stack, 1))[0]
            peer = await evil.connect(victim.addrs()[:1])
            stream = evil._streams[peer]
            pad = 200 * 1024  # an RPC that parses: field 99 is not one the RPC knows
            size = bytes([0x80 | (pad & 0x7F), 0x80 | ((pad >> 7) & 0x7F), pad >> 14])
            frame = encode_varint_prefixed(b"\x9a\x06" + size + bytes(pad))
            muxed: Any = stream.muxed_stream  # type: ignore[attr-defined]
            written, biggest = 0, 0
            while written < 20 * 1024 * 1024:
                muxed.send_window = 1 << 40  # as if it had been given a huge window
                try:
                    await stream.write(frame)
                except StreamError:  # reset, or the pipe broken: the connection is gone
                    break
                written += len(frame)
                biggest = max(biggest, _buffered(victim))
            assert written < 2 * 1024 * 1024, "cut off within the first MiBs"
            assert biggest <= 2 * BUFFER_BOUND
            await until(lambda: evil.peer_id.to_base58() not in victim.peers())
            await _delivers(networks, judge, b"after the overrun")


async def test_inbound_connections_once_closed_hold_no_task_or_slot_of_the_peer() -> None:
    """py-libp2p's handler of an accepted socket waited for the whole swarm to finish: every
    inbound connection kept a task and an inbound slot for the process's life, and once the
    slots were used (250 by default) no one could connect, provers included."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, _ = await _meshed(stack, inbound_rate=1000.0)
            victim = networks[0]
            living = trio.lowlevel.current_statistics().tasks_living
            for _ in range(20):
                async with attacker() as evil:
                    await evil.connect(victim.addrs()[:1])
            await until(lambda: victim.peers() == [networks[1].peer_id])
            await until(lambda: trio.lowlevel.current_statistics().tasks_living < living + 10)
            swarm: Any = victim._stack.host.get_network()
            assert swarm._inbound_limiter.borrowed_tokens == 0


async def test_a_connection_opening_streams_past_its_bound_is_closed() -> None:
    """Each stream that never names its protocol held a slot of py-libp2p's global stream
    limit for 30 s: one stranger's connection filled it in a second."""
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            evil = (await _attackers(stack, 1))[0]
            await evil.connect(victim.addrs()[:1])
            muxed: Any = (
                evil.host.get_network()
                .get_connections(ID.from_base58(victim.peer_id))[0]
                .muxed_conn
            )
            muxed.stream_buffers = dict(muxed.stream_buffers)  # its own side unbounded
            muxed.stream_backlog_semaphore = trio.Semaphore(10**6)
            opened = 0
            with contextlib.suppress(Exception):
                for _ in range(4 * STREAM_BOUND):
                    await muxed.open_stream()
                    opened += 1
            await until(lambda: evil.peer_id.to_base58() not in victim.peers())
            swarm: Any = victim._stack.host.get_network()
            await until(lambda: swarm._resource_manager._current_streams < 2 * STREAM_BOUND)
            await _delivers(networks, judge, b"after the streams")


async def test_many_requests_in_turn_leave_no_stream_behind_on_a_connection() -> None:
    """Streams that are done give their place back: the bound counts open streams only."""
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            networks = await start(stack, [Recorder(), Recorder()], servers=[Echo(1)])
            await until(lambda: fully_meshed(networks))
            victim, asker = networks
            for _ in range(3 * STREAM_BOUND):
                assert await asker.request(victim.peer_id, b"hi", timeout=5) == [b"hi 0"]
            swarm: Any = victim._stack.host.get_network()
            (conn,) = swarm.get_connections(ID.from_base58(asker.peer_id))
            assert len(conn.muxed_conn.stream_buffers) < 8
            assert asker.peer_id in victim.peers()


async def test_a_peer_is_read_on_its_two_newest_pubsub_streams() -> None:
    """Each stream read holds an RPC in hand: a peer opening sixty of them held 12 MB. A new
    stream replaces the peer's oldest, so a peer whose link flapped is heard on its new stream
    though its old ones sit on connections the victim still holds."""
    with trio.fail_after(20):
        async with AsyncExitStack() as stack:
            networks, judge = await _meshed(stack)
            victim = networks[0]
            evil = (await _attackers(stack, 1))[0]
            peer = await evil.connect(victim.addrs()[:1], [VOTES])  # its first stream
            first = evil._streams[peer]
            streams = [await open_stream(evil.host, peer, "/meshsub/1.1.0") for _ in range(3)]
            await until(lambda: victim.malformed()[Malformed.CONTROL] == 2)
            with pytest.raises(StreamError):  # the oldest was dropped
                await first.read(1)
            message = publish(evil.message(VOTES, b"on the newest stream"))
            await streams[-1].write(encode_varint_prefixed(message.SerializeToString()))
            await until(lambda: any(call[2] == b"on the newest stream" for call in judge.calls))
            await _delivers(networks, judge, b"after the streams")


class Large:
    """Answers every request with 512 KiB: more than a yamux window, so a reader that does
    not read blocks the writer."""

    async def serve(self, request: bytes) -> list[bytes]:
        return [b"x" * 16_000 for _ in range(32)]


async def test_strangers_that_never_read_their_answers_leave_provers_served() -> None:
    with trio.fail_after(30):
        async with AsyncExitStack() as stack:
            networks = await start(stack, [Recorder(), Recorder()], servers=[Large(), Large()])
            await until(lambda: fully_meshed(networks))
            victim, prover = networks
            evil = (await _attackers(stack, 1))[0]
            await evil.connect(victim.addrs()[:1])
            for _ in range(victim.config.sync_burst):
                stream = await open_stream(evil.host, victim.peer_id, sync_protocol("test"))
                await write_frame(stream, b"r")  # and never read the answer
            answer = await prover.request(victim.peer_id, b"r", timeout=5)
            assert len(answer) == 32
