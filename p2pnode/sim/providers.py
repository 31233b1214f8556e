"""Deterministic reference providers for the simulator: they run attempts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from p2pnode.consensus import ProviderError, RoundRecord
from p2pnode.consensus.rules import priority
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.model import GENESIS, Collected, Frame, Peer, Vote, leader_order, quorum

Statement = tuple[str, int, int, str, str]
"""(kind, rank, attempt, frame id, signer): what a signature vouches for."""


class Registry:
    """Every statement anyone signed; a certificate is valid only if its signers signed."""

    def __init__(self, provers: list[str]) -> None:
        self.provers = provers
        self._signed: set[Statement] = set()

    def sign(self, statement: Statement) -> None:
        self._signed.add(statement)

    def conflicts(self, signers: set[str]) -> int:
        """Statements by `signers` that contradict an earlier one (same kind, rank, attempt)."""
        seen: dict[tuple[str, int, int, str], str] = {}
        conflicting = 0
        for kind, rank, attempt, frame_id, signer in sorted(self._signed):
            if signer not in signers:
                continue
            first = seen.setdefault((kind, rank, attempt, signer), frame_id)
            conflicting += first != frame_id
        return conflicting

    def valid(self, frame: Frame) -> bool:
        """Whether `frame`'s certificate holds: a quorum of provers signed it."""
        if frame.cert_attempt < 0:
            return False
        kind = "precommit" if frame.final else "vote"
        signers = [s for s in frame.signers if s in self.provers]
        signed = [
            s
            for s in signers
            if (kind, frame.round, frame.cert_attempt, frame.identity(), s) in self._signed
        ]
        return len(signed) >= quorum(len(self.provers))


@dataclass
class Disk:
    """What a peer keeps across crashes: its finalized chain, its votes and its round record."""

    chain: dict[int, Frame] = field(default_factory=lambda: {0: GENESIS})
    votes: dict[tuple[int, int], Vote] = field(default_factory=dict)
    record: RoundRecord[Frame] | None = None

    def tip(self) -> Frame:
        return self.chain[max(self.chain)]

    def load(self) -> RoundRecord[Frame] | None:
        return self.record

    def save(self, record: RoundRecord[Frame]) -> None:
        self.record = record


@dataclass
class Sent:
    """The latest messages a peer published, re-broadcast while its round is stalled."""

    liveness: Collected | None = None
    proposal: Frame | None = None
    vote: Vote | None = None
    confirmation: Frame | None = None


