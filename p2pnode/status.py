"""A peer's status snapshot: what the CLI, the dashboard and the status endpoint show."""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.consensus import RoundView


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
    since_finalized: float | None
    mempool: int
    round: RoundView
    transitions: int
    hop_latency_ms: float | None
    """Median delay of proposals from their prover to this peer (one gossip hop)."""

    def to_json(self) -> dict[str, object]:
        view = self.round
        return {
            "peer_id": self.peer_id,
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
            "since_finalized": self.since_finalized,
            "mempool": self.mempool,
            "transitions": self.transitions,
            "hop_latency_ms": self.hop_latency_ms,
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
                "equivocators": list(view.equivocators),
            },
        }
