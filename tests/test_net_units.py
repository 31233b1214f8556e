"""The network adapter's pure parts: framing, penalties, peer records, dial choice, config."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

import multiaddr
import pytest
import trio
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.connection import swarm_connection
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

from p2pnode.chain.types import canonical
from p2pnode.net import (
    NetConfig,
    NetError,
    PeerRecord,
    Topic,
    Verdict,
    decode_record,
    encode_record,
    mesh_degrees,
)
from p2pnode.net.discovery import Directory, Learned, announcement
from p2pnode.net.fixes import CachedAddrs, Guarded, route_libp2p_logging
from p2pnode.net.framing import frame, read_frame, read_uvarint, uvarint
from p2pnode.net.gate import Gate
from p2pnode.net.guards import check_libp2p_version, message_id
from p2pnode.net.penalty import Buckets, Limited, Penalties
from p2pnode.net.router import GuardedGossipSub
from p2pnode.wire.codec import MAX_ADDRS, VERSION, Liveness, MessageKind, Peers, encode


def _peer_id(name: bytes) -> str:
    return ID.from_pubkey(
        create_identity_from_seed(hashlib.sha256(name).digest()).public_key
    ).to_base58()


ALICE = _peer_id(b"alice")
BOB = _peer_id(b"bob")


class Buffer:
    """An in-memory ByteStream that returns at most `chunk` bytes per read."""

    def __init__(self, data: bytes, chunk: int = 3) -> None:
        self.data = data
        self.chunk = chunk
        self.written = b""

    async def read(self, n: int) -> bytes:
        out, self.data = self.data[: min(n, self.chunk)], self.data[min(n, self.chunk) :]
        return out

    async def write(self, data: bytes) -> None:
        self.written += data


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
async def test_a_frame_reads_back_whatever_the_read_sizes(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    assert await read_frame(Buffer(frame(data) + b"next"), limit=size) == data


async def test_a_frame_over_the_limit_is_refused_before_its_body_is_read() -> None:
    stream = Buffer(uvarint(1_000_000))
    with pytest.raises(NetError, match="exceeds"):
        await read_frame(stream, limit=1000)


async def test_a_truncated_frame_or_varint_is_an_error() -> None:
    with pytest.raises(NetError, match="ended"):
        await read_frame(Buffer(frame(b"abcdef")[:-1]), limit=100)
    with pytest.raises(NetError, match="longer than 10"):
        await read_uvarint(Buffer(b"\xff" * 11), limit=2**70)


def test_uvarint_matches_the_protobuf_encoding() -> None:
    assert uvarint(0) == b"\x00"
    assert uvarint(300) == b"\xac\x02"
    with pytest.raises(ValueError, match="negative"):
        uvarint(-1)


def test_penalties_ban_after_the_limit_within_the_window_and_expire() -> None:
    penalties = Penalties(limit=3, window=10.0, ban_period=60.0)
    assert not penalties.reject(ALICE, 0.0)
    assert not penalties.reject(ALICE, 1.0)
    assert penalties.reject(ALICE, 2.0)
    assert penalties.is_banned(ALICE, 30.0)
    assert not penalties.reject(ALICE, 31.0), "a ban is announced once"
    assert penalties.banned(30.0) == [ALICE]
    assert penalties.expire(61.0) == []
    assert penalties.expire(62.0) == [ALICE]
    assert not penalties.is_banned(ALICE, 62.0)


def test_rejects_spread_wider_than_the_window_do_not_ban() -> None:
    penalties = Penalties(limit=3, window=10.0, ban_period=60.0)
    assert not any(penalties.reject(BOB, t) for t in (0.0, 6.0, 12.0, 18.0, 24.0))
    penalties.expire(100.0)
    assert not penalties.reject(BOB, 100.0)


def test_a_peer_record_is_the_codec_s_peers_message() -> None:
    record = PeerRecord(ALICE, (f"/ip4/127.0.0.1/tcp/4001/p2p/{ALICE}",))
    data = encode_record(record)
    assert data == encode(Peers(ALICE, record.addrs))
    assert decode_record(data, origin=ALICE) == record


def _envelope(*body: object) -> bytes:
    """The canonical CBOR of a PEERS envelope around any body (`encode` refuses bad ones)."""
    return canonical([VERSION, int(MessageKind.PEERS), list(body)])


@pytest.mark.parametrize(
    "data",
    [
        encode(Peers(BOB, (f"/ip4/127.0.0.1/tcp/1/p2p/{BOB}",))),  # announces someone else
        encode(Peers(ALICE, ())),
        encode(Peers(ALICE, (f"/ip4/127.0.0.1/tcp/1/p2p/{BOB}",))),
        encode(Peers(ALICE, ("/ip4/127.0.0.1/tcp/1",))),
        encode(Peers(ALICE, (f"/nonsense/1/p2p/{ALICE}",))),
        _envelope(ALICE, [7]),
        _envelope(ALICE, [f"/ip4/127.0.0.1/tcp/1/p2p/{ALICE}"] * (MAX_ADDRS + 1)),
        _envelope(ALICE),
        canonical([ALICE, [f"/ip4/127.0.0.1/tcp/1/p2p/{ALICE}"]]),  # a bare record, no envelope
        encode(Liveness(1, b"k" * 32, b"r" * 32, b"s" * 64)),  # another kind
        encode(Peers(ALICE, (f"/ip4/127.0.0.1/tcp/1/p2p/{ALICE}",))) + b"\x00",  # not canonical
    ],
)
def test_malformed_or_foreign_peer_records_are_refused(data: bytes) -> None:
    assert decode_record(data, origin=ALICE) is None


def test_garbage_and_oversized_peer_records_are_refused() -> None:
    assert decode_record(b"\xff\x00garbage", origin=ALICE) is None
    assert decode_record(b"\x00" * 5000, origin=ALICE) is None


def test_an_announcement_keeps_only_what_peers_accept() -> None:
    addrs = [f"/ip4/127.0.0.1/tcp/{port}/p2p/{ALICE}" for port in range(1, MAX_ADDRS + 3)]
    long = f"/dns4/{'x' * 250}/tcp/1/p2p/{ALICE}"
    record = announcement(ALICE, [long, *addrs])
    assert record.addrs == tuple(addrs[:MAX_ADDRS])
    assert decode_record(encode_record(record), origin=ALICE) == record


def _record(peer: str) -> PeerRecord:
    return PeerRecord(peer, (f"/ip4/127.0.0.1/tcp/1/p2p/{peer}",))


def test_the_smaller_peer_id_dials_and_the_larger_waits_out_the_grace() -> None:
    small = Directory("12D3KooWA", grace=4.0, forget_after=20.0, max_peers=12)
    large = Directory("12D3KooWZ", grace=4.0, forget_after=20.0, max_peers=12)
    small.learn(_record("12D3KooWZ"), now=0.0)
    large.learn(_record("12D3KooWA"), now=0.0)
    assert small.to_dial(0.0, (), (), ()) == [_record("12D3KooWZ")]
    assert large.to_dial(1.0, (), (), ()) == []
    assert large.to_dial(4.0, (), (), ()) == [_record("12D3KooWA")]


def test_dial_choice_skips_connected_dialling_refused_and_respects_room() -> None:
    directory = Directory("12D3KooW0", grace=4.0, forget_after=20.0, max_peers=3)
    for peer in ("12D3KooW1", "12D3KooW2", "12D3KooW3", "12D3KooW4", "12D3KooW5"):
        assert directory.learn(_record(peer), now=0.0) is Learned.NEW
    assert directory.learn(_record("12D3KooW1"), now=1.0) is Learned.KNOWN
    assert directory.learn(_record("12D3KooW0"), now=1.0) is Learned.KNOWN, "never ourselves"
    chosen = directory.to_dial(0.0, ["12D3KooW1"], ["12D3KooW2"], ["12D3KooW3"])
    assert len(chosen) == 1, "room for 3 - 1 connected - 1 dialling"
    assert chosen[0] in (_record("12D3KooW4"), _record("12D3KooW5"))


def test_dial_targets_are_drawn_at_random_not_by_id_order() -> None:
    """Ids sorted first do not take every dial slot: made-up ids can be ground to sort low."""
    picked: set[str] = set()
    for seed in range(20):
        directory = Directory(
            "12D3KooW0", grace=4.0, forget_after=20.0, max_peers=1, rng=random.Random(seed)
        )
        for peer in ("12D3KooW1", "12D3KooW2", "12D3KooW3", "12D3KooW4"):
            directory.learn(_record(peer), now=0.0)
        picked.update(record.peer_id for record in directory.to_dial(0.0, (), (), ()))
    assert picked == {"12D3KooW1", "12D3KooW2", "12D3KooW3", "12D3KooW4"}


def test_a_full_directory_evicts_peers_never_reached_and_keeps_those_that_were() -> None:
    directory = Directory("12D3KooW0", grace=4.0, forget_after=600.0, max_peers=3, max_known=3)
    for index, peer in enumerate(("12D3KooW1", "12D3KooW2", "12D3KooW3")):
        directory.learn(_record(peer), now=float(index))
    directory.heard_of("12D3KooW1", now=5.0)  # connected
    directory.dialled("12D3KooW2", failed=False, now=5.0)
    assert directory.learn(_record("12D3KooW4"), now=6.0) is Learned.NEW
    assert len(directory) == 3
    assert {r.peer_id for r in directory.known()} == {"12D3KooW1", "12D3KooW2", "12D3KooW4"}
    directory.dialled("12D3KooW4", failed=False, now=7.0)
    assert directory.learn(_record("12D3KooW5"), now=8.0) is Learned.FULL
    assert len(directory) == 3


def test_a_failed_dial_backs_off_doubling_and_stale_peers_are_forgotten() -> None:
    directory = Directory("12D3KooW0", grace=4.0, forget_after=20.0, max_peers=12)
    directory.learn(_record("12D3KooW1"), now=0.0)
    directory.dialled("12D3KooW1", failed=True, now=0.0)
    assert directory.to_dial(0.5, (), (), ()) == []
    assert directory.to_dial(1.0, (), (), ()) == [_record("12D3KooW1")]
    directory.dialled("12D3KooW1", failed=True, now=1.0)
    assert directory.to_dial(2.5, (), (), ()) == []
    assert directory.to_dial(3.0, (), (), ()) == [_record("12D3KooW1")]
    directory.dialled("12D3KooW1", failed=False, now=3.0)
    assert directory.to_dial(3.0, (), (), ()) == [_record("12D3KooW1")]
    directory.forget_stale(now=21.0)
    assert directory.known() == []


def test_a_connected_peer_stays_known_and_is_dialled_again_within_the_redial_cap() -> None:
    """A peer lost in a partition is dialled again every `redial[1]` seconds at most, for as
    long as it was connected until `forget_after` ago, announcements or not."""
    directory = Directory(
        "12D3KooW0", grace=4.0, forget_after=600.0, max_peers=12, retry=(0.5, 2.0)
    )
    directory.learn(_record("12D3KooW1"), now=0.0)
    directory.heard_of("12D3KooW1", now=500.0)  # connected until then
    for attempt in range(6):
        directory.dialled("12D3KooW1", failed=True, now=1000.0 + 2.0 * attempt)
    assert directory.to_dial(1011.9, (), (), ()) == []
    assert directory.to_dial(1012.0, (), (), ()) == [_record("12D3KooW1")]
    directory.forget_stale(now=1099.0)
    assert directory.known() == [_record("12D3KooW1")]
    directory.forget_stale(now=1101.0)
    assert directory.known() == []


@pytest.mark.parametrize(
    ("peers", "low", "target", "high"),
    [(1, 1, 1, 12), (4, 3, 3, 12), (7, 6, 6, 12), (8, 3, 4, 12), (16, 3, 4, 15), (30, 3, 4, 29)],
)
def test_mesh_degrees_keep_small_prover_sets_whole_and_larger_ones_sparse(
    peers: int, low: int, target: int, high: int
) -> None:
    degrees = mesh_degrees(peers)
    assert (degrees.low, degrees.target, degrees.high) == (low, target, high)
    assert degrees.low <= degrees.target <= degrees.high
    assert degrees.high >= peers - 1  # nothing is ever pruned: no GRAFT/PRUNE churn


def test_a_sparse_mesh_stays_sparse_over_heartbeats() -> None:
    """py-libp2p's opportunistic grafting added two peers per heartbeat, and nothing prunes
    below D_high = N-1: at 16 peers every mesh held all 15 others after a few seconds."""
    degrees = mesh_degrees(16)
    router = GuardedGossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=degrees.target,
        degree_low=degrees.low,
        degree_high=degrees.high,
        heartbeat_interval=1,
    )
    others = [ID(b"peer %d" % index) for index in range(15)]

    class _Pubsub:
        def __init__(self) -> None:
            self.peer_topics = {"votes": set(others)}

    router.pubsub = _Pubsub()  # type: ignore[assignment]
    router.peer_protocol = dict.fromkeys(others, PROTOCOL_ID_V11)
    router.mesh = {"votes": set(others[: degrees.target])}
    router.provers = router.reserved = frozenset(others)
    for _ in range(10):
        grafts, prunes = router.mesh_heartbeat()
        assert not grafts
        assert not prunes
    assert len(router.mesh["votes"]) == degrees.target


def test_config_refuses_bad_values() -> None:
    seed = bytes(32)
    with pytest.raises(ValueError, match="seed"):
        NetConfig(network="n", seed=b"short")
    with pytest.raises(ValueError, match="network"):
        NetConfig(network="a/b", seed=seed)
    with pytest.raises(ValueError, match="queue_threshold"):
        NetConfig(network="n", seed=seed, queue_threshold=32)
    with pytest.raises(ValueError, match="heartbeat"):
        NetConfig(network="n", seed=seed, heartbeat=0)
    with pytest.raises(ValueError, match="genesis"):
        NetConfig(network="n", seed=seed, genesis=b"x" * 11, max_genesis_size=10)


class _Message:
    def __init__(self, data: bytes, topic: str, seqno: bytes, origin: bytes = b"author") -> None:
        self.data = data
        self.topicIDs = [topic]
        self.from_id = origin
        self.seqno = seqno


def test_message_ids_name_topic_origin_and_payload_and_every_announcement() -> None:
    identify = message_id("/p2pnode/n/peers/cbor")

    def of(data: bytes, topic: str, seqno: bytes, origin: bytes = b"author") -> bytes:
        return identify(_Message(data, f"/p2pnode/n/{topic}/cbor", seqno, origin))  # type: ignore[arg-type]

    vote = of(b"vote", "votes", b"1")
    assert vote == of(b"vote", "votes", b"2"), "a re-broadcast is the same message"
    assert vote != of(b"vote", "votes", b"1", b"thief"), "a copy under another origin is not"
    assert vote != of(b"vote", "proposals", b"1"), "nor one on another topic"
    assert vote != of(b"votf", "votes", b"1")
    assert of(b"me", "peers", b"1") != of(b"me", "peers", b"2")


def test_libp2p_records_go_to_p2pnode_logging_not_stderr(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    route_libp2p_logging()
    route_libp2p_logging()
    forwarders = [h for h in logging.getLogger("libp2p").handlers if type(h).__name__ == "_Forward"]
    assert len(forwarders) == 1, "idempotent"
    with caplog.at_level(logging.WARNING, logger="p2pnode.net.libp2p"):
        logging.getLogger("libp2p.pubsub.gossipsub").warning("noise %d", 1)
    routed = [r.name for r in caplog.records if r.name.startswith("p2pnode.")]
    assert routed == ["p2pnode.net.libp2p.pubsub.gossipsub"]
    assert "noise" not in capsys.readouterr().err


def test_a_failed_dial_is_not_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """py-libp2p logs every failed dial at ERROR; to a peer a dial to a peer that is down is
    expected, so it is kept at DEBUG (other ERROR records stay errors)."""
    route_libp2p_logging()
    with caplog.at_level(logging.DEBUG, logger="p2pnode.net.libp2p"):
        tcp = logging.getLogger("libp2p.transport.tcp.tcp")
        tcp.error("Failed to open TCP stream: %s", OSError("unreachable"))
        tcp.error("Unexpected error opening TCP stream: %s", "boom")
        swarm = logging.getLogger("libp2p.network.swarm")
        swarm.error("failed to upgrade security for peer %s: %s", "12D3KooWx", "mismatch")
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("p2p")]
    assert levels == [
        ("DEBUG", "Failed to open TCP stream: unreachable"),
        ("ERROR", "Unexpected error opening TCP stream: boom"),
        ("DEBUG", "failed to upgrade security for peer 12D3KooWx: mismatch"),
    ]


def test_the_stopped_auto_connector_s_lines_are_debug(caplog: pytest.LogCaptureFixture) -> None:
    """Its first check runs before the stack stops it, and said it was `initiating 2048 new
    dials` at INFO, though it dials nothing after the stop."""
    route_libp2p_logging()
    with caplog.at_level(logging.DEBUG, logger="p2pnode.net.libp2p"):
        connector = logging.getLogger("libp2p.network.auto_connector")
        connector.setLevel(logging.INFO)
        connector.info("below target; initiating %d new dials", 2048)
        connector.setLevel(logging.NOTSET)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("p2p")]
    assert levels == [("DEBUG", "below target; initiating 2048 new dials")]


def test_libp2p_cannot_install_a_root_stderr_handler_behind_our_back() -> None:
    route_libp2p_logging()
    # The module logs with `logging.debug(...)`: it must be a named logger now, not the root.
    assert vars(swarm_connection)["logging"] is logging.getLogger(swarm_connection.__name__)


class TeardownError(RuntimeError):
    pass


@asynccontextmanager
async def noisy_service(*, crash_while_running: bool = False) -> AsyncIterator[None]:
    """Like py-libp2p's background services: a nursery whose task fails at teardown (or, when
    asked, while the body runs, which cancels the body)."""

    async def fail(delay: float) -> None:
        if delay:
            await trio.sleep(delay)
        raise TeardownError("Nursery is closed to new arrivals")

    async with trio.open_nursery() as nursery:
        if crash_while_running:
            nursery.start_soon(fail, 0.01)
        try:
            yield
        finally:
            if not crash_while_running:
                nursery.start_soon(fail, 0)


async def test_the_guard_swallows_teardown_noise() -> None:
    async with Guarded(noisy_service(), "svc"):
        pass


async def test_the_guard_keeps_the_body_error_and_drops_the_noise() -> None:
    with pytest.raises(KeyError, match="body"):
        async with Guarded(noisy_service(), "svc"):
            raise KeyError("body")


async def test_the_guard_honours_an_outer_cancellation() -> None:
    with trio.move_on_after(0.05) as scope:
        async with Guarded(noisy_service(), "svc"):
            await trio.sleep_forever()
    assert scope.cancelled_caught


async def test_a_service_that_dies_under_the_body_surfaces_as_net_error() -> None:
    with pytest.raises(NetError, match="svc stopped"):
        async with Guarded(noisy_service(crash_while_running=True), "svc"):
            await trio.sleep_forever()


async def test_a_service_that_dies_under_a_body_with_nurseries_surfaces_as_net_error() -> None:
    """Cancelled in nurseries of its own, the body ends with a group of Cancelleds, not one:
    the peer's network then returned as if asked to stop."""

    ended: BaseException | None = None
    try:
        async with (
            Guarded(noisy_service(crash_while_running=True), "svc"),
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    except BaseException as err:  # a stray Cancelled must not reach the test runner either
        ended = err
    assert isinstance(ended, NetError), repr(ended)
    assert "svc stopped" in str(ended)


def test_a_bucket_spends_its_burst_then_refills_at_its_rate_and_stays_bounded() -> None:
    buckets = Buckets(rate=2.0, burst=3, max_peers=2)
    assert [buckets.take("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("a", now=0.5), "one token back after half a second"
    assert not buckets.take("a", now=0.5)
    assert buckets.take("b", now=0.5)
    assert buckets.take("c", now=0.5)
    assert buckets.take("a", now=0.5), "a was forgotten (the bound): a full bucket again"


def _gate(
    policy: Callable[[Topic, bytes], Verdict], penalised: list[set[str]], **overrides: Any
) -> Gate:
    class Judge:
        def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
            return policy(topic, data)

    config = NetConfig(network="n", seed=bytes(32), **overrides)
    directory = Directory("me", grace=4.0, forget_after=20.0, max_peers=12)
    return Gate(
        "me", config, Judge(), directory, penalise=penalised.append, learn=lambda r: Learned.NEW
    )


async def test_the_gate_charges_a_reject_to_author_and_forwarder_and_ignores_past_a_rate() -> None:
    penalised: list[set[str]] = []
    gate = _gate(lambda t, d: Verdict(d.decode()), penalised, ignore_burst=1, ignore_rate=0.001)
    assert gate.validate(Topic.VOTES, "relay", "author", b"reject") is Verdict.REJECT
    assert penalised == [{"relay", "author"}]
    assert gate.validate(Topic.VOTES, "relay", "author", b"ignore") is Verdict.IGNORE
    assert penalised == [{"relay", "author"}], "within the bucket"
    assert gate.validate(Topic.VOTES, "relay", "author", b"ignore") is Verdict.IGNORE
    assert penalised[-1] == {"relay"}
    assert gate.limited[Limited.IGNORES] == 1


async def test_the_gate_drops_a_payload_accepted_under_another_origin_free_of_charge() -> None:
    penalised: list[set[str]] = []
    gate = _gate(lambda t, d: Verdict.ACCEPT, penalised, ignore_burst=1, ignore_rate=0.001)
    assert gate.validate(Topic.VOTES, "a", "a", b"same") is Verdict.ACCEPT
    for _ in range(3):
        assert gate.validate(Topic.VOTES, "relay", "b", b"same") is Verdict.IGNORE
    assert penalised == []
    assert gate.counts[(Topic.VOTES, Verdict.IGNORE)] == 3
    assert gate.validate(Topic.PROPOSALS, "relay", "b", b"same") is Verdict.ACCEPT, "per topic"


def test_the_guards_refuse_a_py_libp2p_they_were_not_written_for() -> None:
    check_libp2p_version("0.8.1")
    with pytest.raises(RuntimeError, match=r"py-libp2p 0\.9\.0 is installed"):
        check_libp2p_version("0.9.0")


async def test_the_gate_charges_no_relay_for_passing_on_our_own_message() -> None:
    """Peers pass certificates on under their own origin: our own precommit relayed back is a
    duplicate, not an ignore to charge."""
    penalised: list[set[str]] = []
    gate = _gate(lambda t, d: Verdict.IGNORE, penalised, ignore_burst=1, ignore_rate=0.001)
    assert gate.validate(Topic.CONFIRMATIONS, "me", "me", b"precommit") is Verdict.ACCEPT
    for _ in range(3):
        assert gate.validate(Topic.CONFIRMATIONS, "relay", "relay", b"precommit") is Verdict.IGNORE
    assert penalised == []


def test_a_host_s_addresses_are_rebuilt_at_most_once_per_ttl() -> None:
    """py-libp2p asks for them on every RPC it sends (its signed peer record)."""
    now = [0.0]
    built: list[float] = []

    def build() -> list[multiaddr.Multiaddr]:
        built.append(now[0])
        return [multiaddr.Multiaddr(f"/ip4/127.0.0.1/tcp/{4000 + len(built)}")]

    addrs = CachedAddrs(build, ttl=1.0, clock=lambda: now[0])
    assert [addrs() for _ in range(100)][-1] == [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")]
    now[0] = 0.99
    addrs().clear()  # a caller that changes its copy changes nothing here
    assert addrs() == [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")]
    now[0] = 1.0
    assert addrs() == [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4002")]
    assert built == [0.0, 1.0]


def test_kept_peers_are_never_forgotten_and_always_dialled_whatever_the_room() -> None:
    directory = Directory(
        "12D3KooW0", grace=4.0, forget_after=20.0, max_peers=1, kept={"12D3KooW1", "12D3KooW2"}
    )
    for peer in ("12D3KooW1", "12D3KooW2", "12D3KooW3"):
        directory.learn(_record(peer), now=0.0)
    chosen = {record.peer_id for record in directory.to_dial(0.0, ["12D3KooW9"], (), ())}
    assert chosen == {"12D3KooW1", "12D3KooW2"}, "no room for the third, always for provers"
    directory.forget_stale(now=1000.0)
    assert {record.peer_id for record in directory.known()} == {"12D3KooW1", "12D3KooW2"}


def test_each_dial_takes_one_address_the_next_after_a_failure() -> None:
    peer = "12D3KooW1"
    addrs = tuple(f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}" for port in (1, 2, 3))
    directory = Directory("12D3KooW0", grace=4.0, forget_after=20.0, max_peers=4)
    directory.learn(PeerRecord(peer, addrs), now=0.0)
    tried = []
    now = 0.0
    for _ in range(4):
        (record,) = directory.to_dial(now, (), (), ())
        tried.append(record.addrs[0])
        directory.dialled(peer, failed=True, now=now, address=record.addrs[0])
        now += 60.0
    assert tried == [addrs[0], addrs[1], addrs[2], addrs[0]]


def test_an_address_where_another_peer_answered_is_dropped_until_announced_again() -> None:
    peer = "12D3KooW1"
    good, wrong = f"/ip4/127.0.0.1/tcp/1/p2p/{peer}", f"/ip4/127.0.0.1/tcp/2/p2p/{peer}"
    directory = Directory("12D3KooW0", grace=4.0, forget_after=20.0, max_peers=4)
    directory.learn(PeerRecord(peer, (wrong, good)), now=0.0)
    directory.dialled(peer, failed=True, now=0.0, address=wrong, wrong_peer=True)
    assert [r.addrs for r in directory.to_dial(10.0, (), (), ())] == [(good,)]
    directory.dialled(peer, failed=True, now=10.0, address=good, wrong_peer=True)
    assert directory.to_dial(100.0, (), (), ()) == [], "nothing left to dial"
    directory.learn(PeerRecord(peer, (good,)), now=101.0)
    assert [r.addrs for r in directory.to_dial(101.0, (), (), ())] == [(good,)]


def test_another_host_s_loopback_address_is_never_kept_to_dial() -> None:
    peer = "12D3KooW1"
    remote, loop = f"/ip4/10.9.9.9/tcp/1/p2p/{peer}", f"/ip4/127.0.0.1/tcp/1/p2p/{peer}"
    directory = Directory(
        "12D3KooW0", grace=4.0, forget_after=20.0, max_peers=4, local_ips=lambda: ["127.0.0.1"]
    )
    directory.learn(PeerRecord(peer, (remote, loop)), now=0.0)
    assert directory.known() == [PeerRecord(peer, (remote,))]


def test_a_dial_that_reached_another_peer_is_told_apart() -> None:
    from libp2p.security.noise.exceptions import PeerIDMismatchesPubkey

    from p2pnode.net.failures import answered_as_another

    failed = RuntimeError("handshake failed")
    failed.__cause__ = PeerIDMismatchesPubkey("expected one, got another")
    assert answered_as_another(BaseExceptionGroup("dial", [failed]))
    assert not answered_as_another(OSError("connection refused"))


async def test_an_rpc_leaves_without_the_signed_peer_record() -> None:
    """py-libp2p put a signed peer record (about 213 bytes) in every RPC a peer sent: a fifth
    of its bytes at n = 4, and nobody reads ours."""
    from libp2p.pubsub.pb import rpc_pb2

    from p2pnode.net.guards import GuardedPubsub

    written: list[bytes] = []

    class Stream:
        async def write(self, data: bytes) -> None:
            written.append(data)

    rpc = rpc_pb2.RPC(publish=[rpc_pb2.Message(data=b"vote", topicIDs=["votes"])])
    rpc.senderRecord = b"\x0a" * 213
    pubsub = object.__new__(GuardedPubsub)  # write_msg uses nothing of a running pubsub
    assert await pubsub.write_msg(cast(Any, Stream()), rpc)
    (data,) = written
    assert data[0] == len(data) - 1, "one byte of length: the RPC is under 128 bytes"
    sent = rpc_pb2.RPC.FromString(data[1:])
    assert not sent.HasField("senderRecord")
    assert list(sent.publish) == list(rpc.publish)
