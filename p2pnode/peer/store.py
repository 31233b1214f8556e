"""A peer's durable state in sqlite (WAL): final frames, own votes, what it signed, its round.

Writes are queued and committed together off the event loop (`peer.writer`); reads see them
at once, from memory until their commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import cbor2

from p2pnode.chain.genesis import Genesis
from p2pnode.chain.types import Frame, Vote, canonical, digest
from p2pnode.consensus import Lock, RoundRecord
from p2pnode.peer.writer import GroupCommit, StoreError, connect
from p2pnode.wire.codec import CodecError, decode_frame, decode_vote, encode_frame, encode_vote

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS frames (rank INTEGER PRIMARY KEY, id BLOB NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    rank INTEGER NOT NULL, attempt INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (rank, attempt)
);
CREATE TABLE IF NOT EXISTS journal (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS mutations (id BLOB PRIMARY KEY, rank INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS signed (
    kind TEXT NOT NULL, rank INTEGER NOT NULL, attempt INTEGER NOT NULL, frame BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS signed_rank ON signed (rank);
"""

K = TypeVar("K")
V = TypeVar("V")

SIGNED_KEPT = 10_000
"""Ranks of the signature log kept below the tip (an audit trail, not needed to run)."""
LOOKUP_CHUNK = 512
"""Ids asked about in one query (a power of two): well under sqlite's bound on parameters."""


