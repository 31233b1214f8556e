"""The peer's sqlite store: final frames, its own votes and the engine's journal."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pnode.chain.crypto import Keypair, sign, vote_statement
from p2pnode.chain.genesis import Genesis
from p2pnode.chain.types import (
    HASH_SIZE,
    Certificate,
    CertKind,
    Frame,
    Vote,
    canonical,
    digest,
    mutations_root,
)
from p2pnode.chain.vdf import FORM_SIZE
from p2pnode.consensus import Lock, RoundRecord
from p2pnode.peer.store import LOOKUP_CHUNK, Store
from p2pnode.peer.writer import StoreError
from p2pnode.wire.codec import encode_frame

NETWORK = "store-test"
T0 = 1_700_000_000_000
KEYS = tuple(Keypair.from_seed(bytes([i]) * 32) for i in range(1, 5))
GENESIS = Genesis.create(NETWORK, [k.prover for k in KEYS], 100, T0)


def child(parent: Frame, tag: int, mutations: tuple[bytes, ...] = ()) -> Frame:
    """A well-formed frame extending `parent` (the store does not check proofs), committed."""
    frame = Frame(
        round=parent.round + 1,
        parent=parent.id,
        prover=KEYS[tag % 4].public,
        timestamp=parent.timestamp + 1,
        root=mutations_root(mutations),
        mutations=mutations,
        difficulty=100,
        output=bytes([tag]) * FORM_SIZE,
        proof=bytes([tag + 1]) * FORM_SIZE,
        signature=bytes([tag]) * 64,
    )
    commit = Certificate(CertKind.COMMIT, tag, (0, 1, 2), tuple(bytes([i]) * 64 for i in range(3)))
    return frame.with_certificate(commit)


def chain(length: int) -> list[Frame]:
    frames: list[Frame] = []
    parent = GENESIS.frame()
    for tag in range(1, length + 1):
        parent = child(parent, tag, (f"m{tag}".encode(),))
        frames.append(parent)
    return frames


def vote(rank: int, attempt: int, frame_id: bytes, voter: Keypair = KEYS[0]) -> Vote:
    signature = sign(voter, NETWORK, vote_statement(rank, attempt, frame_id))
    return Vote(rank, attempt, frame_id, KEYS[1].public, voter.public, signature)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    opened = Store(path, GENESIS)
    yield opened
    opened.close()


def _write(path: Path, sql: str, *params: object) -> None:
    """Change the store's file behind its back, as a disk fault or another program would."""
    db = sqlite3.connect(path)
    try:
        with db:
            db.execute(sql, params)
    finally:
        db.close()


def _same(first: Frame | None, second: Frame) -> None:
    """Equal frames, certificates included (a frame's equality leaves its certificate out)."""
    assert first is not None
    assert first == second
    assert first.id == second.id
    assert first.certificate == second.certificate


def test_a_new_store_starts_at_the_genesis_frame(store: Store) -> None:
    genesis = GENESIS.frame()
    assert store.tip() == genesis
    assert store.tip().id == genesis.id
    assert store.frame(0) == genesis
    assert store.frame(1) is None
    assert store.frames(0, 10) == []
    assert store.recent() == [(0, genesis.identity())]
    assert store.vote(1, 0) is None
    assert store.load() is None
    assert store.mutation_rank(digest(b"m1")) is None


def test_append_accepts_only_the_frame_extending_the_tip(store: Store) -> None:
    first, second, third = chain(3)
    store.append(first)
    _same(store.tip(), first)
    with pytest.raises(StoreError, match="does not extend the tip"):
        store.append(first)  # again
    with pytest.raises(StoreError, match="does not extend the tip"):
        store.append(third)  # a gap
    with pytest.raises(StoreError, match="does not extend the tip"):
        store.append(child(GENESIS.frame(), 9))  # a sibling of the tip: rank 1 again
    wrong_parent = child(child(GENESIS.frame(), 9), 10)  # rank 2, another parent
    assert wrong_parent.round == second.round
    with pytest.raises(StoreError, match="does not extend the tip"):
        store.append(wrong_parent)
    _same(store.tip(), first)
    assert store.frame(2) is None
    store.append(second)
    store.append(third)
    _same(store.tip(), third)


