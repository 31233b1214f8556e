"""Reading the peers' sqlite stores read-only, while the peers keep writing them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT = 5.0


class StoreReadError(Exception):
    """A store could not be read; the message names it."""


@dataclass(frozen=True, slots=True)
class Signed:
    """One row of a store's `signed` log: a vote or precommit its prover signed."""

    kind: str
    rank: int
    attempt: int
    frame: bytes | None


@contextmanager
def _reading(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.exists():
        raise StoreReadError(f"{path}: no store")
    try:
        # mode=ro: the harness must never write a peer's store, not even by recovering its WAL.
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)) as db:
            yield db
    except sqlite3.Error as err:
        raise StoreReadError(f"{path}: {err}") from None


def final_rank(path: Path) -> int:
    """The highest final rank in the store; 0 (the genesis) if it holds no frame yet."""
    with _reading(path) as db:
        row = db.execute("SELECT MAX(rank) FROM frames").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def frame_ids(path: Path) -> dict[int, bytes]:
    """Every final frame in the store: rank → frame id."""
    with _reading(path) as db:
        rows = db.execute("SELECT rank, id FROM frames").fetchall()
    return {int(rank): bytes(frame_id) for rank, frame_id in rows}


def signed_log(path: Path) -> list[Signed] | None:
    """The store's `signed` log; None if the store has no such table."""
    with _reading(path) as db:
        table = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'signed'"
        ).fetchone()
        if table is None:
            return None
        rows = db.execute("SELECT kind, rank, attempt, frame FROM signed").fetchall()
    return [
        Signed(str(kind), int(rank), int(attempt), None if frame is None else bytes(frame))
        for kind, rank, attempt, frame in rows
    ]
