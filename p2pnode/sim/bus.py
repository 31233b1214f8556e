"""An in-memory pubsub on virtual time, with seeded delay, loss, duplication and partitions."""

from __future__ import annotations

import enum
import heapq
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import trio

from p2pnode.sim.model import Confirmation, Vote

TICK = 0.005
"""Granularity of delivery times (virtual seconds)."""


class Topic(enum.Enum):
    LIVENESS = "liveness"
    PROPOSAL = "proposal"
    VOTE = "vote"
    CONFIRMATION = "confirmation"


@dataclass(frozen=True, slots=True)
class Partition:
    """From `start` to `end`, peers in `side` cannot reach the others (and the reverse)."""

    start: float
    end: float
    side: frozenset[str]

    def cuts(self, now: float, a: str, b: str) -> bool:
        return self.start <= now < self.end and ((a in self.side) != (b in self.side))


@dataclass(frozen=True, slots=True)
class Faults:
    """What the network does wrong until `until` (virtual seconds); after that it behaves."""

    until: float = 0.0
    loss: float = 0.0
    duplicate: float = 0.0
    jitter: float = 0.0
    """Extra delay, uniform in [0, jitter], so messages overtake each other."""
    proposal_delay: float = 0.0
    """Probability that a proposal reaches a peer late (splits the vote)."""
    proposal_lag: tuple[float, float] = (0.5, 2.0)
    partitions: tuple[Partition, ...] = ()
    muted: frozenset[str] = frozenset()
    """Peers whose messages reach nobody (they still hear everything)."""
    confirmations_to: frozenset[str] | None = None
    """When set, confirmations reach only these peers: some peers see a commit, others not."""
    adaptive: bool = False
    """Hold back, until the faults end, each vote or precommit that would complete a
    certificate at its recipient, and every commit certificate."""


@dataclass
class Stats:
    published: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    cut: int = 0


Handler = Callable[[str, Topic, object], None]
Rule = Callable[[str, str, Topic, object], bool]
"""(sender, recipient, topic, payload) -> whether to drop that delivery."""


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    recipient: str = field(compare=False)
    sender: str = field(compare=False)
    topic: Topic = field(compare=False)
    payload: object = field(compare=False)