def test_frames_recent_and_mutation_ranks(store: Store) -> None:
    frames = chain(4)
    for frame in frames:
        store.append(frame)
    for got, expected in zip(store.frames(1, 10), frames, strict=True):
        _same(got, expected)
    assert [f.round for f in store.frames(0, 10)] == [1, 2, 3, 4]  # rank 0 is never served
    assert [f.round for f in store.frames(2, 2)] == [2, 3]
    assert [f.round for f in store.frames(4, 5)] == [4]
    assert store.frames(5, 5) == []
    _same(store.frame(3), frames[2])
    ids = [f.identity() for f in frames]
    assert store.recent(2) == [(4, ids[3]), (3, ids[2])]
    assert store.recent(4) == [(4, ids[3]), (3, ids[2]), (2, ids[1]), (1, ids[0])]
    assert store.recent(10) == [
        (4, ids[3]),
        (3, ids[2]),
        (2, ids[1]),
        (1, ids[0]),
        (0, GENESIS.frame().identity()),
    ]
    assert store.mutation_rank(digest(b"m1")) == 1
    assert store.mutation_rank(digest(b"m4")) == 4
    assert store.mutation_rank(digest(b"m5")) is None


def test_final_among_finds_committed_and_queued_mutations_among_many_ids(path: Path) -> None:
    frames = chain(4)
    store = Store(path, GENESIS)
    store.append_many(frames[:2])
    store.close()
    reopened = Store(path, GENESIS)
    try:
        reopened.append_many(frames[2:])  # queued for the next commit: read from memory
        unknown = [digest(b"x%d" % i) for i in range(2 * LOOKUP_CHUNK + 1)]
        asked = unknown + [digest(b"m%d" % i) for i in range(1, 6)]  # the store's last in chunk 3
        assert reopened.final_among(asked) == {digest(b"m%d" % i) for i in range(1, 5)}
        assert reopened.final_among([]) == set()
    finally:
        reopened.close()


def test_reopening_restores_the_tip_and_the_frames(path: Path) -> None:
    frames = chain(3)
    store = Store(path, GENESIS)
    for frame in frames:
        store.append(frame)
    store.close()
    reopened = Store(path, GENESIS)
    try:
        _same(reopened.tip(), frames[-1])
        _same(reopened.frame(2), frames[1])
        assert reopened.mutation_rank(digest(b"m2")) == 2
        reopened.append(child(frames[-1], 7))
        assert reopened.tip().round == 4
    finally:
        reopened.close()


def test_a_store_of_another_genesis_is_refused(path: Path) -> None:
    Store(path, GENESIS).close()
    others = [
        Genesis.create("other-net", [k.prover for k in KEYS], 100, T0),
        Genesis.create(NETWORK, [k.prover for k in KEYS], 101, T0),
        Genesis.create(NETWORK, [k.prover for k in KEYS[:3]], 100, T0),
    ]
    for other in others:
        with pytest.raises(StoreError, match="another network"):
            Store(path, other)
    Store(path, GENESIS).close()  # still the right one's


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database file, not at all" * 100)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(junk, GENESIS)
    with pytest.raises(StoreError, match="cannot open store"):
        Store(tmp_path / "missing" / "store.sqlite", GENESIS)


def test_a_corrupt_frame_row_is_reported(path: Path) -> None:
    store = Store(path, GENESIS)
    store.append(chain(1)[0])
    store.close()
    _write(path, "UPDATE frames SET data = ? WHERE rank = 1", b"\x81\x00")
    with pytest.raises(StoreError, match="corrupt frame"):
        Store(path, GENESIS)


