"""Submitted mutations waiting for a frame: bounded, shared fairly between origins, expiring."""

from __future__ import annotations

import enum
import functools
from collections import Counter, OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

from p2pnode.chain.types import digest

MAX_MUTATION_SIZE = 1024
MUTATION_OVERHEAD = 3
"""What one mutation adds to an encoded frame besides its bytes: a CBOR byte-string header."""
MAX_FRAME_MUTATION_BYTES = 48 * 1024
"""A frame's mutations, each counted with its overhead, stay within this: with the frame's
other fields and a certificate of every prover, a confirmation carrying the frame is still one
gossip message (see codec). Frames are bounded by bytes, not by count."""
MAX_MUTATIONS_PER_FRAME = MAX_FRAME_MUTATION_BYTES // (1 + MUTATION_OVERHEAD)
"""The most mutations that fit (one byte each): a bound on the count for decoders."""


def mutation_bytes(mutations: Iterable[bytes]) -> int:
    """What `mutations` take of a frame's or a batch's budget."""
    return sum(len(m) + MUTATION_OVERHEAD for m in mutations)


LOCAL = "local"
"""The origin of mutations submitted to this peer's own status endpoint. Gossip origins are
base58 peer ids, and base58 has no 'l': no remote peer can pass itself off as local."""

CAPACITY = 10_000
"""At most some 10 MB of mutations (and their ids) pending: the bound on the pool's memory."""

QUOTA_SHARE = 8
"""A gossip origin holds at most capacity / 8 entries (1,250 by default, some 26 frames' worth:
room for a busy peer's submits). The peers that publish are a handful, so one flooding origin
fills an eighth of the pool at most and the others keep the rest; even with the pool full of
many origins' entries, a newcomer takes room from the largest holder (`Mempool.add`)."""

STRANGER_SHARE = 4
"""Origins that are neither provers nor named peers ("strangers": their keys are free) hold at
most capacity / 4 entries all together, however many keys they come under."""

STRANGER_BYTES_PER_S = 8 * 1024
STRANGER_BURST = 64 * 1024
"""Mutation bytes taken from strangers' origins per second (with a burst), all of them
together: what a flood of made-up origins can put into frames, at most."""
ENTRY_COST = 64
"""What an entry costs the strangers' byte rate besides its bytes (its id, its place, a row
of the store once final): 3-byte mutations would otherwise come in by the thousand."""

EXPIRY_MS = 5 * 60_000
"""An entry leaves after five minutes. A full pool is some 200 frames of 48 mutations, one to
six minutes at the benchmark's pace, and pools seldom fill: an entry still pending after five
minutes is one no frame takes (only this peer holds it, say, and it seldom leads), and its room
goes back to the origins still sending. Long enough that a submit has many rounds to be taken."""


REMEMBERED = 10_000
"""Finalized mutation ids kept in memory, to refuse a late copy without asking the store (which
answers for every final mutation anyway): some 1.7 MB. A larger bound only makes a long-running
peer's memory climb for longer before it levels off."""


