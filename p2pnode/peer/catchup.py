"""Catching up: fetch final frames from peers in ranges, check each one, store them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from p2pnode.chain.messages import SyncRequest
from p2pnode.chain.types import Frame
from p2pnode.chain.validation import FrameChecker
from p2pnode.consensus import ProviderError
from p2pnode.peer.store import Store
from p2pnode.peer.writer import StoreError
from p2pnode.wire.codec import CodecError, decode, decode_frame, encode

log = logging.getLogger(__name__)

BATCH = 64
"""Frames asked for (and served) per request."""

PROBED = 2
"""Frames a stalled prover asks for in a probe: the next rank's, and one to show it is further."""
PROBE_TIMEOUT = 2.0
"""Seconds a stalled prover waits for the answer to its probe (`CatchUp.probe`)."""


class Fetcher(Protocol):
    """The request side of the sync protocol."""

    def peers(self) -> list[str]: ...

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]: ...


class PeersAhead:
    """Peers that proved, with a certificate, that they hold a later final rank than ours."""

    def __init__(self, capacity: int = 256) -> None:
        self._ranks: dict[str, int] = {}
        self._capacity = capacity

    def note(self, peer: str, rank: int) -> None:
        if rank <= self._ranks.get(peer, -1):
            return
        if peer not in self._ranks and len(self._ranks) >= self._capacity:
            lowest = min(self._ranks, key=self._ranks.__getitem__)
            if self._ranks[lowest] >= rank:
                return
            del self._ranks[lowest]
        self._ranks[peer] = rank

    def best(self) -> int:
        return max(self._ranks.values(), default=0)

    def order(
        self, peers: list[str], tip: int, turn: int, provers: Collection[str] = ()
    ) -> list[str]:
        """Peers known to be ahead first, the furthest first; then the other provers, then
        everyone else, each rotated by `turn` so that one slow or lagging peer is not always
        asked first. Strangers come last: any number of them may be connected, and each that
        stalls an ask costs the timeout."""
        known = sorted((p for p in peers if self._ranks.get(p, 0) > tip), key=self._rank_desc)
        rest = [p for p in peers if p not in known]
        first = [p for p in rest if p in provers]
        last = [p for p in rest if p not in provers]
        return [*known, *_rotated(first, turn), *_rotated(last, turn)]

    def _rank_desc(self, peer: str) -> int:
        return -self._ranks[peer]


def _rotated(peers: list[str], turn: int) -> list[str]:
    shift = turn % len(peers) if peers else 0
    return [*peers[shift:], *peers[:shift]]


class CatchUp:
    """The peer's SyncProvider: serves its final frames over the sync streams (`net/sync.py`)
    and brings its store up to the best peer's."""

    def __init__(
        self,
        store: Store,
        checker: FrameChecker,
        fetcher: Fetcher,
        *,
        timeout: float = 5.0,
        provers: Collection[str] = (),
        stored: Callable[[Sequence[Frame]], None] = lambda frames: None,
    ) -> None:
        self.store = store
        self.stored = stored
        """Told the frames each sync stored (the mempool lets their mutations go)."""
        self.provers = frozenset(provers)
        """Peer ids asked before strangers."""
        self.checker = checker
        self.fetcher = fetcher
        self.timeout = timeout
        self.ahead = PeersAhead()
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
        # Served as stored: decoding and re-encoding 64 frames cost ~25 ms of the event loop
        # for a 7-byte request.
        return self.store.encoded_frames(asked.start, min(asked.limit, BATCH))

    async def synchronize(self, existing: Frame | None) -> Frame:
        """Fetch and store every final frame peers have beyond ours; return the new tip.

        Peers known to be ahead are asked first. A peer that fails or sends an invalid frame is
        skipped; one that answers with less than a peer is known to hold (it lags, or lies)
        does not end the sync. With no peer to ask, the tip stands.
        """
        peers = self.fetcher.peers()
        if not peers:
            return self.store.tip()
        order = self.ahead.order(peers, self.store.tip().round, self._turn, self.provers)
        self._turn += 1
        failed = 0
        for peer in order:
            try:
                await self._catch_up_from(peer)
            except (ProviderError, StoreError) as err:
                log.info("sync from %s failed: %s", peer, err)
                failed += 1
                continue
            if self.store.tip().round >= self.ahead.best():
                break
        if failed == len(peers):
            raise ProviderError("no peer could be synchronized from")
        return self.store.tip()

    async def probe(self) -> list[Frame]:
        """Ask one prover, in turn, for the final frames after our tip (PROBED of them);
        return the valid ones, in order.

        A stalled prover learns it is behind from confirmations gossiped for later ranks. Should
        its gossip stop reaching it while it stays connected, only this question tells it
        that the others went on without it. The prover that answered is noted as ahead: a
        sync asks it first, and does not stop short of what it showed."""
        tip = self.store.tip()
        peers = [p for p in self.fetcher.peers() if p in self.provers]
        order = self.ahead.order(peers, tip.round, self._turn)
        self._turn += 1
        if not order:
            return []
        request = encode(SyncRequest(tip.round + 1, PROBED))
        checked: list[Frame] = []
        try:
            items = await self.fetcher.request(order[0], request, timeout=PROBE_TIMEOUT)
            for item in items[:PROBED]:
                checked.append(self._checked(item, checked[-1] if checked else tip))
        except Exception as err:  # a failed or invalid answer: the next period asks another
            log.debug("probe of %s failed: %s", order[0], err)
        if checked:
            self.ahead.note(order[0], checked[-1].round)
        return checked

    async def _catch_up_from(self, peer: str) -> None:
        while True:
            tip = self.store.tip()
            request = encode(SyncRequest(tip.round + 1, BATCH))
            try:
                items = await self.fetcher.request(peer, request, timeout=self.timeout)
            except Exception as err:  # the network layer's failures are all transient here
                raise ProviderError(f"request failed: {err}") from err
            self._append(items)
            if len(items) < BATCH:
                return

    def _append(self, items: list[bytes]) -> None:
        """Check the frames in order and store the valid ones in one transaction (one commit
        each halved a long catch-up's speed); ProviderError at the first invalid one, after
        storing those before it."""
        checked: list[Frame] = []
        try:
            tip = self.store.tip()
            for item in items:
                tip = self._checked(item, tip)
                checked.append(tip)
        finally:
            if checked:
                self.store.append_many(checked)
                self.stored(checked)
                self.best_peer_rank = max(self.best_peer_rank, checked[-1].round)

    def _checked(self, item: bytes, tip: Frame) -> Frame:
        try:
            frame = decode_frame(item)
        except CodecError as err:
            self.rejected += 1
            raise ProviderError(f"undecodable frame: {err}") from err
        # The commit certificate vouches for the proof of work: its n - f signers include
        # f + 1 honest provers, and each checked the proof before it voted.
        problem = self.checker.final_problem(frame, tip, proof=False)
        if problem is not None:
            self.rejected += 1
            raise ProviderError(f"invalid frame at rank {frame.round}: {problem}")
        return frame
