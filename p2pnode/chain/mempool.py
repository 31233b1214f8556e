"""Submitted mutations waiting for a frame: bounded, first come first served, no duplicates."""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable, Iterable

from p2pnode.chain.types import digest

MAX_MUTATION_SIZE = 1024
MAX_MUTATIONS_PER_FRAME = 48
"""Keeps a frame, and so every gossip message, under one yamux frame (see codec)."""


class Admission(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    FULL = "full"
    TOO_LARGE = "too_large"
    EMPTY = "empty"


def mutation_id(data: bytes) -> bytes:
    return digest(data)


class Mempool:
    """Pending mutations in arrival order; finalized ones leave, and stay known as done."""

    def __init__(
        self,
        capacity: int = 10_000,
        remembered: int = 100_000,
        is_final: Callable[[bytes], bool] = lambda mutation_id: False,
    ) -> None:
        self._pending: OrderedDict[bytes, bytes] = OrderedDict()
        self._done: OrderedDict[bytes, None] = OrderedDict()
        self._capacity = capacity
        self._remembered = remembered
        self._is_final = is_final
        """Whether a mutation (by id) is already in a final frame: the durable answer, for
        mutations finalized before a restart or in frames this peer only synced."""

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, data: bytes) -> Admission:
        if not data:
            return Admission.EMPTY
        if len(data) > MAX_MUTATION_SIZE:
            return Admission.TOO_LARGE
        key = mutation_id(data)
        if key in self._pending or key in self._done or self._is_final(key):
            return Admission.DUPLICATE
        if len(self._pending) >= self._capacity:
            return Admission.FULL
        self._pending[key] = data
        return Admission.ADDED

    def take(self, limit: int = MAX_MUTATIONS_PER_FRAME) -> tuple[bytes, ...]:
        """The oldest pending mutations, left in the pool until a frame holding them is final."""
        taken: list[bytes] = []
        for key, data in list(self._pending.items()):
            if len(taken) >= limit:
                break
            if self._is_final(key):  # finalized in a frame that arrived by sync
                self.finalized((data,))
                continue
            taken.append(data)
        return tuple(taken)

    def finalized(self, mutations: Iterable[bytes]) -> None:
        for data in mutations:
            key = mutation_id(data)
            self._pending.pop(key, None)
            self._done[key] = None
        while len(self._done) > self._remembered:
            self._done.popitem(last=False)
