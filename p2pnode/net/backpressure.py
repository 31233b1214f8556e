"""Whose full outbound queue a publish waits for, and whose it no longer does."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

FORGET_AFTER = 30.0
"""Seconds a peer given up on must keep its queue below the threshold before it is waited for
again. Forgotten as soon as its queue drained, a Byzantine prover that let its queue fill and
drain in turn (withholding its window for under the 5 s the muxer allows) held every publish
2 s at each fill."""


class Backpressure:
    """A publish waits while a prover's or named peer's queue holds `threshold` RPCs (py-libp2p
    drops them beyond 32), so that a burst is delayed rather than lost. A peer whose queue
    stays full for as long as a publish may wait is given up on: not waited for until it has
    stayed below the threshold for FORGET_AFTER seconds. Times are of one monotonic clock."""

    def __init__(self, threshold: int, forget_after: float = FORGET_AFTER) -> None:
        self._threshold = threshold
        self._forget_after = forget_after
        self._given_up: dict[str, float] = {}
        """Each peer given up on, and when its queue was last seen full."""

    def full(self, depths: Mapping[str, int], now: float) -> list[str]:
        """The peers (of `depths`, the queues of provers and named peers) to wait for now."""
        self._given_up = {
            peer: seen for peer, seen in self._given_up.items() if now - seen < self._forget_after
        }
        for peer, depth in depths.items():
            if depth >= self._threshold and peer in self._given_up:
                self._given_up[peer] = now
        return [p for p, d in depths.items() if d >= self._threshold and p not in self._given_up]

    def give_up(self, peers: Iterable[str], now: float) -> None:
        for peer in peers:
            self._given_up[peer] = now
