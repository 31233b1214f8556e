"""Local submits gossiped in batches: once per round, or as soon as a batch is full."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from p2pnode.chain.mempool import MAX_FRAME_MUTATION_BYTES, MUTATION_OVERHEAD
from p2pnode.chain.messages import MutationMsg

FLUSH_EVERY = 5.0
"""Seconds a submit waits at most for its batch to leave while no round ends here. Only rounds
include mutations, so a batch sent sooner helps no one; a stall sends one now and then anyway,
in case this peer is the one lagging."""


class Batcher:
    """Collects this peer's accepted submits and publishes them as few messages as it can.

    One gossip message per mutation costs every peer a receive per copy of it, and the copies
    grow with the square of the peers: at ten provers, twenty submits a second per network
    stalled it. A batch leaves when a round ends here (the provers of the next round collect
    soon after, so a mutation waits about one round either way) or as soon as it is full.
    """

    def __init__(
        self,
        publish: Callable[[MutationMsg], Awaitable[None]],
        max_bytes: int = MAX_FRAME_MUTATION_BYTES,
        every: float = FLUSH_EVERY,
    ) -> None:
        self._publish = publish
        self._max_bytes = max_bytes
        self._every = every
        self._pending: list[bytes] = []
        self._bytes = 0
        self._due = trio.Event()

    def add(self, data: bytes) -> None:
        size = len(data) + MUTATION_OVERHEAD
        if size > self._max_bytes:  # the mempool admits none so large; no batch could hold it
            raise ValueError(f"a {len(data)}-byte mutation does not fit in a batch")
        self._pending.append(data)
        self._bytes += size
        if self._bytes >= self._max_bytes:
            self._due.set()

    def flush_soon(self) -> None:
        """A round ended: send what is pending."""
        if self._pending:
            self._due.set()

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        while True:
            with trio.move_on_after(self._every):
                await self._due.wait()
            self._due = trio.Event()
            while self._pending:
                await self._publish(MutationMsg(self._next_batch()))

    def _next_batch(self) -> tuple[bytes, ...]:
        batch: list[bytes] = []
        room = self._max_bytes
        for data in self._pending:
            size = len(data) + MUTATION_OVERHEAD
            if size > room:
                break
            batch.append(data)
            room -= size
        del self._pending[: len(batch)]
        self._bytes -= self._max_bytes - room
        return tuple(batch)
