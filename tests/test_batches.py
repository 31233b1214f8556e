"""Local submits leave in batches: when a round ends, when a batch is full, or after a stall."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from p2pnode.chain.mempool import mutation_bytes
from p2pnode.chain.messages import MutationMsg
from p2pnode.peer.batches import Batcher


class Sent:
    def __init__(self) -> None:
        self.batches: list[tuple[bytes, ...]] = []
        self.changed = trio.Event()

    async def publish(self, message: MutationMsg) -> None:
        self.batches.append(message.mutations)
        self.changed.set()
        self.changed = trio.Event()


@asynccontextmanager
async def running(max_bytes: int, every: float) -> AsyncIterator[tuple[Batcher, Sent]]:
    """A batcher at work, and what it sent; stopped on leaving."""
    sent = Sent()
    batcher = Batcher(sent.publish, max_bytes=max_bytes, every=every)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(batcher.run)
        yield batcher, sent
        nursery.cancel_scope.cancel()


async def test_a_batch_leaves_when_a_round_ends(autojump_clock: trio.testing.MockClock) -> None:
    async with running(max_bytes=1000, every=5.0) as (batcher, sent):
        batcher.add(b"a")
        batcher.add(b"b")
        await trio.sleep(4.9)
        assert sent.batches == []  # waiting for the round to end
        batcher.flush_soon()
        await sent.changed.wait()
        assert sent.batches == [(b"a", b"b")]
        assert trio.current_time() < 5.0


async def test_a_stall_still_sends_after_a_while(autojump_clock: trio.testing.MockClock) -> None:
    async with running(max_bytes=1000, every=5.0) as (batcher, sent):
        batcher.add(b"a")
        await sent.changed.wait()
        assert sent.batches == [(b"a",)]
        assert trio.current_time() == 5.0


async def test_a_full_batch_leaves_at_once_split_within_the_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    items = [bytes([i]) * 27 for i in range(7)]  # 30 bytes each with the overhead
    async with running(max_bytes=100, every=60.0) as (batcher, sent):
        for item in items:
            batcher.add(item)
        with trio.fail_after(1):
            while sum(map(len, sent.batches)) < len(items):
                await sent.changed.wait()
    assert [m for batch in sent.batches for m in batch] == items
    assert all(mutation_bytes(batch) <= 100 for batch in sent.batches)
    assert len(batcher) == 0


def test_a_mutation_no_batch_could_hold_is_refused() -> None:
    batcher = Batcher(Sent().publish, max_bytes=10)
    with pytest.raises(ValueError, match="does not fit"):
        batcher.add(b"x" * 8)
    batcher.add(b"x" * 7)
    assert len(batcher) == 1
