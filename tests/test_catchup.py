"""Catching up: final frames served in batches, checked one by one, bad ones counted."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from p2pnode.chain.messages import MutationMsg, SyncRequest
from p2pnode.chain.types import CertKind, Frame
from p2pnode.chain.validation import FrameChecker
from p2pnode.consensus import ProviderError
from p2pnode.local.homes import generate_testnet
from p2pnode.peer.catchup import BATCH, PROBED, CatchUp, PeersAhead
from p2pnode.peer.node import Node
from p2pnode.peer.store import Store
from p2pnode.wire.codec import decode, encode, encode_frame
from tests import chainkit
from tests.chainkit import T0

NETWORK = "catchup-test"
KEYS = chainkit.keypairs(31, 32, 33, 34)
GENESIS = chainkit.make_genesis(NETWORK, KEYS)


def final_frame() -> Frame:
    """A valid final frame at rank 1, with a commit certificate of three provers."""
    frame = chainkit.proven(GENESIS, KEYS[0], (b"m",), timestamp=T0 + 1)
    return chainkit.certified(GENESIS, frame, CertKind.COMMIT, 0, KEYS[:3])


class Fetcher:
    """Peers that answer every request with a fixed list of items (or fail)."""

    def __init__(self, answers: dict[str, list[bytes] | Exception]) -> None:
        self.answers = answers
        self.asked: list[tuple[str, SyncRequest]] = []

    def peers(self) -> list[str]:
        return list(self.answers)

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]:
        asked = decode(request)
        assert isinstance(asked, SyncRequest)
        self.asked.append((peer_id, asked))
        answer = self.answers[peer_id]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    made = Store(tmp_path / "store.sqlite", GENESIS)
    yield made
    made.close()


def service(store: Store, answers: dict[str, list[bytes] | Exception]) -> CatchUp:
    return CatchUp(store, FrameChecker(GENESIS), Fetcher(answers))


async def test_a_peer_s_final_frames_are_checked_and_stored(store: Store) -> None:
    sync = service(store, {"peer": [encode_frame(final_frame())]})
    assert await sync.synchronize(None) == final_frame()
    # Frames compare without their certificate: the stored one must keep it.
    stored = store.tip()
    assert stored == final_frame()
    assert stored.certificate is not None
    assert stored.certificate == final_frame().certificate
    assert (sync.best_peer_rank, sync.rejected) == (1, 0)
    assert isinstance(sync.fetcher, Fetcher)
    assert sync.fetcher.asked == [("peer", SyncRequest(1, BATCH))]


async def test_the_frames_a_sync_stored_are_told(store: Store) -> None:
    told: list[Frame] = []
    sync = CatchUp(
        store,
        FrameChecker(GENESIS),
        Fetcher({"peer": [encode_frame(final_frame())]}),
        stored=told.extend,
    )
    await sync.synchronize(None)
    assert told == [final_frame()]
    assert told[0].mutations == (b"m",)


async def test_the_frames_before_a_bad_one_are_kept_and_stored_together(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    original = store.append_many

    def counted(frames: Sequence[Frame]) -> None:
        batches.append(len(frames))
        original(frames)

    monkeypatch.setattr(store, "append_many", counted)
    sync = service(store, {"peer": [encode_frame(final_frame()), b"\x00garbage"]})
    with pytest.raises(ProviderError, match="no peer"):
        await sync.synchronize(None)
    assert store.tip() == final_frame(), "the good frame before the bad one is kept"
    assert (sync.best_peer_rank, sync.rejected) == (1, 1)
    assert batches == [1], "in one transaction per answer"


async def test_without_peers_the_tip_stands(store: Store) -> None:
    assert await service(store, {}).synchronize(None) == GENESIS.frame()


@pytest.mark.parametrize(
    "item",
    [
        b"\x00garbage",
        # A vote certificate does not make a frame final.
        encode_frame(
            chainkit.certified(
                GENESIS,
                chainkit.proven(GENESIS, KEYS[0], (b"m",), timestamp=T0 + 1),
                CertKind.VOTES,
                0,
                KEYS[:3],
            )
        ),
    ],
    ids=["undecodable", "not final"],
)
async def test_a_bad_frame_is_counted_and_its_peer_skipped(store: Store, item: bytes) -> None:
    sync = service(store, {"bad": [item], "down": OSError("unreachable")})
    with pytest.raises(ProviderError, match="no peer"):
        await sync.synchronize(None)
    assert sync.rejected == 1
    assert store.tip() == GENESIS.frame()
    good = service(store, {"bad": [item], "good": [encode_frame(final_frame())]})
    assert await good.synchronize(None) == final_frame()
    assert good.rejected == 1


async def test_an_empty_answer_does_not_end_the_sync_while_a_peer_is_known_ahead(
    store: Store,
) -> None:
    """A lagging (or lying) peer answers with nothing; a valid certificate showed that some
    peer holds rank 1, so the sync goes on to the next peer instead of stopping there."""
    sync = service(store, {"lagging": [], "ahead": [encode_frame(final_frame())]})
    sync.ahead.note("relay-not-connected", 1)
    assert await sync.synchronize(None) == final_frame()
    assert isinstance(sync.fetcher, Fetcher)
    assert [peer for peer, _ in sync.fetcher.asked] == ["lagging", "ahead"]


async def test_a_peer_known_to_be_ahead_is_asked_first(store: Store) -> None:
    sync = service(store, {"lagging": [], "ahead": [encode_frame(final_frame())]})
    sync.ahead.note("ahead", 1)
    assert await sync.synchronize(None) == final_frame()
    assert isinstance(sync.fetcher, Fetcher)
    assert [peer for peer, _ in sync.fetcher.asked] == ["ahead"]


def test_peers_ahead_are_bounded_and_keep_the_furthest() -> None:
    ahead = PeersAhead(capacity=2)
    ahead.note("a", 5)
    ahead.note("b", 7)
    ahead.note("c", 3)  # below every rank held: not kept
    ahead.note("a", 4)  # lower than a's: ignored
    assert ahead.order(["a", "b", "c"], 0, 0) == ["b", "a", "c"]
    ahead.note("d", 9)  # replaces the lowest
    assert ahead.best() == 9
    assert ahead.order(["a", "b", "d"], 6, 0) == ["d", "b", "a"]


def test_provers_are_asked_before_strangers_each_in_turn() -> None:
    ahead = PeersAhead()
    peers = ["s1", "p1", "s2", "p2"]
    assert ahead.order(peers, 0, 0, provers={"p1", "p2"}) == ["p1", "p2", "s1", "s2"]
    assert ahead.order(peers, 0, 1, provers={"p1", "p2"}) == ["p2", "p1", "s2", "s1"]


async def test_a_stranger_that_stalls_is_asked_after_every_prover(store: Store) -> None:
    sync = CatchUp(
        store,
        FrameChecker(GENESIS),
        Fetcher({"stalling": ProviderError("timed out"), "prover": [encode_frame(final_frame())]}),
        provers={"prover"},
    )
    assert await sync.synchronize(None) == final_frame()
    assert isinstance(sync.fetcher, Fetcher)
    assert [peer for peer, _ in sync.fetcher.asked] == ["prover"]


async def test_requests_are_served_from_the_store(store: Store) -> None:
    store.append(final_frame())
    sync = service(store, {})
    assert await sync.serve(encode(SyncRequest(1, 10))) == [encode_frame(final_frame())]
    assert await sync.serve(encode(SyncRequest(2, 10))) == []
    assert await sync.serve(encode(MutationMsg((b"not a request",)))) == []
    assert await sync.serve(b"\x00garbage") == []


def prober(store: Store, answers: dict[str, list[bytes] | Exception]) -> CatchUp:
    """A CatchUp whose peers are provers, but for those named "stranger"."""
    provers = {peer for peer in answers if peer != "stranger"}
    return CatchUp(store, FrameChecker(GENESIS), Fetcher(answers), provers=provers)


async def test_a_probe_asks_one_prover_for_the_frame_after_the_tip_and_stores_nothing(
    store: Store,
) -> None:
    final = encode_frame(final_frame())
    sync = prober(store, {"stranger": [final], "prover": [final]})
    assert await sync.probe() == [final_frame()]
    assert isinstance(sync.fetcher, Fetcher)
    assert sync.fetcher.asked == [("prover", SyncRequest(1, PROBED))]
    assert store.tip() == GENESIS.frame(), "the engine decides what becomes final"


async def test_a_probe_returns_the_frames_in_order_and_notes_their_prover_ahead(
    store: Store,
) -> None:
    """Two ranks on: the engine finalizes the first and, given the second, syncs at once,
    asking first the prover that showed it (a prover that answers with less does not end
    that sync)."""
    first = final_frame()
    frame = chainkit.proven(GENESIS, KEYS[1], timestamp=T0 + 2, parent=first)
    second = chainkit.certified(GENESIS, frame, CertKind.COMMIT, 0, KEYS[1:])
    sync = prober(store, {"prover": [encode_frame(first), encode_frame(second), b"\x00"]})
    assert await sync.probe() == [first, second]
    assert sync.rejected == 0, "what is beyond PROBED frames is not even read"
    assert sync.ahead.best() == 2
    assert sync.ahead.order(["other", "prover"], 0, 0) == ["prover", "other"]


async def test_a_probe_asks_the_next_prover_each_time_and_gets_nothing_from_a_bad_answer(
    store: Store,
) -> None:
    sync = prober(store, {"down": OSError("unreachable"), "empty": [], "liar": [b"\x00junk"]})
    assert [await sync.probe() for _ in range(3)] == [[], [], []]
    assert isinstance(sync.fetcher, Fetcher)
    assert sorted(peer for peer, _ in sync.fetcher.asked) == ["down", "empty", "liar"]
    assert sync.rejected == 1
    assert await prober(store, {"stranger": [encode_frame(final_frame())]}).probe() == []
    assert sync.ahead.best() == 0


async def test_a_stalled_prover_hands_the_probed_frame_to_its_engine(tmp_path: Path) -> None:
    """What a stalled prover does each period: its messages again, then a probe; a final frame
    the probe brings is the engine's to finalize (or to sync from, were it further on)."""
    genesis, homes = generate_testnet(tmp_path, 4, base_port=0, difficulty=100)
    keys = [home.keypair() for home in homes]
    frame = chainkit.proven(genesis, keys[1], (b"m",), timestamp=genesis.timestamp + 1)
    final = chainkit.certified(genesis, frame, CertKind.COMMIT, 0, keys[1:])
    node = Node(homes[0], keys[0], genesis, homes[0].settings({}))
    try:
        node.sync.fetcher = Fetcher({keys[2].prover.identity(): [encode_frame(final)]})
        assert node.machine.stored_messages() == 0
        await node._send_latest()
        assert node.machine.stored_messages() == 1
    finally:
        node.store.close()
