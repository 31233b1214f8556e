"""A scripted attack: a rank left with vote certificates for two frames of one Byzantine proposer,
and the older one replayed whenever the newer one is heard.

The proposer X (the top prover of rank 1) sends its frame A to `targets` (enough honest provers
for a quorum with the Byzantine ones) and a twin B to the others. In attempt 0 a quorum votes
A, but the network keeps A's votes and certificates from everyone outside the lockers: one of
the targets, the pivot, voted A without seeing the certificate, and crashes and comes back with
an empty book. From then on X sends B to everyone not locked on A, and the Byzantine provers
vote B in every later attempt until B is certified, which happens once X's turn at the top of
the attempt's priority comes round: the pivot and the others that never saw A's certificate
vote B. The Byzantine provers never precommit B, so its commit needs the lockers, who must
move to B; and X replays A's older certificate each time it hears B's: an engine that keeps
one frame per proposer loses B again and again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import trio

from p2pnode.consensus import leaders
from p2pnode.consensus.rules import max_faults
from p2pnode.sim.bus import Topic
from p2pnode.sim.model import Confirmation, Frame, Vote

RANK = 1
"""The rank the script plays out at."""


def twin(frame: Frame) -> Frame:
    """The second frame an equivocating proposer makes of its own: another payload."""
    return replace(frame, payload=frame.payload + "'")


def is_twin(frame_payload: str) -> bool:
    return frame_payload.endswith("'")


@dataclass
class Coalition:
    """The Byzantine provers' shared choices: who gets which frame of the proposer's, and
    which frame they vote for."""

    proposer: str
    targets: frozenset[str]
    twins: dict[str, str] = field(default_factory=dict)
    """The twin's id by the first frame's id."""
    locked: dict[str, Confirmation] = field(default_factory=dict)
    """The precommits of the first frame heard, by signer: to replay."""
    first_sent: bool = False
    twin_certified: bool = False

    def propose(self, frame: Frame, everyone: set[str]) -> list[tuple[Frame, set[str]]]:
        """The frames to send for the proposer's `frame`, each with its recipients: first the
        frame to the targets and its twin to the others, later the twin to all not locked."""
        if frame.round != RANK or frame.prover != self.proposer:
            return [(frame, everyone)]
        second = twin(frame)
        self.twins[frame.identity()] = second.identity()
        others = everyone - {self.proposer}
        if not self.first_sent:
            self.first_sent = True
            return [(frame, others & self.targets), (second, others - self.targets)]
        return [(second, others - set(self.locked))]

    def vote(self, vote: Vote) -> Vote | None:
        """The vote to send instead of `vote`: as it is in attempt 0, then for the twin until
        the twin is certified, then none."""
        if vote.round != RANK or vote.attempt == 0 or vote.proposer != self.proposer:
            return vote
        if self.twin_certified or vote.frame_id not in self.twins:
            return None
        return replace(vote, frame_id=self.twins[vote.frame_id])

    def confirm(self, confirmation: Confirmation) -> bool:
        """Whether to send one of its own confirmations: never one for the twin, so that the
        twin's commit needs the lockers."""
        frame = confirmation.frame
        return not (
            frame.round == RANK and frame.prover == self.proposer and is_twin(frame.payload)
        )

    def heard(self, confirmation: Confirmation) -> None:
        frame = confirmation.frame
        if frame.round != RANK or frame.final:
            return
        if frame.prover != self.proposer:
            return
        if is_twin(frame.payload):
            self.twin_certified = True
        else:
            self.locked.setdefault(confirmation.signer, confirmation)

    def replays(self) -> list[Confirmation]:
        """The first frame's precommits, once the twin is certified (replayed every 5 ms)."""
        return list(self.locked.values()) if self.twin_certified else []


@dataclass
class HideFirst:
    """The network's part, until the twin is certified (which ends the faults): the first
    frame's votes and certificates reach only the lockers, and the votes of later attempts for
    the proposer's frames reach everyone but the lockers (so that they learn of the twin's
    certificate only from precommits, and must find its frame to vote for it)."""

    proposer: str
    hidden: frozenset[str]
    lockers: frozenset[str]
    ended: trio.Event = field(default_factory=trio.Event)

    def __call__(self, sender: str, recipient: str, topic: Topic, payload: object) -> bool:
        if self.ended.is_set():
            return False
        match payload:
            case Confirmation(frame=frame) if self._of_rank(frame) and is_twin(frame.payload):
                self.ended.set()
                return False
            case Confirmation(frame=frame) if self._of_rank(frame):
                return recipient in self.hidden
            case Vote() if payload.round == RANK and payload.proposer == self.proposer:
                if payload.attempt == 0:
                    return recipient in self.hidden
                return recipient in self.lockers
        return False

    def _of_rank(self, frame: Frame) -> bool:
        return frame.round == RANK and frame.prover == self.proposer


@dataclass(frozen=True, slots=True)
class Cast:
    """Who plays which part: the proposer, the other Byzantine provers, the lockers, the pivot
    and the rest (who get the twin)."""

    proposer: str
    byzantine: tuple[str, ...]
    lockers: tuple[str, ...]
    pivot: str
    rest: tuple[str, ...]

    @property
    def targets(self) -> frozenset[str]:
        return frozenset({*self.byzantine, *self.lockers, self.pivot} - {self.proposer})

    @property
    def hidden(self) -> frozenset[str]:
        return frozenset({self.pivot, *self.rest})


@dataclass
class Script:
    """One run's play: its cast, the network's rule and the Byzantine provers' coalition."""

    cast: Cast
    rule: HideFirst
    coalition: Coalition

    @classmethod
    def of(cls, cast: Cast) -> Script:
        return cls(
            cast,
            HideFirst(cast.proposer, cast.hidden, frozenset(cast.lockers)),
            Coalition(cast.proposer, cast.targets),
        )


def cast(names: list[str], rng: random.Random) -> Cast:
    """The top prover of the rank is the proposer; f - 1 others are Byzantine; n - 2f honest
    provers vote its first frame (a quorum with the f Byzantine), one of them the pivot."""
    n, f = len(names), max_faults(len(names))
    order = leaders.leader_order(sorted(names), RANK, lambda rank: None)
    proposer, rest = order[0], order[1:]
    byzantine = tuple(rng.sample(rest, f - 1))
    honest = [name for name in rest if name not in byzantine]
    voters = rng.sample(honest, n - 2 * f)
    return Cast(
        proposer=proposer,
        byzantine=(proposer, *byzantine),
        lockers=tuple(voters[:-1]),
        pivot=voters[-1],
        rest=tuple(name for name in honest if name not in voters),
    )
