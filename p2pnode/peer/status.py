"""A peer's status snapshot: what the CLI, the dashboard and the status endpoint show."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2pnode.consensus import Event, RoundView, State
from p2pnode.peer.phases import RoundPhases

STALLED_AFTER = 30.0
"""Seconds without a final frame after which a peer calls itself stalled."""


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


@dataclass
class Activity:
    """Recent transitions and errors of a peer (wall-clock seconds), for the dashboard."""

    transitions: deque[tuple[float, str, str, str]] = field(
        default_factory=lambda: deque(maxlen=32)
    )
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=32))

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        if from_ is not to:  # self-loops (a vote received while voting...) would drown the log
            self.transitions.append((time.time(), from_.value, to.value, event.value))

    def error(self, message: str) -> None:
        self.errors.append((time.time(), message))


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
class NodeStatus:
    """A snapshot for the CLI, the dashboard and the status endpoint."""

    peer_id: str
    network: str
    role: str
    state: str
    state_time: float
    finalized_rank: int
    finalized_id: str
    recent: list[tuple[int, str]]
    peers: list[str]
    mesh: dict[str, int]
    counters: dict[str, dict[str, int]]
    rejected: dict[str, int]
    best_peer_rank: int
    sync_rejected: int
    """Frames peers sent while this peer caught up that failed to decode or to check."""
    since_finalized: float | None
    mempool: int
    round: RoundView
    transitions: int
    hop_latency_ms: float | None
    """Median delay of proposals from their prover to this peer (one gossip hop)."""
    hop_latency_p99_ms: float | None
    provers: list[str]
    recent_rounds: list[RoundSummary]
    activity: Activity
    votes_for: dict[str, str]
    """Voter → the frame id it voted for, in the current attempt."""
    quorum: int
    malformed: dict[str, int] = field(default_factory=dict)
    """RPCs and messages dropped before judging, per reason; their senders were penalised."""
    banned: list[str] = field(default_factory=list)
    limited: dict[str, int] = field(default_factory=dict)
    """Requests and messages refused for going over a per-peer rate, per limit."""
    addrs: list[str] = field(default_factory=list)
    """The multiaddrs other peers are told to dial, the one to try first first."""

    @property
    def sync(self) -> str:
        return sync_state(self.finalized_rank, self.best_peer_rank, self.since_finalized)

    def to_json(self) -> dict[str, object]:
        view = self.round
        return {
            "peer_id": self.peer_id,
            "addrs": self.addrs,
            "network": self.network,
            "role": self.role,
            "state": self.state,
            "state_time": round(self.state_time, 3),
            "finalized_rank": self.finalized_rank,
            "finalized_id": self.finalized_id,
            "recent": [[rank, frame_id] for rank, frame_id in self.recent],
            "peers": self.peers,
            "mesh": self.mesh,
            "counters": self.counters,
            "rejected": self.rejected,
            "best_peer_rank": self.best_peer_rank,
            "sync_rejected": self.sync_rejected,
            "malformed": self.malformed,
            "banned": self.banned,
            "limited": self.limited,
            "since_finalized": self.since_finalized,
            "mempool": self.mempool,
            "transitions": self.transitions,
            "hop_latency_ms": self.hop_latency_ms,
            "hop_latency_p99_ms": self.hop_latency_p99_ms,
            "sync": self.sync,
            "provers": self.provers,
            "recent_rounds": [r.to_json() for r in self.recent_rounds],
            "transition_log": [list(t) for t in self.activity.transitions],
            "errors": [list(e) for e in self.activity.errors],
            "round": {
                "rank": view.target_rank,
                "attempt": view.attempt,
                "minimum_provers": view.minimum_provers,
                "provers": list(view.provers),
                "live": list(view.live),
                "proposals": dict(view.proposals),
                "votes": dict(view.votes),
                "confirmations": {str(a): list(s) for a, s in view.confirmations.items()},
                "voted": view.voted,
                "locked_on": view.locked_on,
                "lock_attempt": view.lock_attempt,
                "votes_for": self.votes_for,
                "quorum": self.quorum,
                "equivocators": list(view.equivocators),
            },
        }