class Store:
    """Final frames in rank order, each extending the one before; the peer's own votes, durable
    before they are published; and the record of its current round (the engine's journal).

    The chain reaches it through its `ChainStore` protocol. Writes become durable at the next
    `flush` (which whoever publishes awaits first) or within one commit of the background
    `run`; until then reads find them in memory, each keyed by the write that made it.
    """

    def __init__(self, path: Path, genesis: Genesis) -> None:
        self._genesis = genesis
        try:
            self._db = connect(path)
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise StoreError(f"cannot open store {path}: {err}") from None
        self.writes = GroupCommit(path, self._forget_durable)
        self._frames: dict[int, tuple[int, Frame]] = {}
        self._votes: dict[tuple[int, int], tuple[int, Vote]] = {}
        self._mutations: dict[bytes, tuple[int, int]] = {}
        self._journal: tuple[int, bytes] | None = None
        self._check_network()
        self._tip = self._load_tip()

    async def flush(self) -> None:
        """Return once every write made before the call is durable."""
        await self.writes.flush()

    def flush_now(self) -> None:
        """`flush`, blocking this thread: for tools and tests, not the event loop."""
        self.writes.flush_now()

    async def run(self) -> None:
        """Commit queued writes in the background (see `GroupCommit.run`)."""
        await self.writes.run()

    def _forget_durable(self, durable: int) -> None:
        """Drop from memory what the database now holds."""
        _drop_through(self._frames, durable)
        _drop_through(self._votes, durable)
        _drop_through(self._mutations, durable)
        if self._journal is not None and self._journal[0] <= durable:
            self._journal = None

    def _check_network(self) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'genesis'").fetchone()
        if row is None:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT INTO meta VALUES ('genesis', ?)", (self._genesis.hash(),))
        elif row[0] != self._genesis.hash():
            raise StoreError("the store belongs to another network (genesis differs)")

    def _load_tip(self) -> Frame:
        row = self._db.execute("SELECT data FROM frames ORDER BY rank DESC LIMIT 1").fetchone()
        return self._genesis.frame() if row is None else self._decode(row[0])

    @staticmethod
    def _decode(data: bytes) -> Frame:
        try:
            return decode_frame(data)
        except CodecError as err:
            raise StoreError(f"corrupt frame in store: {err}") from None

    def close(self) -> None:
        """Commit what is queued, then close."""
        try:
            self.writes.close()
        finally:
            self._db.close()

    # -- frames --------------------------------------------------------------------------

    def tip(self) -> Frame:
        return self._tip

    def frame(self, rank: int) -> Frame | None:
        if rank == 0:
            return self._genesis.frame()  # rebuilt from the genesis file, never stored
        if rank in self._frames:
            return self._frames[rank][1]
        row = self._db.execute("SELECT data FROM frames WHERE rank = ?", (rank,)).fetchone()
        return None if row is None else self._decode(row[0])

    def frames(self, start: int, limit: int) -> list[Frame]:
        """Final frames from rank `start` (at least 1: every peer rebuilds rank 0 itself)."""
        return [self._decode(data) for data in self.encoded_frames(start, limit)]

    def encoded_frames(self, start: int, limit: int) -> list[bytes]:
        """Final frames from rank `start` (at least 1) as stored: encoded, checked on append."""
        start = max(start, 1)
        rows = self._db.execute(
            "SELECT rank, data FROM frames WHERE rank >= ? ORDER BY rank LIMIT ?", (start, limit)
        ).fetchall()
        held = {int(rank): bytes(data) for rank, data in rows}
        for rank in sorted(self._frames):  # every rank queued is above every rank committed
            if rank >= start and rank not in held and len(held) < limit:
                held[rank] = encode_frame(self._frames[rank][1])
        return [held[rank] for rank in sorted(held)]

    def recent(self, count: int = 64) -> list[tuple[int, str]]:
        """The last `count` final frames as (rank, id), newest first."""
        rows = self._db.execute(
            "SELECT rank, id FROM frames ORDER BY rank DESC LIMIT ?", (count,)
        ).fetchall()
        held = {int(rank): bytes(frame_id).hex() for rank, frame_id in rows}
        held |= {rank: frame.identity() for rank, (_, frame) in self._frames.items()}
        recent = sorted(held.items(), reverse=True)[:count]
        if len(recent) < count:
            recent.append((0, self._genesis.frame().identity()))
        return recent

    def append(self, frame: Frame) -> None:
        """Add the next final frame; it must extend the current tip."""
        self.append_many([frame])

    def append_many(self, frames: Sequence[Frame]) -> None:
        """Add final frames, each extending the one before and the first the tip, in one
        transaction: all are stored or none."""
        tip = self._tip
        for frame in frames:
            if frame.round != tip.round + 1 or frame.parent != tip.id:
                raise StoreError(
                    f"frame {frame.identity()[:12]} at rank {frame.round} does not extend the tip"
                )
            tip = frame
        rows = [(frame.round, frame.id, encode_frame(frame)) for frame in frames]
        mutations = [(digest(m), frame.round) for frame in frames for m in frame.mutations]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("INSERT INTO frames VALUES (?, ?, ?)", rows)
            db.execute("DELETE FROM votes WHERE rank < ?", (tip.round,))
            db.execute("DELETE FROM signed WHERE rank < ?", (tip.round - SIGNED_KEPT,))
            db.executemany("INSERT OR IGNORE INTO mutations VALUES (?, ?)", mutations)

        seq = self.writes.put(write)
        self._frames |= {frame.round: (seq, frame) for frame in frames}
        self._mutations |= {key: (seq, rank) for key, rank in mutations}
        self._votes = {key: vote for key, vote in self._votes.items() if key[0] >= tip.round}
        self._tip = tip

    def mutation_rank(self, mutation_id: bytes) -> int | None:
        """The rank of the final frame that holds a mutation, if any."""
        if mutation_id in self._mutations:
            return self._mutations[mutation_id][1]
        row = self._db.execute("SELECT rank FROM mutations WHERE id = ?", (mutation_id,)).fetchone()
        return None if row is None else int(row[0])

    def final_among(self, ids: Sequence[bytes]) -> set[bytes]:
        """Which of `ids` final frames hold: one query per LOOKUP_CHUNK ids, not one each."""
        found = {key for key in ids if key in self._mutations}
        rest = [key for key in ids if key not in found]
        for start in range(0, len(rest), LOOKUP_CHUNK):
            chunk = rest[start : start + LOOKUP_CHUNK]
            # Padded to a power of two by repeating an id: a handful of statement texts, not
            # one per length, so sqlite3's statement cache keeps the store's other queries.
            chunk += chunk[-1:] * ((1 << (len(chunk) - 1).bit_length()) - len(chunk))
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(f"SELECT id FROM mutations WHERE id IN ({marks})", chunk)
            found.update(bytes(row[0]) for row in rows)
        return found

    # -- own votes -----------------------------------------------------------------------

    def vote(self, rank: int, attempt: int) -> Vote | None:
        if (rank, attempt) in self._votes:
            return self._votes[rank, attempt][1]
        row = self._db.execute(
            "SELECT data FROM votes WHERE rank = ? AND attempt = ?", (rank, attempt)
        ).fetchone()
        if row is None:
            return None
        try:
            return decode_vote(row[0])
        except CodecError as err:
            raise StoreError(f"corrupt vote in store: {err}") from None

    def last_votes(self, rank: int, count: int) -> list[Vote]:
        """This peer's votes in the latest `count` attempts it voted in at `rank`, oldest
        first."""
        rows = self._db.execute(
            "SELECT attempt FROM votes WHERE rank = ? ORDER BY attempt DESC LIMIT ?", (rank, count)
        ).fetchall()
        attempts = {int(row[0]) for row in rows} | {a for r, a in self._votes if r == rank}
        found = [self.vote(rank, attempt) for attempt in sorted(attempts)[-count:]]
        return [vote for vote in found if vote is not None]

    def save_vote(self, vote: Vote) -> None:
        """Record a vote, durable at the next flush; a second, different vote for one rank and
        attempt is refused."""
        held = self.vote(vote.round, vote.attempt)
        if held is not None:
            if held != vote:
                raise StoreError(f"a different vote is stored for rank {vote.round}")
            return
        row = (vote.round, vote.attempt, encode_vote(vote))

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT INTO votes VALUES (?, ?, ?)", row)
            _log_signed(db, "vote", vote.round, vote.attempt, vote.frame)

        self._votes[vote.round, vote.attempt] = (self.writes.put(write), vote)

    def save_precommit(self, rank: int, attempt: int, frame_id: bytes) -> None:
        """Log a precommit this peer is about to publish, durable at the next flush (signing it
        again, for the same frame, adds nothing)."""

        def write(db: sqlite3.Connection) -> None:
            row = db.execute(
                "SELECT 1 FROM signed WHERE kind = 'precommit' AND rank = ? AND attempt = ? "
                "AND frame = ?",
                (rank, attempt, frame_id),
            ).fetchone()
            if row is None:
                _log_signed(db, "precommit", rank, attempt, frame_id)

        self.writes.put(write)

    def signed(self) -> list[tuple[str, int, int, bytes]]:
        """Every vote and precommit this peer signed (the last SIGNED_KEPT ranks), in order."""
        self.flush_now()
        rows = self._db.execute("SELECT kind, rank, attempt, frame FROM signed ORDER BY rowid")
        return [(str(k), int(r), int(a), bytes(f)) for k, r, a, f in rows.fetchall()]

    # -- the engine's journal ------------------------------------------------------------

    def load(self) -> RoundRecord[Frame] | None:
        if self._journal is not None:
            data = self._journal[1]
        else:
            row = self._db.execute("SELECT data FROM journal WHERE id = 1").fetchone()
            if row is None:
                return None
            data = row[0]
        try:
            fields = cbor2.loads(data)
            # Records written before the own proposal was journaled have four fields.
            rank, attempt, voted, lock, proposal = [*fields, None] if len(fields) == 4 else fields
            held = None if lock is None else Lock(lock[0], lock[1], decode_frame(lock[2]))
            own = None if proposal is None else decode_frame(proposal)
        except (CodecError, ValueError, TypeError, IndexError, cbor2.CBORDecodeError) as err:
            raise StoreError(f"corrupt round record in store: {err}") from None
        # Well-formed CBOR with fields of the wrong type is corrupt too: the engine would drop
        # such a record (losing its lock) or crash on it later.
        if not (_count(rank) and _count(attempt) and type(voted) is bool) or (
            held is not None and not (_count(held.attempt) and type(held.proposer) is str)
        ):
            raise StoreError("corrupt round record in store: a field of the wrong type")
        return RoundRecord(rank, attempt, voted, held, own)

    def save(self, record: RoundRecord[Frame]) -> None:
        lock = record.lock
        held = None if lock is None else [lock.attempt, lock.proposer, encode_frame(lock.frame)]
        own = None if record.proposal is None else encode_frame(record.proposal)
        data = canonical([record.rank, record.attempt, record.voted, held, own])

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO journal VALUES (1, ?)", (data,))

        self._journal = (self.writes.put(write), data)


def _log_signed(db: sqlite3.Connection, kind: str, rank: int, attempt: int, frame: bytes) -> None:
    # An append-only log, without a uniqueness constraint on purpose: were this peer ever
    # to sign two different things in one attempt, both rows would be here to show it.
    db.execute("INSERT INTO signed VALUES (?, ?, ?, ?)", (kind, rank, attempt, frame))


def _drop_through(pending: dict[K, tuple[int, V]], durable: int) -> None:
    """Forget the entries written by writes up to `durable`."""
    for key in [key for key, (seq, _) in pending.items() if seq <= durable]:
        del pending[key]


def _count(value: object) -> bool:
    return type(value) is int and value >= 0
