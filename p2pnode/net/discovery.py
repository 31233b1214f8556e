"""Peer announcements on the PEERS topic and the choice of which announced peers to dial."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

import multiaddr

from p2pnode.net.addresses import scoped
from p2pnode.wire.codec import MAX_ADDRS, MAX_TEXT, CodecError, MessageKind, Peers, decode, encode

MAX_RECORD_SIZE = 4096


@dataclass(frozen=True, slots=True)
class PeerRecord:
    peer_id: str
    addrs: tuple[str, ...]
    """Full multiaddrs, each ending in /p2p/<peer_id>."""


def announcement(peer_id: str, addrs: Sequence[str]) -> PeerRecord:
    """This peer's record with the addresses the codec takes: at most MAX_ADDRS, each at most
    MAX_TEXT long (the codec cannot encode a record with more, or a longer one)."""
    return PeerRecord(peer_id, tuple([addr for addr in addrs if len(addr) <= MAX_TEXT][:MAX_ADDRS]))


def encode_record(record: PeerRecord) -> bytes:
    """The record as the codec's `Peers` message, like every other gossip payload."""
    return encode(Peers(record.peer_id, record.addrs))


def decode_record(data: bytes, origin: str) -> PeerRecord | None:
    """The record announced by `origin`, or None when it is malformed or names someone else
    (a peer may only announce itself: the gossip signature proves the origin, not the body)."""
    if len(data) > MAX_RECORD_SIZE:
        return None
    try:
        message = decode(data, MessageKind.PEERS)
    except CodecError:
        return None
    if message.peer_id != origin or not message.addrs:
        return None
    suffix = f"/p2p/{origin}"
    for addr in message.addrs:
        if not addr.endswith(suffix):
            return None
        try:
            multiaddr.Multiaddr(addr)
        except Exception:  # multiaddr raises several unrelated types on garbage
            return None
    return PeerRecord(origin, message.addrs)


class Learned(enum.Enum):
    NEW = "new"
    KNOWN = "known"
    """Known already (its record is refreshed), or this peer itself."""
    FULL = "full"
    """Not kept: the directory is full of peers that were connected at some point."""


@dataclass(slots=True)
class _Known:
    record: PeerRecord
    """As announced, narrowed to the addresses this host may dial (see `scoped`)."""
    first_seen: float
    last_seen: float
    failures: int = 0
    retry_at: float = 0.0
    reached: bool = False
    """Connected at least once: such peers are never evicted for newcomers."""
    turn: int = 0
    """Which of its addresses is dialled next: a failed one gives way to the next."""


class Directory:
    """The peers heard of on PEERS, and which of them to dial now.

    When two peers learn of each other at the same moment and both dial, py-libp2p keeps both
    connections for its 20 s grace period and later trims one, killing whichever pubsub stream
    ran on it. So the peer with the smaller id dials, and the other only dials after `grace`
    seconds in case the first cannot reach it.

    Bounded by `max_known`: a newcomer evicts the peer never reached that was heard of least
    recently, so announcements of made-up peers cannot push out the ones that work. Peers to
    dial are drawn at random, so made-up ids cannot be ground to come first. `kept` peers (the
    provers) are never forgotten, never evicted and always dialled, however many others are
    connected: a peer cut off for any time comes back to them.

    One address is dialled at a time, each dial the next after a failure; an address that
    answered as another peer is dropped until the peer announces it again.
    """

    def __init__(
        self,
        me: str,
        *,
        grace: float,
        forget_after: float,
        max_peers: int,
        max_known: int = 256,
        retry: tuple[float, float] = (1.0, 30.0),
        rng: random.Random | None = None,
        kept: Collection[str] = (),
        local_ips: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self._me = me
        self._kept = frozenset(kept)
        self._local_ips = local_ips
        self._retry = retry
        self._grace = grace
        self._forget_after = forget_after
        self._max_peers = max_peers
        self._max_known = max_known
        self._rng = rng or random.Random()
        self._known: dict[str, _Known] = {}

    def __len__(self) -> int:
        return len(self._known)

    def knows(self, peer: str) -> bool:
        return peer in self._known

    def learn(self, record: PeerRecord, now: float) -> Learned:
        """Remember `record`, evicting an unreached peer if the directory is full."""
        if record.peer_id == self._me:
            return Learned.KNOWN
        record = PeerRecord(record.peer_id, scoped(record.addrs, self._local_ips()))
        known = self._known.get(record.peer_id)
        if known is not None:
            known.record = record
            known.last_seen = now
            return Learned.KNOWN
        if len(self._known) >= self._max_known and record.peer_id not in self._kept:
            unreached = [
                (k.last_seen, p)
                for p, k in self._known.items()
                if not k.reached and p not in self._kept
            ]
            if not unreached:
                return Learned.FULL
            del self._known[min(unreached)[1]]
        self._known[record.peer_id] = _Known(record, now, now)
        return Learned.NEW

    def dialled(
        self, peer: str, *, failed: bool, now: float, address: str = "", wrong_peer: bool = False
    ) -> None:
        """A dial of `address` ended; after a failure the peer waits, doubling each time up to
        the retry cap, before its next address is dialled (it may have gone, and its last
        announcements keep circulating for a while). `wrong_peer`: another peer answered
        there, and the address is dropped."""
        known = self._known.get(peer)
        if known is None:
            return
        if not failed:
            known.failures = 0
            known.retry_at = 0.0
            known.reached = True
            return
        if wrong_peer:
            kept = tuple(addr for addr in known.record.addrs if addr != address)
            known.record = PeerRecord(peer, kept)
        first, most = self._retry
        known.retry_at = now + min(most, first * 2**known.failures)
        known.failures += 1
        known.turn += 1

    def heard_of(self, peer: str, now: float) -> None:
        """`peer` is connected: it stays known (and dialled again if the connection is lost)."""
        known = self._known.get(peer)
        if known is not None:
            known.last_seen = now
            known.reached = True

    def forget_stale(self, now: float) -> None:
        stale = [
            p
            for p, k in self._known.items()
            if k.last_seen < now - self._forget_after and p not in self._kept
        ]
        for peer in stale:
            del self._known[peer]

    def known(self) -> list[PeerRecord]:
        return [known.record for known in self._known.values()]

    def to_dial(
        self,
        now: float,
        connected: Collection[str],
        dialling: Collection[str],
        refused: Collection[str],
    ) -> list[PeerRecord]:
        """Known peers to dial now, each narrowed to the one address to dial: not connected,
        dialling or refused, with an address left, our turn by the tie-break; kept peers
        always, the others drawn at random, no more than would take us past `max_peers`
        connections."""
        due = [
            known
            for peer, known in self._known.items()
            if peer not in connected
            and peer not in dialling
            and peer not in refused
            and known.record.addrs
            and now >= known.retry_at
            and (self._me < peer or now - known.first_seen >= self._grace)
        ]
        kept = [known for known in due if known.record.peer_id in self._kept]
        others = [known for known in due if known.record.peer_id not in self._kept]
        room = max(0, self._max_peers - len(connected) - len(dialling) - len(kept))
        if len(others) > room:
            others = self._rng.sample(others, room)
        return [_next_address(known) for known in (*kept, *others)]


def _next_address(known: _Known) -> PeerRecord:
    addrs = known.record.addrs
    return PeerRecord(known.record.peer_id, (addrs[known.turn % len(addrs)],))
