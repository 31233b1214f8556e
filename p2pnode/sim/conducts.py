"""How simulated Byzantine provers misbehave: what they publish, serve and replay."""

from __future__ import annotations

import enum
import functools
import random
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import trio

from p2pnode.consensus import RoundView
from p2pnode.sim import model, stale
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.model import Collected, Confirmation, Frame, Vote, digest
from p2pnode.sim.providers import Registry
from p2pnode.sim.stale import Coalition


class Conduct(enum.Enum):
    """How a simulated prover behaves."""

    HONEST = "honest"
    EQUIVOCATING_PROPOSER = "equivocating_proposer"
    """Sends different frames to different peers."""
    DOUBLE_VOTER = "double_voter"
    """Votes for two different frames in every attempt, one of them made up."""
    SPLIT_VOTER = "split_voter"
    """Votes for two real proposals in every attempt, each to half the peers."""
    WITHHOLDER = "withholder"
    """Sends its precommits and commit certificates to some peers only, or to none."""
    REPLAYER = "replayer"
    """Sends old confirmations, of earlier attempts and ranks, to some peers again."""
    LATE_LEADER = "late_leader"
    """Publishes its proposal late and to some peers only."""
    SYNC_LIAR = "sync_liar"
    """Answers sync requests with nothing, a stale chain or invalid frames."""
    BAD_PARENT = "bad_parent"
    """Proposes frames that do not extend the final frame."""
    BAD_PROOF = "bad_proof"
    """Proposes frames whose proof of work does not hold."""
    SPAMMER = "spammer"
    """Honest, but also floods far-future ranks and messages in a non-prover's name."""
    SILENT_LEADER = "silent_leader"
    """Announces liveness and votes, but never proposes."""
    MUTE = "mute"
    """Announces liveness, and sends nothing else."""
    SUBSET_LEADER = "subset_leader"
    """Sends its proposal to a single other prover."""
    LAGGARD = "laggard"
    """Sends half its messages 0.45 s late and the rest 3 s late."""
    GRINDER = "grinder"
    """Re-stamps its proposal until it would lead the next rank, and holds it back 0.40 s."""
    HEIR = "heir"
    """Proposes as an honest prover on the ranks it owns in the rotation, keeping its place,
    and equivocates on every other rank (those it leads in a demoted prover's place)."""
    LAST_VOTER = "last_voter"
    """Equivocates as a proposer, and sends each vote to one peer only, just before the
    `grace` most attempts end with, so that it completes a certificate there alone."""
    STRANDER = "strander"
    """Sends one frame to the next rank's leader and another to everyone else, and its vote,
    precommit and commit of the rank to everyone but that leader: all the others can finalize
    without it, which then starts the next rank late."""
    CERT_REPLAYER = "cert_replayer"
    """Equivocates as a proposer, and replays a rank's older certificates whenever it hears a
    newer one."""
    FUZZER = "fuzzer"
    """Each message it sends, it sends as one of the conducts above chosen at random, or not at
    all; it also replays old confirmations and lies to sync requests."""

    @property
    def honest(self) -> bool:
        """Whether the prover keeps every promise the checks hold honest provers to."""
        return self in (Conduct.HONEST, Conduct.SPAMMER)


LAST_VOTE = 1.95
"""How long a LAST_VOTER holds its vote: just under the default `grace` (2 s), which ends an
attempt once a quorum has voted."""