# --- own votes ------------------------------------------------------------------------------


def test_save_vote_is_idempotent_and_refuses_a_second_vote(store: Store) -> None:
    first = vote(1, 0, b"a" * HASH_SIZE)
    store.save_vote(first)
    store.save_vote(first)
    assert store.vote(1, 0) == first
    held = store.vote(1, 0)
    assert held is not None
    assert held.signature == first.signature
    for other in (
        vote(1, 0, b"b" * HASH_SIZE),  # another frame
        vote(1, 0, b"a" * HASH_SIZE, KEYS[2]),  # another voter's
    ):
        with pytest.raises(StoreError, match="different vote"):
            store.save_vote(other)
    assert store.vote(1, 0) == first
    later = vote(1, 1, b"b" * HASH_SIZE)
    store.save_vote(later)  # a later attempt may vote another frame
    assert store.vote(1, 1) == later
    assert store.vote(1, 0) == first
    assert store.vote(2, 0) is None


def test_votes_survive_reopening(path: Path) -> None:
    first, second = vote(1, 0, b"a" * HASH_SIZE), vote(1, 3, b"c" * HASH_SIZE)
    store = Store(path, GENESIS)
    store.save_vote(first)
    store.save_vote(second)
    store.close()
    reopened = Store(path, GENESIS)
    try:
        assert reopened.vote(1, 0) == first
        assert reopened.vote(1, 3) == second
        with pytest.raises(StoreError, match="different vote"):
            reopened.save_vote(vote(1, 0, b"z" * HASH_SIZE))
    finally:
        reopened.close()


def test_votes_below_a_final_rank_are_dropped(store: Store) -> None:
    frames = chain(2)
    early, current = vote(1, 0, frames[0].id), vote(3, 0, b"f" * HASH_SIZE)
    store.save_vote(early)
    store.save_vote(current)
    store.append(frames[0])
    store.append(frames[1])
    assert store.vote(1, 0) is None
    assert store.vote(3, 0) == current


def test_a_corrupt_vote_row_is_reported(path: Path) -> None:
    store = Store(path, GENESIS)
    store.save_vote(vote(1, 0, b"a" * HASH_SIZE))
    store.flush_now()  # durable, so the change behind its back hits the row
    _write(path, "UPDATE votes SET data = ? WHERE rank = 1", canonical([1, 2]))
    try:
        with pytest.raises(StoreError, match="corrupt vote"):
            store.vote(1, 0)
    finally:
        store.close()


# --- the journal ----------------------------------------------------------------------------


def _locked(attempt: int) -> RoundRecord[Frame]:
    frame = child(GENESIS.frame(), 3).bare()
    votes = Certificate(
        CertKind.VOTES, attempt, (0, 2, 3), tuple(bytes([i]) * 64 for i in (5, 6, 7))
    )
    return RoundRecord(
        1,
        attempt + 1,
        True,
        Lock(attempt, KEYS[3].prover.identity(), frame.with_certificate(votes)),
    )


def _same_record(loaded: RoundRecord[Frame] | None, saved: RoundRecord[Frame]) -> None:
    assert loaded == saved
    assert loaded is not None
    if saved.lock is not None:
        assert loaded.lock is not None
        assert loaded.lock.frame.certificate == saved.lock.frame.certificate


def test_the_journal_round_trips(store: Store) -> None:
    plain: RoundRecord[Frame] = RoundRecord(4, 2, False)
    store.save(plain)
    _same_record(store.load(), plain)
    voted: RoundRecord[Frame] = RoundRecord(4, 3, True, None)
    store.save(voted)  # replaces the record
    _same_record(store.load(), voted)
    locked = _locked(2)
    store.save(locked)
    _same_record(store.load(), locked)
    loaded = store.load()
    assert loaded is not None
    assert loaded.lock is not None
    assert loaded.lock.attempt == 2
    assert loaded.lock.proposer == KEYS[3].prover.identity()
    assert loaded.voted is True


