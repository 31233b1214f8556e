"""Whether a peer is healthy, read from its status: connected to a quorum and finalizing."""

from __future__ import annotations

from p2pnode.peer.status import STALLED_AFTER, PeerStatus


def provers_reached(status: PeerStatus) -> int:
    """The provers a peer decides with: those it is connected to, and itself if a prover."""
    return len(set(status.peers) & set(status.provers)) + (status.role == "prover")


def health_problems(status: PeerStatus) -> tuple[str, ...]:
    """Why the peer is not healthy, one line each; none when it is connected to a quorum of
    provers (a follower: to any peer), has a final frame from the last `STALLED_AFTER`
    seconds, and is not catching up."""
    problems = []
    quorum = status.round.quorum
    if status.role == "prover":
        # This prover counts itself: n - f provers together decide.
        reached = provers_reached(status)
        if reached < quorum:
            problems.append(
                f"connected to {reached - 1} of {len(status.provers) - 1} other provers: "
                f"a quorum is {quorum} provers"
            )
    elif not status.peers:
        problems.append("connected to no peer")
    since = status.since_finalized
    if since is None:
        problems.append("no final frame since the peer started")
    elif since > STALLED_AFTER:
        problems.append(f"no final frame for {since:.0f} s")
    if status.sync == "catching up":
        problems.append(
            f"catching up: rank {status.finalized_rank} of {status.best_peer_rank} known"
        )
    return tuple(problems)
