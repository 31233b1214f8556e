"""A peer's status: one typed record, served as JSON and read back by the CLI and dashboard."""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from p2pnode.consensus import Event, RoundView, State
from p2pnode.peer.phases import RoundPhases

STALLED_AFTER = 20.0
"""Seconds without a final frame after which a peer calls itself stalled."""
SYNC_STATES = ("synced", "catching up", "stalled")


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """One final frame, as the recent-rounds table shows it."""

    rank: int
    frame_id: str
    prover: str
    mutations: int
    signers: int
    attempt: int
    duration_ms: int
    """From the parent frame's timestamp to this one's."""
    phases: RoundPhases | None = None
    """Where this peer's time went while deciding the rank (None once no longer kept)."""

    def to_json(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "id": self.frame_id,
            "prover": self.prover,
            "mutations": self.mutations,
            "signers": self.signers,
            "attempt": self.attempt,
            "duration_ms": self.duration_ms,
            "phases": None if self.phases is None else self.phases.to_json(),
        }


@dataclass(frozen=True, slots=True)
class Verdicts:
    """How many gossip messages of one topic the peer accepted, ignored and rejected."""

    topic: str
    accept: int
    ignore: int
    reject: int


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """One state change of the engine; `at` is the peer's wall clock."""

    at: float | None
    source: str
    target: str
    event: str


@dataclass(frozen=True, slots=True)
class ErrorRow:
    at: float | None
    message: str


@dataclass
class Activity:
    """Recent transitions and errors of a peer (wall-clock seconds), for the dashboard."""

    transitions: deque[TransitionRow] = field(default_factory=lambda: deque(maxlen=32))
    errors: deque[ErrorRow] = field(default_factory=lambda: deque(maxlen=32))

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        if from_ is not to:  # self-loops (a vote received while voting...) would drown the log
            self.transitions.append(TransitionRow(time.time(), from_.value, to.value, event.value))

    def error(self, message: str) -> None:
        self.errors.append(ErrorRow(time.time(), message))


def quantile(values: Iterable[float], q: float) -> float | None:
    """The `q` quantile (nearest rank) of `values`, or None if there are none."""
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(len(ordered) * q))]) if ordered else None


def sync_state(own: int, best: int, since_finalized: float | None) -> str:
    """synced, catching up (a peer is more than a rank ahead) or stalled (nothing final lately)."""
    if best > own + 1:
        return "catching up"
    if since_finalized is not None and since_finalized > STALLED_AFTER:
        return "stalled"
    return "synced"


