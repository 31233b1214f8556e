"""Group commit for the store: writes queue on the event loop and commit in a worker thread."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from p2pnode.chain.storage import StorageError


class StoreError(StorageError):
    """The store cannot be used (wrong network, corrupt data, a write out of order or failed)."""


Write = Callable[[sqlite3.Connection], object]
"""One step of a transaction, run on the writer's connection."""

# trio-typing's stubs know only trio's old keyword for this call (see chain/vdf.py).
_run_in_thread: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync


def connect(path: Path, *, threads: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL, each commit synced to disk (a vote must survive a
    power cut)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=not threads)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class GroupCommit:
    """Queued writes, committed together: every write queued while a commit runs goes into the
    next one, so a round's journal, vote and frame cost one sync, not one each.

    Nothing queued is durable until a flush returns: whatever must be durable before it is
    sent (a vote, a precommit, the round record behind them) is sent only after `flush`. Each
    write carries a sequence number; `durable` is the highest one committed.
    """

    def __init__(self, path: Path, on_durable: Callable[[int], None]) -> None:
        self._path = path
        self._on_durable = on_durable
        """Told the sequence number of the latest write committed, after each commit."""
        self._db: sqlite3.Connection | None = None
        self._queue: list[Write] = []
        self.queued = 0
        """Sequence number of the latest write queued."""
        self.durable = 0
        """Sequence number of the latest write committed."""
        self._flushing = trio.Lock()
        self._more = trio.Event()
        self.commits = 0
        """Transactions committed (each one sync of the write-ahead log)."""
        self.blocking_seconds = 0.0
        """Time spent committing on the caller's own thread (closing, `flush_now`)."""
        self._failed: StoreError | None = None
        """Why a commit failed: its writes are lost, so no later one may land without them."""

    def put(self, write: Write) -> int:
        """Queue a write; its sequence number."""
        if self._failed is not None:
            raise self._failed
        self._queue.append(write)
        self.queued += 1
        self._more.set()
        return self.queued

    def _take(self) -> tuple[list[Write], int]:
        batch, self._queue = self._queue, []
        return batch, self.queued

    def _commit(self, batch: list[Write]) -> None:
        """One transaction of `batch`. One commit runs at a time: `flush` holds its lock
        throughout, and `flush_now` refuses to run while it is held."""
        if self._failed is not None:
            raise self._failed
        try:
            if self._db is None:
                self._db = connect(self._path, threads=True)
            self._db.execute("BEGIN IMMEDIATE")
            for write in batch:
                write(self._db)
            self._db.execute("COMMIT")
        except Exception as err:
            if self._db is not None and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            self._failed = StoreError(f"cannot write the store: {err}")
            raise self._failed from None
        self.commits += 1

    async def flush(self) -> None:
        """Return once every write queued before the call is durable; the commit runs in a
        worker thread, the event loop free meanwhile."""
        target = self.queued
        if self.durable >= target:
            return
        async with self._flushing:
            if self.durable >= target:
                return  # the commit this call waited for took its writes too
            # Shielded from the moment the batch leaves the queue until it is on disk: a
            # caller cancelled in between (a state change cancels a publish waiting here)
            # would otherwise drop the batch, and the next commit count it as durable.
            with trio.CancelScope(shield=True):
                batch, through = self._take()
                await _run_in_thread(self._commit, batch)
                self._committed(through)

    def flush_now(self) -> None:
        """Commit what is queued on this thread (when nothing else runs: closing, tools)."""
        if self._flushing.locked():
            # Its batch, taken already, would land after this later one.
            raise RuntimeError("flush_now while a flush is under way")
        if not self._queue:
            return
        started = time.perf_counter()
        batch, through = self._take()
        self._commit(batch)
        self._committed(through)
        self.blocking_seconds += time.perf_counter() - started

    def _committed(self, through: int) -> None:
        self.durable = max(self.durable, through)
        self._on_durable(self.durable)

    async def run(self) -> None:
        """Commit in the background whatever is queued, so writes no sender waits for (a final
        frame, a round record with nothing to send) become durable within one commit."""
        while True:
            await self._more.wait()
            self._more = trio.Event()
            await self.flush()

    def close(self) -> None:
        """Commit what is queued (unless a commit failed: nothing more may land), then close."""
        if self._failed is None:
            self.flush_now()
        if self._db is not None:
            self._db.close()
            self._db = None
