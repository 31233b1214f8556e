"""The checks of a chaos run, as pure functions over what was read from the peers."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from p2pnode.chaos.stores import Signed
from p2pnode.peer.status import PeerStatus

SHOWN = 3
"""Offending items named in a failed check's detail; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    evidence: str = ""
    """Lines that show a failure (a peer's log tail), printed under the table."""


def frames_agree(chains: Mapping[str, Mapping[int, bytes]]) -> Check:
    """Every rank that two or more peers finalized holds the same frame on each of them.

    Frames are compared by id: a final frame's stored bytes also hold its commit certificate,
    and peers may rightly hold different quorums of signatures for one frame.
    """
    by_rank: dict[int, dict[bytes, list[str]]] = defaultdict(lambda: defaultdict(list))
    for peer, chain in sorted(chains.items()):
        for rank, frame_id in chain.items():
            by_rank[rank][frame_id].append(peer)
    shared = [rank for rank, ids in by_rank.items() if sum(map(len, ids.values())) > 1]
    forks = sorted(rank for rank in shared if len(by_rank[rank]) > 1)
    if not forks:
        return Check("frames agree", True, f"{len(shared)} shared ranks identical")
    shown = [_fork(rank, by_rank[rank]) for rank in forks[:SHOWN]]
    more = f" and {len(forks) - SHOWN} more ranks" if len(forks) > SHOWN else ""
    return Check("frames agree", False, "; ".join(shown) + more)


def _fork(rank: int, ids: Mapping[bytes, list[str]]) -> str:
    sides = " vs ".join(
        f"{frame_id.hex()[:8]} on {'+'.join(peers)}" for frame_id, peers in ids.items()
    )
    return f"rank {rank}: {sides}"


def signed_once(logs: Mapping[str, Sequence[Signed] | None]) -> Check:
    """No prover signed two different frames as votes (or precommits) in one rank and attempt.
    A store without the `signed` log cannot show that, so it fails the check too."""
    missing = sorted(peer for peer, log in logs.items() if log is None)
    problems = [f"no `signed` table in the store of {', '.join(missing)}"] if missing else []
    rows = 0
    for peer, log in sorted(logs.items()):
        if log is not None:
            rows += len(log)
            problems += [f"{peer}: {twice}" for twice in _signed_twice(log)]
    if problems:
        more = f" and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        return Check("signed once", False, "; ".join(problems[:SHOWN]) + more)
    return Check("signed once", True, f"{rows} signatures, none twice in an attempt")


def _signed_twice(log: Sequence[Signed]) -> list[str]:
    frames: dict[tuple[str, int, int], set[bytes | None]] = defaultdict(set)
    for row in log:
        frames[(row.kind, row.rank, row.attempt)].add(row.frame)
    return [
        f"{len(signed)} different {kind}s at rank {rank} attempt {attempt}"
        for (kind, rank, attempt), signed in sorted(frames.items())
        if len(signed) > 1
    ]


def nothing_lost(peer: str, before: int, after: int) -> Check:
    """A restarted peer's store holds at least the rank it had finalized before the kill."""
    if after >= before:
        return Check("nothing lost", True, f"{peer}: rank {before} before, {after} after restart")
    return Check("nothing lost", False, f"{peer}: rank {before} before the kill, {after} after")


def resumed(
    what: str, seconds: float | None, bound: float, waited: float, stuck: str = ""
) -> Check:
    """The network finalized again within `bound` seconds; None: not within `waited`.
    `stuck` is what the peers showed once the bound had passed."""
    name = f"resume ≤ {bound:g} s"
    if seconds is None:
        return Check(name, False, f"{what}: no new rank on every peer within {waited:g} s", stuck)
    if seconds > bound:
        return Check(name, False, f"{what}: took {seconds:.1f} s, more than {bound:g} s", stuck)
    return Check(name, True, f"{what}: {seconds:.1f} s")


def reconnected(what: str, seconds: float | None, bound: float) -> Check:
    """Every peer was connected to every other within `bound` seconds of the links' return."""
    name = f"reconnect ≤ {bound:g} s"
    if seconds is None:
        return Check(name, False, f"{what}: some peer never saw every other again")
    if seconds > bound:
        return Check(name, False, f"{what}: took {seconds:.1f} s, more than {bound:g} s")
    return Check(name, True, f"{what}: all connected in {seconds:.1f} s")


def describe(peer: str, status: PeerStatus) -> str:
    """One line of a peer's status: where its round stands."""
    view = status.round
    lock = view.locked_on
    held = f"{lock[:8]} since attempt {view.lock_attempt}" if lock else "none"
    unread = f"; unread {', '.join(status.problems)}" if status.problems else ""
    return (
        f"{peer}: {status.state} for {status.state_time} s, final "
        f"{status.finalized_rank}, rank {view.rank} attempt {view.attempt}: "
        f"{len(view.live)} live, {len(view.proposals)} proposals, "
        f"{_tally(view.votes_for or ())} (quorum {view.quorum}), lock {held}; "
        f"{len(status.peers)} peers, {_gossip(status)}{unread}"
    )


WATCHED = ("votes", "confirmations")
"""The topics whose mesh and traffic tell whether a stuck peer still hears the others."""


def _gossip(status: PeerStatus) -> str:
    """Each watched topic's mesh size and the messages taken from it: "votes mesh 3, 41 in"."""
    mesh, taken = dict(status.mesh), {v.topic: v.accept for v in status.counters}
    return ", ".join(f"{t} mesh {mesh.get(t, '?')}, {taken.get(t, '?')} in" for t in WATCHED)


def _tally(votes_for: Iterable[tuple[str, str]]) -> str:
    """The votes of the current attempt by frame: "3 votes: 2 for 0aaeae08, 1 for 56fe6262"."""
    frames = Counter(frame[:8] for _, frame in votes_for)
    total = sum(frames.values())
    if not total:
        return "0 votes"
    return f"{total} votes: " + ", ".join(f"{n} for {f}" for f, n in frames.most_common())


def no_progress_without_quorum(before: int, after: int) -> Check:
    """While fewer than a quorum of provers can talk, no rank may become final."""
    if after <= before:
        return Check("no quorum, no final", True, f"highest rank stayed {before}")
    return Check("no quorum, no final", False, f"highest rank went {before} → {after}")


def alive(exited: Mapping[str, int], tails: Mapping[str, str]) -> Check:
    """Every peer process is still running: none exited on its own."""
    if not exited:
        return Check("all alive", True, "every peer running")
    detail = ", ".join(f"{peer} exited with {code}" for peer, code in sorted(exited.items()))
    evidence = "\n".join(f"{peer}:\n{tails.get(peer, '')}" for peer in sorted(exited))
    return Check("all alive", False, detail, evidence)


def started(peer: str, problem: str | None, tail: str = "") -> Check:
    """A peer answered its status endpoint after being started."""
    if problem is None:
        return Check("started", True, f"{peer} answers its status")
    return Check("started", False, f"{peer}: {problem}", tail)


def stopped(codes: Mapping[str, int]) -> Check:
    """Every running peer stopped on SIGTERM, by itself and cleanly (exit 0)."""
    bad = {peer: code for peer, code in sorted(codes.items()) if code != 0}
    if not bad:
        return Check("clean stop", True, f"{len(codes)} peers exited 0 on SIGTERM")
    detail = ", ".join(
        f"{peer} {'needed SIGKILL' if code == -9 else f'exited with {code}'}"
        for peer, code in bad.items()
    )
    return Check("clean stop", False, detail)