def test_the_journal_keeps_the_own_proposal(store: Store) -> None:
    own = child(GENESIS.frame(), 3)
    store.save(RoundRecord(1, 0, False, None, own))
    loaded = store.load()
    assert loaded is not None
    assert loaded.proposal == own


def test_a_journal_record_without_a_proposal_still_loads(path: Path) -> None:
    """Records written before the own proposal was journaled have four fields."""
    store = Store(path, GENESIS)
    store.save(RoundRecord(1, 0, True))
    store.flush_now()  # durable, so the change behind its back hits the row
    _write(path, "UPDATE journal SET data = ? WHERE id = 1", canonical([3, 1, True, None]))
    try:
        assert store.load() == RoundRecord(3, 1, True)
    finally:
        store.close()


def test_every_signed_vote_and_precommit_is_logged_before_it_is_sent(store: Store) -> None:
    store.save_vote(vote(1, 0, b"x" * HASH_SIZE))
    store.save_vote(vote(1, 0, b"x" * HASH_SIZE))  # the same vote again: nothing new signed
    store.save_precommit(1, 0, b"x" * HASH_SIZE)
    store.save_precommit(1, 0, b"x" * HASH_SIZE)
    store.save_vote(vote(1, 1, b"y" * HASH_SIZE))
    assert store.signed() == [
        ("vote", 1, 0, b"x" * HASH_SIZE),
        ("precommit", 1, 0, b"x" * HASH_SIZE),
        ("vote", 1, 1, b"y" * HASH_SIZE),
    ]
    # A second, different precommit in one attempt is logged too: the log hides nothing.
    store.save_precommit(1, 0, b"z" * HASH_SIZE)
    assert store.signed()[-1] == ("precommit", 1, 0, b"z" * HASH_SIZE)


def test_the_journal_survives_reopening(path: Path) -> None:
    store = Store(path, GENESIS)
    store.save(_locked(5))
    store.close()
    reopened = Store(path, GENESIS)
    try:
        _same_record(reopened.load(), _locked(5))
        reopened.save(RoundRecord(2, 0, False))
    finally:
        reopened.close()
    again = Store(path, GENESIS)
    try:
        _same_record(again.load(), RoundRecord(2, 0, False))
    finally:
        again.close()


_FRAME = encode_frame(child(GENESIS.frame(), 3))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\x00garbage", id="not CBOR"),
        pytest.param(b"", id="empty"),
        pytest.param(canonical(7), id="not a record"),
        pytest.param(canonical([1, 2, True]), id="too short"),
        pytest.param(canonical([1, 2, True, None, None, 5]), id="too long"),
        pytest.param(canonical([1, 2, True, None, b"junk"]), id="undecodable proposal"),
        pytest.param(canonical([1, 2, True, [0, "p"]]), id="lock without frame"),
        pytest.param(canonical([1, 2, True, [0, "p", b"junk"]]), id="undecodable lock frame"),
        pytest.param(canonical([1, 2, True, 9]), id="lock not a list"),
        pytest.param(canonical(["1", 2, True, None]), id="text rank"),
        pytest.param(canonical([1, -2, True, None]), id="negative attempt"),
        pytest.param(canonical([1, 2, 1, None]), id="voted not a boolean"),
        pytest.param(canonical([1, 2, True, [b"0", "p", _FRAME]]), id="lock attempt bytes"),
        pytest.param(canonical([1, 2, True, [0, 5, _FRAME]]), id="lock proposer not text"),
    ],
)
def test_a_corrupt_journal_row_is_reported(path: Path, data: bytes) -> None:
    store = Store(path, GENESIS)
    store.save(RoundRecord(1, 0, True))
    store.flush_now()  # durable, so the change behind its back hits the row
    _write(path, "UPDATE journal SET data = ? WHERE id = 1", data)
    try:
        with pytest.raises(StoreError, match="corrupt round record"):
            store.load()
    finally:
        store.close()
