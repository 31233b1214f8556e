"""Deriving, off the critical path, the VDF discriminant of the proof a peer will check next."""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from p2pnode.chain import vdf
from p2pnode.chain.genesis import Genesis, frame_challenge
from p2pnode.chain.messages import Liveness
from p2pnode.chain.types import Frame, ProverId


class Warmup:
    """Derives the discriminant of the top-priority prover's coming proof from its liveness.

    A voter checks the proof of the proposal it votes for, and deriving the discriminant (a
    hash-to-prime search) is often the larger part of that check. The challenge is known once
    the prover announced the root of its mutations, a whole proving time before its proposal
    arrives: derived then, the check on the critical path is the verification alone. One per
    rank, for the prover every peer votes for unless it fails.
    """

    def __init__(
        self,
        genesis: Genesis,
        me: bytes,
        tip: Callable[[], Frame],
        leaders: Callable[[int], list[ProverId]],
    ) -> None:
        self._genesis = genesis
        self._me = me
        self._tip = tip
        self._leaders = leaders
        self._top: tuple[bytes, bytes | None] | None = None
        """(tip id, the top-priority prover of the rank after it, None once warmed): one
        derivation per rank, however many announcements a Byzantine prover sends."""
        self._wanted, self._queue = trio.open_memory_channel[bytes](math.inf)

    def on_liveness(self, message: Liveness) -> None:
        """Told of each valid liveness announcement."""
        tip = self._tip()
        if message.rank != tip.round + 1 or message.prover == self._me:
            return
        if self._top is None or self._top[0] != tip.id:
            top = self._leaders(tip.round + 1)[0]
            self._top = (tip.id, top.key)
        if message.prover != self._top[1]:
            return
        self._top = (tip.id, None)
        root = message.root
        self._wanted.send_nowait(
            frame_challenge(self._genesis, message.rank, tip.id, message.prover, root)
        )

    async def run(self) -> None:
        async for challenge in self._queue:
            await vdf.prepare(challenge, self._genesis.vdf_bits)