@dataclass(frozen=True, slots=True)
class CurrentRound:
    """The rank the peer is deciding, as far as its status tells."""

    rank: int
    attempt: int
    minimum_provers: int
    quorum: int
    provers: tuple[str, ...]
    live: tuple[str, ...]
    proposals: tuple[tuple[str, str], ...]
    """Proposer and proposed frame id."""
    votes: tuple[tuple[str, str], ...]
    """Voter and vote id; equal ids are votes for the same frame in the same attempt."""
    votes_for: tuple[tuple[str, str], ...] | None
    """Voter and voted frame id (None from a peer whose status does not say)."""
    confirmations: tuple[tuple[int, tuple[str, ...]], ...]
    """Attempt and the senders of its confirmations, by attempt."""
    voted: bool
    locked_on: str | None
    lock_attempt: int | None
    equivocators: tuple[str, ...]

    @classmethod
    def of(cls, view: RoundView, votes_for: Mapping[str, str], quorum: int) -> CurrentRound:
        return cls(
            rank=view.target_rank,
            attempt=view.attempt,
            minimum_provers=view.minimum_provers,
            quorum=quorum,
            provers=view.provers,
            live=view.live,
            proposals=tuple(view.proposals.items()),
            votes=tuple(view.votes.items()),
            votes_for=tuple(votes_for.items()),
            confirmations=tuple(sorted(view.confirmations.items())),
            voted=view.voted,
            locked_on=view.locked_on,
            lock_attempt=view.lock_attempt,
            equivocators=view.equivocators,
        )

    @property
    def vote_groups(self) -> tuple[int, ...]:
        """Votes per distinct voted frame, largest first (which frame needs `votes_for`)."""
        return tuple(sorted(Counter(v for _, v in self.votes).values(), reverse=True))

    @property
    def has_quorum(self) -> bool:
        return bool(self.vote_groups) and self.vote_groups[0] >= self.quorum

    def votes_on(self, frame_id: str) -> int | None:
        """Votes for one proposed frame, or None when the status does not say."""
        if self.votes_for is None:
            return None
        return sum(1 for _, voted in self.votes_for if voted == frame_id)

    @property
    def voters(self) -> frozenset[str]:
        return frozenset(v for v, _ in self.votes)

    @property
    def confirmers(self) -> frozenset[str]:
        return frozenset(s for _, senders in self.confirmations for s in senders)

    def to_json(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "attempt": self.attempt,
            "minimum_provers": self.minimum_provers,
            "quorum": self.quorum,
            "provers": list(self.provers),
            "live": list(self.live),
            "proposals": dict(self.proposals),
            "votes": dict(self.votes),
            "votes_for": None if self.votes_for is None else dict(self.votes_for),
            "confirmations": {str(a): list(s) for a, s in self.confirmations},
            "voted": self.voted,
            "locked_on": self.locked_on,
            "lock_attempt": self.lock_attempt,
            "equivocators": list(self.equivocators),
        }


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """A peer's status: built by the peer, served by `GET /status` as `to_json()`, and read
    back by `p2pnode.peer.status_read.parse_status` (the CLI, the dashboard, the tools)."""

    peer_id: str
    network: str
    role: str
    state: str
    state_time: float
    finalized_rank: int
    finalized_id: str
    best_peer_rank: int
    sync: str
    """One of `SYNC_STATES`."""
    since_finalized: float | None
    peers: tuple[str, ...]
    mesh: tuple[tuple[str, int], ...]
    """Topic and the size of this peer's mesh in it."""
    counters: tuple[Verdicts, ...]
    rejected: tuple[tuple[str, int], ...]
    """'topic: reason' and how many messages were rejected for it."""
    mempool: int
    transitions: int
    hop_latency_ms: float | None
    """Median delay of proposals from their prover to this peer (one gossip hop)."""
    provers: tuple[str, ...]
    recent_rounds: tuple[RoundSummary, ...]
    """Newest first."""
    transition_log: tuple[TransitionRow, ...]
    errors: tuple[ErrorRow, ...]
    round: CurrentRound
    addrs: tuple[str, ...] = ()
    """The multiaddrs other peers are told to dial, the one to try first first."""
    hop_latency_p99_ms: float | None = None
    recent: tuple[tuple[int, str], ...] = ()
    """Rank and id of the latest final frames, newest first."""
    sync_rejected: int = 0
    """Frames peers sent while this peer caught up that failed to decode or to check."""
    malformed: tuple[tuple[str, int], ...] = ()
    """RPCs and messages dropped before judging, per reason; their senders were penalised."""
    banned: tuple[str, ...] = ()
    limited: tuple[tuple[str, int], ...] = ()
    """Requests, messages and connections refused by a per-peer rate or a ban, per limit."""
    name: str = ""
    """The operator's name for the peer: node.name, else its home folder's name."""
    work: tuple[tuple[str, int], ...] = ()
    """Counters of the peer's work since it started (store commits, gossip copies received
    new and duplicate...), for the bench and the metrics."""
    log_warnings: int = 0
    log_errors: int = 0
    """Records the peer logged at WARNING, and at ERROR or above, since it started."""
    last_log_error: str = ""
    url: str = ""
    """Where a reader fetched it (not served)."""
    problems: tuple[str, ...] = ()
    """Fields a reader found missing or ill-typed (not served; see `parse_status`)."""

    @property
    def rejects(self) -> int:
        return sum(v.reject for v in self.counters)

    def to_json(self) -> dict[str, object]:
        return {
            "peer_id": self.peer_id,
            "name": self.name,
            "addrs": list(self.addrs),
            "network": self.network,
            "role": self.role,
            "state": self.state,
            "state_time": self.state_time,
            "finalized_rank": self.finalized_rank,
            "finalized_id": self.finalized_id,
            "recent": [[rank, frame_id] for rank, frame_id in self.recent],
            "peers": list(self.peers),
            "mesh": dict(self.mesh),
            "counters": {v.topic: _verdicts_json(v) for v in self.counters},
            "rejected": dict(self.rejected),
            "best_peer_rank": self.best_peer_rank,
            "sync_rejected": self.sync_rejected,
            "malformed": dict(self.malformed),
            "banned": list(self.banned),
            "limited": dict(self.limited),
            "work": dict(self.work),
            "since_finalized": self.since_finalized,
            "mempool": self.mempool,
            "transitions": self.transitions,
            "hop_latency_ms": self.hop_latency_ms,
            "hop_latency_p99_ms": self.hop_latency_p99_ms,
            "sync": self.sync,
            "provers": list(self.provers),
            "recent_rounds": [r.to_json() for r in self.recent_rounds],
            "transition_log": [[t.at, t.source, t.target, t.event] for t in self.transition_log],
            "errors": [[e.at, e.message] for e in self.errors],
            "round": self.round.to_json(),
            "log": {
                "warnings": self.log_warnings,
                "errors": self.log_errors,
                "last_error": self.last_log_error,
            },
        }


def _verdicts_json(verdicts: Verdicts) -> dict[str, int]:
    return {"accept": verdicts.accept, "ignore": verdicts.ignore, "reject": verdicts.reject}