@dataclass
class Misbehaviour:
    """A Byzantine prover's outbound side: it decides who gets what, and when."""

    name: str
    conduct: Conduct
    bus: Bus
    registry: Registry
    rng: random.Random
    view: Callable[[], RoundView | None]
    later: Callable[[float, Callable[[], None]], None]
    """Run a callable after a delay (virtual seconds), in the peer's own task group."""
    chain: Mapping[int, Frame] = field(default_factory=dict)
    """The final frames this prover holds (for the grinder)."""
    coalition: Coalition | None = None
    """The scripted choices a CERT_REPLAYER shares with the other Byzantine provers."""
    heard: deque[Confirmation] = field(default_factory=lambda: deque(maxlen=64))
    stranded: dict[int, str] = field(default_factory=dict)
    """A STRANDER's victim at each rank it proposed for."""

    def halves(self) -> tuple[set[str], set[str]]:
        peers = [p for p in self.bus.peers() if p != self.name]
        half = set(self.rng.sample(peers, len(peers) // 2))
        return half, set(self.bus.peers()) - half

    def some(self) -> set[str]:
        peers = [p for p in self.bus.peers() if p != self.name]
        return set(self.rng.sample(peers, self.rng.randint(0, len(peers))))

    def publish(self, topic: Topic, payload: object) -> None:
        """Publish as this conduct does; anything it does not tamper with goes out as is."""
        conduct = self.conduct
        if conduct is Conduct.FUZZER:
            conduct = self.rng.choice(_FUZZED)
            if conduct is Conduct.FUZZER:
                return  # not sent at all
        if conduct is Conduct.MUTE and topic is not Topic.LIVENESS:
            return
        if conduct is Conduct.CERT_REPLAYER and self.coalition is not None:
            self._scripted(self.coalition, topic, payload)
            return
        if conduct is Conduct.LAGGARD:
            lag = self.rng.choice((0.45, 3.0))
            self.later(lag, lambda: self.bus.publish(self.name, topic, payload))
            return
        handled = False
        match payload:
            case Frame() if topic is Topic.PROPOSAL:
                handled = self._propose(conduct, payload)
            case Vote():
                handled = self._vote(conduct, payload)
            case Confirmation():
                handled = self._confirm(conduct, payload)
        if not handled:
            self.bus.publish(self.name, topic, payload)

    def _propose(self, conduct: Conduct, frame: Frame) -> bool:
        half, rest = self.halves()
        match conduct:
            case Conduct.HEIR if self._owns(frame.round):
                return False  # its own rank: proposed as an honest prover would
            case (
                Conduct.EQUIVOCATING_PROPOSER
                | Conduct.CERT_REPLAYER
                | Conduct.HEIR
                | Conduct.LAST_VOTER
            ):
                twin = stale.twin(frame)
                self.bus.publish(self.name, Topic.PROPOSAL, frame, to=rest)
                self.bus.publish(self.name, Topic.PROPOSAL, twin, to=half)
            case Conduct.LATE_LEADER:
                lag = self.rng.uniform(0.5, 2.5)
                self.later(lag, lambda: self.bus.publish(self.name, Topic.PROPOSAL, frame, to=half))
            case Conduct.BAD_PARENT:
                orphan = replace(frame, parent=digest("no such parent", frame.parent))
                self.bus.publish(self.name, Topic.PROPOSAL, orphan)
            case Conduct.BAD_PROOF:
                self.bus.publish(self.name, Topic.PROPOSAL, replace(frame, proof=False))
            case Conduct.STRANDER:
                self._strand(frame)
            case Conduct.SILENT_LEADER:
                pass
            case Conduct.SUBSET_LEADER:
                one = self.rng.choice(sorted(rest - {self.name}))
                self.bus.publish(self.name, Topic.PROPOSAL, frame, to={one})
            case Conduct.GRINDER:
                ground = self._grind(frame)
                self.later(0.40, lambda: self.bus.publish(self.name, Topic.PROPOSAL, ground))
            case _:
                return False
        return True

    def _strand(self, frame: Frame) -> None:
        provers = self.registry.provers
        victim = model.leader_order(provers, frame.round + 1, {**self.chain, frame.round: frame})[0]
        self.stranded = {r: v for r, v in self.stranded.items() if r > frame.round - 8}
        self.stranded[frame.round] = victim
        twin = stale.twin(frame)
        self.bus.publish(self.name, Topic.PROPOSAL, frame, to=self.but(victim))
        self.bus.publish(self.name, Topic.PROPOSAL, twin, to={victim})

    def but(self, peer: str) -> set[str]:
        return set(self.bus.peers()) - {peer}

    def _owns(self, rank: int) -> bool:
        """Whether `rank` is this prover's in the rotation of the sorted prover set."""
        provers = sorted(self.registry.provers)
        return provers[rank % len(provers)] == self.name

    def _scripted(self, coalition: Coalition, topic: Topic, payload: object) -> None:
        """Publish as the coalition's script says (see `sim.stale`)."""
        match payload:
            case Frame() if topic is Topic.PROPOSAL:
                for frame, to in coalition.propose(payload, set(self.bus.peers())):
                    self.bus.publish(self.name, topic, frame, to=to)
            case Vote():
                vote = coalition.vote(payload)
                if vote is not None:
                    self.registry.sign(("vote", vote.round, vote.attempt, vote.frame_id, self.name))
                    self.bus.publish(self.name, topic, vote)
            case Confirmation() if not coalition.confirm(payload):
                pass
            case _:
                self.bus.publish(self.name, topic, payload)

    def _grind(self, frame: Frame) -> Frame:
        """The first re-stamping of `frame` (of up to a few per prover) under which this prover
        leads the next rank, were `frame` final; `frame` itself if none does."""
        provers = self.registry.provers
        for step in range(4 * len(provers)):
            stamped = replace(frame, stamp=frame.stamp + step * 1e-6)
            chain = {**self.chain, stamped.round: stamped}
            if model.leader_order(provers, stamped.round + 1, chain)[0] == self.name:
                return stamped
        return frame

    def _vote(self, conduct: Conduct, vote: Vote) -> bool:
        if conduct is Conduct.STRANDER and vote.round in self.stranded:
            self.bus.publish(self.name, Topic.VOTE, vote, to=self.but(self.stranded[vote.round]))
            return True
        if conduct is Conduct.LAST_VOTER:
            one = {self.rng.choice(sorted(p for p in self.bus.peers() if p != self.name))}
            self.later(LAST_VOTE, lambda: self.bus.publish(self.name, Topic.VOTE, vote, to=one))
            return True
        if conduct is Conduct.DOUBLE_VOTER:
            twin = replace(vote, frame_id="0" * 16, proposer=self.name)
        elif conduct is Conduct.SPLIT_VOTER:
            other = self._other_proposal(vote)
            if other is None:
                return False
            twin = replace(vote, proposer=other[0], frame_id=other[1])
        else:
            return False
        self.registry.sign(("vote", twin.round, twin.attempt, twin.frame_id, self.name))
        half, rest = self.halves()
        self.bus.publish(self.name, Topic.VOTE, vote, to=rest)
        self.bus.publish(self.name, Topic.VOTE, twin, to=half)
        return True

    def _other_proposal(self, vote: Vote) -> tuple[str, str] | None:
        view = self.view()
        if view is None or view.target_rank != vote.round:
            return None
        others = sorted((p, f) for p, f in view.proposals.items() if f != vote.frame_id)
        return self.rng.choice(others) if others else None

    def _confirm(self, conduct: Conduct, confirmation: Confirmation) -> bool:
        self.heard.append(confirmation)
        victim = self.stranded.get(confirmation.frame.round)
        if conduct is Conduct.STRANDER and victim is not None:
            self.bus.publish(self.name, Topic.CONFIRMATION, confirmation, to=self.but(victim))
            return True
        if conduct is not Conduct.WITHHOLDER:
            return False
        self.bus.publish(self.name, Topic.CONFIRMATION, confirmation, to=self.some())
        return True

    def hear(self, confirmation: Confirmation) -> None:
        self.heard.append(confirmation)
        if self.coalition is not None:
            self.coalition.heard(confirmation)
        if self.conduct is Conduct.CERT_REPLAYER and not confirmation.frame.final:
            frame = confirmation.frame
            older = [
                old
                for old in self.heard
                if old.frame.round == frame.round
                and -1 < old.frame.cert_attempt < frame.cert_attempt
            ]
            if older:
                self.later(0.005, functools.partial(self._replay, older))

    def _replay(self, confirmations: list[Confirmation]) -> None:
        """Send older certificates again, as their signers sent them, to every peer."""
        for confirmation in confirmations:
            self.bus.publish(confirmation.signer, Topic.CONFIRMATION, confirmation)

    async def replay(self, every: float) -> None:
        """Send an old confirmation again, as its signer sent it, to some peers."""
        while True:
            await trio.sleep(every)
            view = self.view()
            old = [c for c in self.heard if view is None or _older(c.frame, view)]
            if old:
                confirmation = self.rng.choice(old)
                to = self.some()
                self.bus.publish(confirmation.signer, Topic.CONFIRMATION, confirmation, to=to)

    async def replay_stale(self, every: float) -> None:
        """Replay the coalition's older certificates, as their signers sent them, to everyone."""
        while self.coalition is not None:
            await trio.sleep(every)
            view = self.view()
            if view is not None and view.target_rank > stale.RANK:
                return  # its rank is final: replays of it are ignored unread
            for confirmation in self.coalition.replays():
                self.bus.publish(confirmation.signer, Topic.CONFIRMATION, confirmation)

    def serve(self, frames: list[Frame], start: int) -> list[Frame]:
        """A sync liar's answer: nothing, a chain that stops early, or an invalid frame."""
        choice = self.rng.randrange(3)
        if choice == 0 or not frames:
            return []
        if choice == 1:
            return frames[: self.rng.randrange(len(frames))]
        forged = replace(frames[0], signers=frozenset(self.registry.provers[:1]))
        return [forged, *frames[1:]]

    async def spam(self, every: float, target: Callable[[], int]) -> None:
        """Far-future ranks in its name, and a non-prover's messages for the current rank."""
        while True:
            await trio.sleep(every)
            rank = target()
            self.bus.publish(self.name, Topic.LIVENESS, Collected(rank + 1000))
            self.bus.publish(self.name, Topic.PROPOSAL, Frame(rank + 1000, "x", self.name, "x"))
            intruder = f"intruder-{self.name}"
            self.bus.publish(intruder, Topic.LIVENESS, Collected(rank))
            self.bus.publish(intruder, Topic.PROPOSAL, Frame(rank, "x", intruder, "x"))
            self.bus.publish(intruder, Topic.VOTE, Vote(rank, 0, "f" * 16, intruder, intruder))


_FUZZED = (
    Conduct.HONEST,
    Conduct.EQUIVOCATING_PROPOSER,
    Conduct.DOUBLE_VOTER,
    Conduct.SPLIT_VOTER,
    Conduct.WITHHOLDER,
    Conduct.LATE_LEADER,
    Conduct.BAD_PARENT,
    Conduct.BAD_PROOF,
    Conduct.SILENT_LEADER,
    Conduct.MUTE,
    Conduct.SUBSET_LEADER,
    Conduct.LAGGARD,
    Conduct.GRINDER,
    Conduct.FUZZER,  # stands for: nothing sent
)


def _older(frame: Frame, view: RoundView) -> bool:
    return frame.round < view.target_rank or frame.attempt < view.attempt
