"""What the chain needs kept durably: final frames and this peer's own votes."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from p2pnode.chain.types import Frame, Vote


class StorageError(Exception):
    """Storage refused what the chain asked of it, or holds a different final frame."""


class ChainStore(Protocol):
    """Final frames in rank order, each extending the one before, and this peer's votes.

    A vote must be durable before it is published, so a restarted peer never signs two
    different votes in one attempt: either `save_vote` makes it durable, or the publisher
    waits until every write made before the publish is (the peer's store does the latter).
    """

    def tip(self) -> Frame:
        """The latest final frame (the genesis frame before any)."""
        ...

    def frame(self, rank: int) -> Frame | None:
        """The final frame at `rank`, if held."""
        ...

    def append(self, frame: Frame) -> None:
        """Add the next final frame; StorageError unless it extends the tip."""
        ...

    def final_among(self, ids: Sequence[bytes]) -> Collection[bytes]:
        """Which of the mutation `ids` final frames hold."""
        ...

    def vote(self, rank: int, attempt: int) -> Vote | None:
        """This peer's vote in `attempt` at `rank`, if it gave one."""
        ...

    def last_votes(self, rank: int, count: int) -> list[Vote]:
        """This peer's votes in the latest `count` attempts it voted in at `rank`, oldest
        first."""
        ...

    def save_vote(self, vote: Vote) -> None:
        """Record a vote durably; StorageError for a different one in the same attempt."""
        ...

    def save_precommit(self, rank: int, attempt: int, frame_id: bytes) -> None:
        """Record durably that this peer precommits `frame_id` in `attempt` at `rank`."""
        ...