class Admission(enum.Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    FULL = "full"
    """The pool is full and the origin may not displace anyone (see `Mempool.add`)."""
    OVER_QUOTA = "over_quota"
    """The gossip origin already holds its quota of pending entries."""
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    OVER_BUDGET = "over_budget"
    """The strangers' share of the pool, or their byte rate, is spent."""


MUTATION_ID_SIZE = 32
"""Bytes of a mutation id: the sha256 of the mutation."""


class Fate(enum.Enum):
    """What became of a mutation this peer was given, as far as its mempool knows."""

    PENDING = "pending"
    """Waiting for a frame."""
    EXPIRED = "expired"
    """Left after `expiry_ms` without a frame taking it."""
    DISPLACED = "displaced"
    """Made room for another origin's mutation in a full pool (never a local submit's)."""
    UNKNOWN = "unknown"
    """Not held, or forgotten (the last `remembered` that left are told)."""


def mutation_id(data: bytes) -> bytes:
    return digest(data)


@dataclass(frozen=True, slots=True)
class Entry:
    data: bytes
    origin: str
    added_ms: int
    """When it entered the pool, by the pool's clock."""


LOOKAHEAD = 64
"""Mutations of a batch asked about in one store lookup: a query per id took 14 us, one of 64
ids about 3 us per id (a batch may hold 12,000 tiny mutations final long ago)."""


class _Lookahead:
    """Which mutations of a batch final frames hold, asked LOOKAHEAD at a time as `add_many`
    reaches them. A repeat within the batch is answered from the first ask."""

    def __init__(
        self, batch: Sequence[bytes], final_among: Callable[[Sequence[bytes]], Collection[bytes]]
    ) -> None:
        self._batch = batch
        self._final_among = final_among
        self._asked: set[bytes] = set()
        self._final: set[bytes] = set()

    def final(self, index: int, key: bytes) -> bool:
        """Whether the mutation at `index` of the batch, whose id is `key`, is final."""
        if key not in self._asked:
            ahead = (mutation_id(data) for data in self._batch[index : index + LOOKAHEAD])
            fresh = [k for k in dict.fromkeys(ahead) if k not in self._asked]
            self._final.update(self._final_among(fresh))
            self._asked.update(fresh)
        return key in self._final


class Mempool:
    """Pending mutations in arrival order; finalized ones leave, and stay known as done.

    Three tiers, taken into frames in this order: local submits, then the mutations of
    `trusted` gossip origins (the provers, and peers the operator named), then the strangers'.
    Local submits are admitted first: when the pool is full one displaces a gossip entry, and
    no gossip entry ever displaces a local one. Each gossip origin holds at most `quota`
    entries; when the pool is full, a new entry from an origin holding fewer than the largest
    holder displaces that holder's oldest entry, a stranger's first. Strangers together hold at
    most `capacity` / STRANGER_SHARE entries and bring STRANGER_BYTES_PER_S: any number of
    made-up origins shares that. Entries older than `expiry_ms` leave.
    """

    def __init__(
        self,
        capacity: int = CAPACITY,
        remembered: int = REMEMBERED,
        final_among: Callable[[Sequence[bytes]], Collection[bytes]] = lambda ids: (),
        *,
        quota: int | None = None,
        expiry_ms: int = EXPIRY_MS,
        clock: Callable[[], int] | None = None,
        trusted: Callable[[str], bool] = lambda origin: True,
    ) -> None:
        self._trusted = trusted
        """Whether a gossip origin is a prover or a named peer (by default, every one is)."""
        self._strangers: OrderedDict[bytes, None] = OrderedDict()
        """Strangers' pending ids in arrival order: one lane, the oldest leaving first."""
        self._stranger_counts: Counter[str] = Counter()
        self._stranger_share = max(1, capacity // STRANGER_SHARE)
        self._stranger_bytes = float(STRANGER_BURST)
        self._stranger_since: int | None = None
        self._pending: OrderedDict[bytes, Entry] = OrderedDict()
        self._by_origin: dict[str, OrderedDict[bytes, None]] = {}
        """Each local or trusted origin's pending ids, in the order it came to hold them (for a
        gossip origin, oldest first); an origin holding none has no key."""
        self._done: OrderedDict[bytes, None] = OrderedDict()
        self._gone: OrderedDict[bytes, Fate] = OrderedDict()
        """Ids that left unfinalized, and why: the last `remembered` of them."""
        self._capacity = capacity
        self._quota = quota if quota is not None else max(1, capacity // QUOTA_SHARE)
        self._remembered = remembered
        self._expiry_ms = expiry_ms
        self._clock = clock
        """Milliseconds; None: entries never expire (tests)."""
        self._final_among = final_among
        """Which of some mutation ids a final frame already holds: the durable answer, for
        mutations finalized before a restart or in frames this peer only synced. Asked once
        per call with every id it needs (a store answers a list in one query)."""

    def __len__(self) -> int:
        return len(self._pending)

    def held_by(self, origin: str) -> int:
        """How many pending entries `origin` holds."""
        if self._is_stranger(origin):
            return self._stranger_counts[origin]
        return len(self._by_origin.get(origin, ()))

    def add(self, data: bytes, origin: str = LOCAL) -> Admission:
        """Admit a mutation from `origin`: LOCAL for a submit, else the gossip origin."""
        return self._admit(data, origin, lambda key: bool(self._final_among((key,))))

    def add_many(self, batch: Sequence[bytes], origin: str = LOCAL) -> Iterator[Admission]:
        """`add` each mutation of `batch` in turn, asking the store about LOOKAHEAD of them at a
        time: a caller that stops early has paid for one lookup at most beyond that point."""
        lookup = _Lookahead(batch, self._final_among)
        for index, data in enumerate(batch):
            yield self._admit(data, origin, functools.partial(lookup.final, index))

    def _admit(self, data: bytes, origin: str, is_final: Callable[[bytes], bool]) -> Admission:
        if not data:
            return Admission.EMPTY
        if len(data) > MAX_MUTATION_SIZE:
            return Admission.TOO_LARGE
        self.expire()
        key = mutation_id(data)
        held = self._pending.get(key)
        if held is not None:
            if origin == LOCAL and held.origin != LOCAL:
                self._adopt(key, held)
            return Admission.DUPLICATE
        # The quota and the strangers' budget before the store: what they refuse costs no
        # lookup at all. Strangers share one budget, which any one of them can spend with new
        # mutations as well: spending it on known ones gains a flooder nothing more.
        if origin != LOCAL and self.held_by(origin) >= self._quota:
            return Admission.OVER_QUOTA
        stranger = self._is_stranger(origin)
        if stranger and not self._stranger_budget(len(data) + ENTRY_COST):
            return Admission.OVER_BUDGET
        if key in self._done or is_final(key):
            return Admission.DUPLICATE
        if stranger and len(self._strangers) >= self._stranger_share:
            self._leave(next(iter(self._strangers)), Fate.DISPLACED)
        if len(self._pending) >= self._capacity:
            victim = self._victim(origin)
            if victim is None:
                return Admission.FULL
            self._leave(victim, Fate.DISPLACED)
        self._gone.pop(key, None)
        self._insert(key, Entry(data, origin, self._now()))
        return Admission.ADDED

    def fate(self, key: bytes) -> Fate:
        """Whether the mutation `key` is pending, or why it left (a final one: see the store)."""
        return Fate.PENDING if key in self._pending else self._gone.get(key, Fate.UNKNOWN)

    def _is_stranger(self, origin: str) -> bool:
        return origin != LOCAL and not self._trusted(origin)

    def _stranger_budget(self, size: int) -> bool:
        """Spend `size` of the strangers' byte rate; False (nothing spent) if it lacks them.
        Without a clock there is no rate, only the share."""
        if self._clock is None:
            return True
        now = self._clock()
        if self._stranger_since is not None:
            refill = max(0, now - self._stranger_since) * STRANGER_BYTES_PER_S / 1000
            self._stranger_bytes = min(STRANGER_BURST, self._stranger_bytes + refill)
        self._stranger_since = now
        if self._stranger_bytes < size:
            return False
        self._stranger_bytes -= size
        return True

    def take(self, max_bytes: int = MAX_FRAME_MUTATION_BYTES) -> tuple[bytes, ...]:
        """The pending mutations that fit in `max_bytes` (see `mutation_bytes`), local ones
        first, then trusted origins', then strangers', each oldest first; left in the pool
        until a frame holding them is final."""
        self.expire()
        taken = self._fitting(max_bytes)
        if self._final_among(list(taken)):
            # Frames that arrived by sync finalized some: every pending one is asked about
            # once, those final leave, and the room is filled from what is left.
            final = self._final_among(list(self._pending))
            self.finalized(self._pending[key].data for key in final)
            taken = self._fitting(max_bytes)
        return tuple(taken.values())

    def _fitting(self, max_bytes: int) -> dict[bytes, bytes]:
        """The first pending mutations, in the order `take` gives, that fit in `max_bytes`."""
        tiers: tuple[list[tuple[bytes, Entry]], ...] = ([], [], [])
        for key, entry in self._pending.items():
            tier = 0 if entry.origin == LOCAL else 2 if self._is_stranger(entry.origin) else 1
            tiers[tier].append((key, entry))
        taken: dict[bytes, bytes] = {}
        room = max_bytes
        for key, entry in (item for tier in tiers for item in tier):
            size = len(entry.data) + MUTATION_OVERHEAD
            if size > room:
                break
            taken[key] = entry.data
            room -= size
        return taken

    def finalized(self, mutations: Iterable[bytes]) -> None:
        for data in mutations:
            key = mutation_id(data)
            self._remove(key)
            self._gone.pop(key, None)
            self._done[key] = None
        while len(self._done) > self._remembered:
            self._done.popitem(last=False)

    def expire(self) -> None:
        """Drop the entries older than the expiry. Arrival order is age order unless the clock
        stepped back; then an entry behind a younger one waits for it, bounded by capacity."""
        if self._clock is None:
            return
        cutoff = self._clock() - self._expiry_ms
        while self._pending:
            key, entry = next(iter(self._pending.items()))
            if entry.added_ms > cutoff:
                return
            self._leave(key, Fate.EXPIRED)

    def _victim(self, origin: str) -> bytes | None:
        """The entry a new one from `origin` displaces in a full pool, if any. Strangers'
        entries go first, oldest first (a stranger only ever displaces a stranger's). Else: the
        oldest of the trusted origin holding the most (of two as large, the one holding the
        oldest entry), taken by gossip only from an origin holding more than itself, so
        shares even out instead of trading places; a local submit takes from any."""
        if self._strangers:
            return next(iter(self._strangers))
        if self._is_stranger(origin):
            return None
        # One pass over the trusted origins (the provers and named peers), when full only.
        others = [o for o in self._by_origin if o not in (LOCAL, origin)]
        if not others:
            return None
        largest = max(others, key=lambda o: (self.held_by(o), -self._oldest(o).added_ms))
        if origin != LOCAL and self.held_by(largest) <= self.held_by(origin):
            return None
        return next(iter(self._by_origin[largest]))

    def _oldest(self, origin: str) -> Entry:
        return self._pending[next(iter(self._by_origin[origin]))]

    def _adopt(self, key: bytes, entry: Entry) -> None:
        """A local submit of a pending gossip entry vouches for it: it becomes local, safe from
        gossip, and keeps its place in the queue."""
        self._pending[key] = replace(entry, origin=LOCAL)
        self._forget(key, entry.origin)
        self._by_origin.setdefault(LOCAL, OrderedDict())[key] = None

    def _insert(self, key: bytes, entry: Entry) -> None:
        self._pending[key] = entry
        if self._is_stranger(entry.origin):
            self._strangers[key] = None
            self._stranger_counts[entry.origin] += 1
        else:
            self._by_origin.setdefault(entry.origin, OrderedDict())[key] = None

    def _leave(self, key: bytes, fate: Fate) -> None:
        self._remove(key)
        self._gone[key] = fate
        while len(self._gone) > self._remembered:
            self._gone.popitem(last=False)

    def _remove(self, key: bytes) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            self._forget(key, entry.origin)

    def _forget(self, key: bytes, origin: str) -> None:
        if self._is_stranger(origin):
            del self._strangers[key]
            self._stranger_counts[origin] -= 1
            if not self._stranger_counts[origin]:
                del self._stranger_counts[origin]
            return
        keys = self._by_origin[origin]
        del keys[key]
        if not keys:
            del self._by_origin[origin]

    def _now(self) -> int:
        return 0 if self._clock is None else self._clock()
