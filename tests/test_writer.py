"""The store's group commit: writes visible at once, durable together, committed off the loop."""

from __future__ import annotations

import sqlite3
import threading
from functools import partial
from pathlib import Path
from typing import cast

import pytest
import trio

from p2pnode.chain.messages import Liveness, MutationMsg, VoteMsg
from p2pnode.chain.types import HASH_SIZE, digest
from p2pnode.consensus import RoundRecord
from p2pnode.local.homes import generate_testnet
from p2pnode.net import Network
from p2pnode.peer.node import Node, NodeError, Outbox
from p2pnode.peer.store import Store
from p2pnode.peer.writer import GroupCommit, StoreError
from tests.test_store import GENESIS, KEYS, chain, vote


def _insert_vote(db: sqlite3.Connection, attempt: int) -> None:
    db.execute("INSERT INTO votes VALUES (1, ?, x'00')", (attempt,))


def _durable_votes(path: Path) -> int:
    """Votes another connection finds on disk (what a restarted peer would read)."""
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT count(*) FROM votes").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.sqlite"


async def test_queued_writes_are_read_back_before_they_are_committed(path: Path) -> None:
    store = Store(path, GENESIS)
    frames = chain(3)
    store.append_many(frames[:2])
    store.append(frames[2])
    store.save_vote(vote(4, 0, b"a" * HASH_SIZE))
    store.save_vote(vote(4, 2, b"b" * HASH_SIZE))
    store.save(RoundRecord(4, 2, True))
    assert _durable_votes(path) == 0  # nothing committed yet
    assert store.frame(2) == frames[1]
    assert store.frames(2, 5) == frames[1:]
    assert store.recent(2) == [(3, frames[2].identity()), (2, frames[1].identity())]
    assert store.mutation_rank(digest(b"m3")) == 3
    assert store.vote(4, 2) == vote(4, 2, b"b" * HASH_SIZE)
    assert [v.attempt for v in store.last_votes(4, 5)] == [0, 2]
    assert store.load() == RoundRecord(4, 2, True)
    await store.flush()
    # The same answers once the rows are on disk and the memory copies are gone.
    assert _durable_votes(path) == 2
    assert store.frames(2, 5) == frames[1:]
    assert [v.attempt for v in store.last_votes(4, 5)] == [0, 2]
    assert store.load() == RoundRecord(4, 2, True)
    store.close()


async def test_a_round_s_writes_cost_one_commit(path: Path) -> None:
    store = Store(path, GENESIS)
    before = store.writes.commits
    store.save(RoundRecord(1, 0, True))
    store.save_vote(vote(1, 0, b"a" * HASH_SIZE))
    store.save_precommit(1, 0, b"a" * HASH_SIZE)
    store.append(chain(1)[0])
    await store.flush()
    await store.flush()  # nothing new: no commit
    assert store.writes.commits == before + 1
    assert store.signed() == [
        ("vote", 1, 0, b"a" * HASH_SIZE),
        ("precommit", 1, 0, b"a" * HASH_SIZE),
    ]
    store.close()


async def test_commits_run_off_the_event_loop_thread(path: Path) -> None:
    store = Store(path, GENESIS)
    threads: list[threading.Thread] = []
    store.writes.put(lambda db: threads.append(threading.current_thread()))
    await store.flush()
    assert len(threads) == 1
    assert threads[0] is not threading.main_thread()
    assert store.writes.blocking_seconds == 0.0
    store.close()


class _Wire:
    """Records, at each publish, how many votes a restarted peer would find on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[int] = []

    async def publish(self, topic: str, data: bytes) -> None:
        self.seen.append(_durable_votes(self.path))


async def test_a_vote_is_on_disk_before_it_is_published(path: Path) -> None:
    store = Store(path, GENESIS)
    outbox = Outbox(store.flush)
    wire = _Wire(path)
    outbox.network = cast(Network, wire)
    signed = vote(1, 0, b"a" * HASH_SIZE)
    store.save_vote(signed)
    await outbox.publish(VoteMsg(signed))
    assert wire.seen == [1]
    store.close()


async def test_the_background_commit_makes_unsent_writes_durable(path: Path) -> None:
    Store(path, GENESIS).close()  # the schema
    committed = trio.Event()
    writes = GroupCommit(path, lambda durable: committed.set())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writes.run)
        writes.put(lambda db: db.execute("INSERT INTO votes VALUES (1, 0, x'00')"))
        await committed.wait()
        nursery.cancel_scope.cancel()
    assert _durable_votes(path) == 1
    writes.close()


async def test_a_failed_commit_stops_every_later_write(path: Path) -> None:
    store = Store(path, GENESIS)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO no_such_table VALUES (1)")

    store.save_vote(vote(1, 0, b"a" * HASH_SIZE))
    store.writes.put(broken)
    with pytest.raises(StoreError, match="cannot write the store"):
        await store.flush()
    assert _durable_votes(path) == 0  # the vote shared the failed transaction
    with pytest.raises(StoreError, match="cannot write the store"):
        store.save_vote(vote(1, 1, b"b" * HASH_SIZE))
    store.close()


async def test_an_announcement_does_not_wait_for_a_commit(path: Path) -> None:
    Store(path, GENESIS).close()
    waited: list[bool] = []

    async def durable() -> None:
        waited.append(True)

    outbox = Outbox(durable)
    outbox.network = cast(Network, _Wire(path))
    await outbox.publish(Liveness(1, KEYS[0].public, bytes(32), bytes(64)))
    await outbox.publish(MutationMsg((b"m",)))
    assert waited == []
    await outbox.publish(VoteMsg(vote(1, 0, b"a" * HASH_SIZE)))
    assert waited == [True]


async def test_a_flush_cancelled_while_it_commits_loses_nothing(path: Path) -> None:
    """A state change cancels a publish that waits in `flush`: the batch it took from the queue
    is on disk all the same, and nothing later is counted durable without it."""
    Store(path, GENESIS).close()
    writes = GroupCommit(path, lambda durable: None)
    for attempt in range(20):
        writes.put(partial(_insert_vote, attempt=attempt))
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writes.flush)
                await trio.sleep(0)  # the flush has taken the batch and started its commit
                scope.cancel()
    await writes.flush()
    writes.close()
    assert _durable_votes(path) == 20


async def test_a_peer_whose_store_cannot_commit_stops_with_the_reason(tmp_path: Path) -> None:
    genesis, homes = generate_testnet(tmp_path, 1, base_port=0, difficulty=100)
    node = Node(homes[0], homes[0].keypair(), genesis, homes[0].settings({}))

    def broken(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO no_such_table VALUES (1)")

    node.store.writes.put(broken)  # the disk fails at the first commit
    with trio.fail_after(30), pytest.raises(NodeError, match="cannot write the store"):
        await node.run()