class Bus:
    """Delivers every publication to every subscribed peer after a seeded delay.

    With `echo`, a publisher also receives its own publications (as py-libp2p does).
    """

    def __init__(
        self,
        rng: random.Random,
        faults: Faults,
        *,
        echo: bool,
        latency: tuple[float, float] = (0.005, 0.03),
        quorum: int = 0,
    ) -> None:
        self._rng = rng
        self._faults = faults
        self._echo = echo
        self._latency = latency
        self._adversary = Completions(quorum)
        self._handlers: dict[str, Handler] = {}
        self.drop_rules: list[Rule] = []
        """Scripted losses, for fault sequences played message by message."""
        self.isolated: set[str] = set()
        """Peers cut off from every other, for gossip and sync alike, until taken out."""
        self._queue: list[_Delivery] = []
        self._seq = 0
        self._wake = trio.Event()
        self.stats = Stats()

    def subscribe(self, name: str, handler: Handler) -> None:
        self._handlers[name] = handler

    def unsubscribe(self, name: str) -> None:
        self._handlers.pop(name, None)

    def peers(self) -> list[str]:
        return sorted(self._handlers)

    def reachable(self, a: str, b: str) -> bool:
        now = trio.current_time()
        return (
            b in self._handlers
            and not self._cut_off(a, b)
            and not any(p.cuts(now, a, b) for p in self._faults.partitions)
        )

    def _cut_off(self, a: str, b: str) -> bool:
        return a != b and (a in self.isolated or b in self.isolated)

    def publish(
        self, sender: str, topic: Topic, payload: object, to: Iterable[str] | None = None
    ) -> None:
        """Send to every subscriber (or only to `to`), subject to the faults in force."""
        self.stats.published += 1
        self._adversary.knows(sender, payload)
        for recipient in sorted(self._handlers) if to is None else sorted(to):
            if recipient == sender:
                if self._echo:
                    self._schedule(0.0, recipient, sender, topic, payload)
                continue
            self._send(recipient, sender, topic, payload)

    def _send(self, recipient: str, sender: str, topic: Topic, payload: object) -> None:
        now, faults, rng = trio.current_time(), self._faults, self._rng
        if (
            self._cut_off(sender, recipient)
            or any(p.cuts(now, sender, recipient) for p in faults.partitions)
            or any(drop(sender, recipient, topic, payload) for drop in self.drop_rules)
        ):
            self.stats.cut += 1
            return
        delay = rng.uniform(*self._latency)
        copies = 1
        if now < faults.until:
            if sender in faults.muted or (
                topic is Topic.CONFIRMATION
                and faults.confirmations_to is not None
                and recipient not in faults.confirmations_to
            ):
                self.stats.cut += 1
                return
            if rng.random() < faults.loss:
                self.stats.lost += 1
                return
            if rng.random() < faults.duplicate:
                copies = 2
                self.stats.duplicated += 1
            delay += rng.uniform(0.0, faults.jitter)
            if topic is Topic.PROPOSAL and rng.random() < faults.proposal_delay:
                delay += rng.uniform(*faults.proposal_lag)
            if faults.adaptive and self._adversary.completes(recipient, payload):
                delay += faults.until - now  # released when the faults end
            else:
                self._adversary.knows(recipient, payload)
        for copy in range(copies):
            self._schedule(delay + copy * rng.uniform(0.0, 0.05), recipient, sender, topic, payload)

    def _schedule(
        self, delay: float, recipient: str, sender: str, topic: Topic, payload: object
    ) -> None:
        self._seq += 1
        # Deliveries fall on a grid so that simultaneous ones are handled in one batch.
        due = math.ceil((trio.current_time() + delay) / TICK) * TICK
        wake = not self._queue or due < self._queue[0].due
        heapq.heappush(self._queue, _Delivery(due, self._seq, recipient, sender, topic, payload))
        if wake:
            self._wake.set()

    async def run(self) -> None:
        """Deliver messages when they are due, for ever."""
        while True:
            self._wake = wake = trio.Event()
            due = self._queue[0].due if self._queue else math.inf
            with trio.move_on_at(due) as waiting:
                await wake.wait()
            if not waiting.cancelled_caught:
                continue
            now = trio.current_time()
            while self._queue and self._queue[0].due <= now:
                item = heapq.heappop(self._queue)
                handler = self._handlers.get(item.recipient)
                if handler is not None:
                    self.stats.delivered += 1
                    handler(item.sender, item.topic, item.payload)
            await trio.lowlevel.checkpoint()


class Completions:
    """The adaptive adversary's ledger: which votes and precommits each peer holds, by what they
    are for, so it can tell which one message would complete a certificate at a peer."""

    def __init__(self, quorum: int) -> None:
        self._quorum = quorum
        self._held: dict[tuple[str, str, int, int, str], set[str]] = {}

    @staticmethod
    def _key(peer: str, payload: object) -> tuple[tuple[str, str, int, int, str], str] | None:
        match payload:
            case Vote():
                return (peer, "vote", payload.round, payload.attempt, payload.frame_id), (
                    payload.voter
                )
            case Confirmation() if not payload.frame.final:
                frame = payload.frame
                key = (peer, "precommit", frame.round, frame.cert_attempt, frame.identity())
                return key, payload.signer
        return None

    def knows(self, peer: str, payload: object) -> None:
        found = self._key(peer, payload)
        if found is not None:
            key, signer = found
            self._held.setdefault(key, set()).add(signer)

    def completes(self, peer: str, payload: object) -> bool:
        """Whether delivering `payload` to `peer` would complete a certificate there."""
        if isinstance(payload, Confirmation) and payload.frame.final:
            return True
        found = self._key(peer, payload)
        if found is None:
            return False
        key, signer = found
        held = self._held.get(key, set())
        return signer not in held and len(held) + 1 >= self._quorum
