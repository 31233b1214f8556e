"""Catching up: fetch final frames from peers in ranges, check each one, store them."""

from __future__ import annotations

import logging
from typing import Protocol

from p2pnode.chain.messages import SyncRequest
from p2pnode.chain.types import Frame
from p2pnode.chain.validation import FrameChecker
from p2pnode.codec import CodecError, decode, decode_frame, encode, encode_frame
from p2pnode.consensus import ProviderError
from p2pnode.store import Store, StoreError

log = logging.getLogger(__name__)

BATCH = 64
"""Frames asked for (and served) per request."""


class Fetcher(Protocol):
    """The request side of the sync protocol."""

    def peers(self) -> list[str]: ...

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]: ...


class SyncService:
    """Serves this peer's final frames; brings its store up to the best peer's."""

    def __init__(
        self, store: Store, checker: FrameChecker, fetcher: Fetcher, *, timeout: float = 5.0
    ) -> None:
        self.store = store
        self.checker = checker
        self.fetcher = fetcher
        self.timeout = timeout
        self.best_peer_rank = 0
        self.rejected = 0
        self._turn = 0

    async def serve(self, request: bytes) -> list[bytes]:
        """Answer a SyncRequest with up to BATCH encoded final frames from its start rank."""
        try:
            asked = decode(request)
        except CodecError:
            return []
        if not isinstance(asked, SyncRequest):
            return []
        frames = self.store.frames(asked.start, min(asked.limit, BATCH))
        return [encode_frame(frame) for frame in frames]

    async def synchronize(self, existing: Frame | None) -> Frame:
        """Fetch and store every final frame peers have beyond ours; return the new tip.

        A peer that sends an invalid frame is skipped. With no peer to ask, the tip stands.
        """
        peers = self.fetcher.peers()
        if not peers:
            return self.store.tip()
        # One peer that answers is enough for now; the next sync starts with the next peer,
        # so a peer that is behind (or slow) costs one attempt, not every one.
        start = self._turn % len(peers)
        self._turn += 1
        for peer in [*peers[start:], *peers[:start]]:
            try:
                await self._catch_up_from(peer)
            except (ProviderError, StoreError) as err:
                log.info("sync from %s failed: %s", peer, err)
                continue
            return self.store.tip()
        raise ProviderError("no peer could be synchronized from")

    async def _catch_up_from(self, peer: str) -> None:
        while True:
            tip = self.store.tip()
            request = encode(SyncRequest(tip.round + 1, BATCH))
            try:
                items = await self.fetcher.request(peer, request, timeout=self.timeout)
            except Exception as err:  # the network layer's failures are all transient here
                raise ProviderError(f"request failed: {err}") from err
            for item in items:
                self._append(item)
            if len(items) < BATCH:
                return

    def _append(self, item: bytes) -> None:
        try:
            frame = decode_frame(item)
        except CodecError as err:
            self.rejected += 1
            raise ProviderError(f"undecodable frame: {err}") from err
        tip = self.store.tip()
        # The commit certificate vouches for the proof of work: its n - f signers include
        # f + 1 honest provers, and each checked the proof before it voted.
        problem = self.checker.final_problem(frame, tip, proof=False)
        if problem is not None:
            self.rejected += 1
            raise ProviderError(f"invalid frame at rank {frame.round}: {problem}")
        self.store.append(frame)
        self.best_peer_rank = max(self.best_peer_rank, frame.round)