class Reference:
    """Sync, voting, leader and liveness providers of one simulated prover.

    Votes are written to the peer's disk before they are published, and a vote asked for again
    in the same rank and attempt is the stored one, re-sent: the peer never signs two.
    """

    def __init__(
        self,
        name: str,
        disk: Disk,
        bus: Bus,
        registry: Registry,
        disks: Mapping[str, Disk],
        *,
        prove_time: float = 0.05,
        publish: Callable[[Topic, object], None] | None = None,
    ) -> None:
        self.name = name
        self.disk = disk
        self.bus = bus
        self.registry = registry
        self.disks = disks
        self.prove_time = prove_time
        self.sent = Sent()
        self._publish = publish or (lambda topic, payload: bus.publish(name, topic, payload))

    @property
    def provers(self) -> list[str]:
        return self.registry.provers

    # -- sync ----------------------------------------------------------------------------

    async def synchronize(self, existing: Frame | None) -> Frame:
        await trio.sleep(0.02)
        sources = [
            n for n in sorted(self.disks) if n != self.name and self.bus.reachable(self.name, n)
        ]
        if not sources and existing is None:
            raise ProviderError("no peer reachable to synchronize from")
        for source in sources:
            self._catch_up(self.disks[source])
        return self.disk.tip()

    def _catch_up(self, source: Disk) -> None:
        """Copy the source's later frames, checking every link and certificate."""
        chain = self.disk.chain
        rank = max(chain)
        while rank + 1 in source.chain:
            frame = source.chain[rank + 1]
            if frame.parent != chain[rank].identity() or not self.registry.valid(frame):
                raise ProviderError(f"invalid frame offered at rank {rank + 1}")
            chain[rank + 1] = frame
            rank += 1

    # -- leader and liveness -------------------------------------------------------------

    async def get_next_leaders(self, prior: Frame | None) -> list[Peer]:
        return [Peer(name) for name in leader_order(self.provers, prior)]

    async def prove_next_state(self, prior: Frame | None, collected: Collected) -> Frame:
        await trio.sleep(self.prove_time)
        parent = prior if prior is not None else GENESIS
        return Frame(parent.round + 1, parent.identity(), self.name, collected.identity())

    async def collect(self) -> Collected:
        rank = self.disk.tip().round + 1
        return Collected(rank, (f"{self.name}:{rank}",))

    async def send_liveness(self, prior: Frame | None, collected: Collected) -> None:
        self.sent.liveness = collected
        self._publish(Topic.LIVENESS, collected)

    # -- voting --------------------------------------------------------------------------

    async def send_proposal(self, proposal: Frame) -> None:
        self.sent.proposal = proposal
        self._publish(Topic.PROPOSAL, proposal)

    async def decide_and_send_vote(
        self, proposals: Mapping[str, Frame], attempt: int = 0
    ) -> tuple[Peer, Vote]:
        if not proposals:
            raise ProviderError("nothing to vote for")
        rank = next(iter(proposals.values())).round
        vote = self.disk.votes.get((rank, attempt))
        if vote is None:
            order = priority(leader_order(self.provers, self.disk.chain.get(rank - 1)), attempt)
            proposer = min(proposals, key=lambda p: order.index(p) if p in order else len(order))
            frame = proposals[proposer]
            vote = Vote(rank, attempt, frame.identity(), proposer, self.name)
            self.disk.votes[(rank, attempt)] = vote  # durable before it is published
        self.registry.sign(("vote", rank, attempt, vote.frame_id, self.name))
        self.sent.vote = vote
        self._publish(Topic.VOTE, vote)
        return Peer(vote.proposer), vote

    def _certified(self, signers_by_frame: Mapping[str, list[str]]) -> str | None:
        for frame_id, signers in sorted(signers_by_frame.items()):
            if len(set(signers) & set(self.provers)) >= quorum(len(self.provers)):
                return frame_id
        return None

    async def is_quorum(self, proposal_votes: Mapping[str, Vote]) -> bool:
        return self._certified(_by_frame(proposal_votes)) is not None

    async def finalize_votes(
        self, proposals: Mapping[str, Frame], proposal_votes: Mapping[str, Vote]
    ) -> tuple[Frame, Peer]:
        by_frame = _by_frame(proposal_votes)
        frame_id = self._certified(by_frame)
        frame = next((f for f in proposals.values() if f.identity() == frame_id), None)
        if frame_id is None or frame is None:
            raise ProviderError("no certified frame at hand")
        attempt = next(iter(proposal_votes.values())).attempt_no
        return frame.body().certified(attempt, by_frame[frame_id], final=False), Peer(frame.prover)

    async def send_confirmation(self, finalized: Frame) -> None:
        if not finalized.final:
            statement = ("precommit", finalized.round, finalized.cert_attempt)
            self.registry.sign((*statement, finalized.identity(), self.name))
        self.sent.confirmation = finalized
        self._publish(Topic.CONFIRMATION, finalized)

    async def is_commit(self, confirmations: Mapping[str, Frame]) -> bool:
        if any(frame.final for frame in confirmations.values()):
            return True
        return self._certified(_senders_by_frame(confirmations)) is not None

    async def finalize_commit(self, confirmations: Mapping[str, Frame]) -> Frame:
        for frame in confirmations.values():
            if frame.final:
                return frame
        by_frame = _senders_by_frame(confirmations)
        frame_id = self._certified(by_frame)
        if frame_id is None:
            raise ProviderError("no commit certificate")
        sample = next(f for f in confirmations.values() if f.identity() == frame_id)
        return sample.certified(sample.cert_attempt, by_frame[frame_id], final=True)

    def on_finalized(self, state: Frame) -> None:
        """Store the final frame; the latest one is re-broadcast so laggards finalize at once."""
        self.disk.chain.setdefault(state.round, state)
        if state.final:
            self.sent.confirmation = state


def _by_frame(votes: Mapping[str, Vote]) -> dict[str, list[str]]:
    by_frame: dict[str, list[str]] = {}
    for voter, vote in sorted(votes.items()):
        by_frame.setdefault(vote.frame_id, []).append(voter)
    return by_frame


def _senders_by_frame(confirmations: Mapping[str, Frame]) -> dict[str, list[str]]:
    by_frame: dict[str, list[str]] = {}
    for sender, frame in sorted(confirmations.items()):
        by_frame.setdefault(frame.identity(), []).append(sender)
    return by_frame


def tally(votes: Mapping[str, Vote]) -> Counter[str]:
    return Counter(vote.frame_id for vote in votes.values())
