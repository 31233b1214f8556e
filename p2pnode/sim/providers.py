"""Deterministic reference providers for the simulator: they run attempts, as strict as the real."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import trio

from p2pnode.consensus import InvalidProposal, ProviderError, RoundRecord
from p2pnode.consensus.rules import priority
from p2pnode.sim import model
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.model import (
    GENESIS,
    Collected,
    Confirmation,
    Frame,
    Peer,
    Vote,
    quorum,
)

Statement = tuple[str, int, int, str, str]
"""(kind, rank, attempt, frame id, signer): what a signature vouches for."""

SYNC_BATCH = 16
"""Frames a sync server returns per request."""
SYNC_ROUND_TRIP = 0.02
"""Virtual seconds a sync request takes."""
STAMP_STEP = 0.001
"""A frame's timestamp is at least this much after its parent's."""


class Registry:
    """Every statement anyone signed; a certificate is valid only if its signers signed."""

    def __init__(self, provers: list[str]) -> None:
        self.provers = provers
        self._signed: set[Statement] = set()

    def sign(self, statement: Statement) -> None:
        self._signed.add(statement)

    def signed(self, statement: Statement) -> bool:
        return statement in self._signed

    def conflicts(self, signers: set[str]) -> int:
        """Statements by `signers` that contradict an earlier one of the same kind, rank and
        attempt: two votes, two precommits, or two proposals for one rank."""
        seen: dict[tuple[str, int, int, str], str] = {}
        conflicting = 0
        for kind, rank, attempt, frame_id, signer in sorted(self._signed):
            if signer not in signers:
                continue
            first = seen.setdefault((kind, rank, attempt, signer), frame_id)
            conflicting += first != frame_id
        return conflicting

    def valid(self, frame: Frame) -> bool:
        """Whether `frame`'s certificate holds: a quorum of provers signed it (votes for a vote
        certificate, precommits for a commit certificate)."""
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
    watchers: list[Callable[[Frame], None]] = field(default_factory=list)
    """Told of every frame kept as final (tests await ranks with it)."""

    def tip(self) -> Frame:
        return self.chain[max(self.chain)]

    def keep(self, frame: Frame) -> None:
        """Keep a final frame; the first one kept at a rank stays."""
        if frame.round not in self.chain:
            self.chain[frame.round] = frame
            for watcher in list(self.watchers):
                watcher(frame)

    def load(self) -> RoundRecord[Frame] | None:
        return self.record

    def save(self, record: RoundRecord[Frame]) -> None:
        self.record = record

    def frames(self, start: int, limit: int) -> list[Frame]:
        return [self.chain[r] for r in range(max(start, 1), start + limit) if r in self.chain]


@dataclass
class Sent:
    """The latest messages a peer published, re-broadcast while its round is stalled."""

    liveness: Collected | None = None
    proposal: Frame | None = None
    votes: tuple[Vote, ...] = ()
    """The votes of the last two attempts this peer voted in: one that moved on to a later
    attempt still shows its vote to peers that missed it in the attempt they are in."""
    precommit: Confirmation | None = None
    relay: Confirmation | None = None
    """Another prover's precommit carrying the newest vote certificate known at the rank,
    passed on as received (its signers may be gone)."""
    commit: Confirmation | None = None

    def heard(self, message: Confirmation) -> None:
        """Keep `message` to pass on if its certificate is the newest known at its rank."""
        rank, attempt = message.frame.round, message.frame.cert_attempt
        known = [m for m in (self.relay, self.precommit) if m is not None and m.frame.round == rank]
        if all(m.frame.cert_attempt < attempt for m in known):
            self.relay = message

    def voted(self, vote: Vote) -> None:
        kept = [v for v in self.votes if v.round == vote.round and v.attempt < vote.attempt]
        self.votes = (*kept[-1:], vote)

    @classmethod
    def restored(cls, name: str, disk: Disk) -> Sent:
        """What a peer restarted from `disk` re-sends: its final tip's commit, and its proposal,
        vote and precommit of the round it was in."""
        tip = disk.tip()
        sent = cls(commit=Confirmation(tip, name) if tip.final else None)
        rank = tip.round + 1
        for vote in sorted(
            (vote for (r, _), vote in disk.votes.items() if r == rank), key=lambda v: v.attempt
        ):
            sent.voted(vote)
        record = disk.record
        if record is not None and record.rank == rank:
            sent.proposal = record.proposal
            if record.lock is not None:
                sent.precommit = Confirmation(record.lock.frame, name)
        return sent

    def at(self, rank: int) -> list[tuple[Topic, object]]:
        """What to send again while deciding `rank` (the commit is of an earlier rank)."""
        found: list[tuple[Topic, object]] = []
        if self.liveness is not None and self.liveness.round == rank:
            found.append((Topic.LIVENESS, self.liveness))
        if self.proposal is not None and self.proposal.round == rank:
            found.append((Topic.PROPOSAL, self.proposal))
        found.extend((Topic.VOTE, vote) for vote in self.votes if vote.round == rank)
        for confirmation in (self.precommit, self.relay):
            if confirmation is not None and confirmation.frame.round == rank:
                found.append((Topic.CONFIRMATION, confirmation))
        if self.commit is not None:
            found.append((Topic.CONFIRMATION, self.commit))
        return found


class SyncServers(Protocol):
    """The peers a simulated peer can ask for final frames."""

    def names(self) -> list[str]: ...

    def serve(self, server: str, start: int, limit: int) -> list[Frame]: ...


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
        servers: SyncServers,
        *,
        prove_time: float = 0.05,
        publish: Callable[[Topic, object], None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.name = name
        self.disk = disk
        self.bus = bus
        self.registry = registry
        self.servers = servers
        self.prove_time = prove_time
        self.clock = clock
        self.sent = Sent.restored(name, disk)
        self.ahead: dict[str, int] = {}
        """Per peer, the highest rank it showed it holds as final (from valid messages)."""
        self._turn = 0
        self._publish = publish or (lambda topic, payload: bus.publish(name, topic, payload))

    @property
    def provers(self) -> list[str]:
        return self.registry.provers

    # -- sync ----------------------------------------------------------------------------

    def note_ahead(self, peer: str, rank: int) -> None:
        if rank > self.ahead.get(peer, 0):
            self.ahead[peer] = rank

    async def synchronize(self, existing: Frame | None) -> Frame:
        """Ask peers for final frames, one at a time: first those known to be ahead, the
        furthest first, then the others in turn; an answer that brings nothing while a peer is
        known to be further on does not end the sync."""
        servers = [
            n for n in self.servers.names() if n != self.name and self.bus.reachable(self.name, n)
        ]
        if not servers:
            if existing is None:
                raise ProviderError("no peer reachable to synchronize from")
            return self.disk.tip()
        failures = 0
        for server in self._order(servers):
            try:
                await self._catch_up_from(server)
            except ProviderError:
                failures += 1
                continue
            if self.disk.tip().round >= max(self.ahead.values(), default=0):
                break
        if failures == len(servers):
            raise ProviderError("no peer could be synchronized from")
        return self.disk.tip()

    def _order(self, servers: list[str]) -> list[str]:
        tip = self.disk.tip().round
        known = sorted(
            (s for s in servers if self.ahead.get(s, 0) > tip), key=lambda s: -self.ahead[s]
        )
        rest = [s for s in servers if s not in known]
        self._turn += 1
        shift = self._turn % len(rest) if rest else 0
        return [*known, *rest[shift:], *rest[:shift]]

    async def _catch_up_from(self, server: str) -> None:
        """Copy the server's later frames, checking every link and commit certificate."""
        while True:
            await trio.sleep(SYNC_ROUND_TRIP)
            if not self.bus.reachable(self.name, server):
                raise ProviderError(f"{server} is unreachable")
            tip = self.disk.tip()
            frames = self.servers.serve(server, tip.round + 1, SYNC_BATCH)
            for frame in frames:
                tip = self.disk.tip()
                linked = frame.round == tip.round + 1 and frame.parent == tip.identity()
                if not (linked and frame.final and self.registry.valid(frame)):
                    raise ProviderError(f"invalid frame from {server} at rank {frame.round}")
                self.disk.keep(frame)
                self.note_ahead(server, frame.round)
            if len(frames) < SYNC_BATCH:
                return

    # -- leader and liveness -------------------------------------------------------------

    async def get_next_leaders(self, prior: Frame | None) -> list[Peer]:
        rank = (prior if prior is not None else GENESIS).round + 1
        return [Peer(name) for name in model.leader_order(self.provers, rank, self.disk.chain)]

    async def prove_next_state(self, prior: Frame | None, collected: Collected) -> Frame:
        await trio.sleep(self.prove_time)
        parent = prior if prior is not None else GENESIS
        # The timestamp makes every proving unique, as a real frame's is: a prover that proved
        # again for a rank would sign a second, different proposal.
        stamp = max(self.clock(), parent.stamp + STAMP_STEP)
        return Frame(parent.round + 1, parent.identity(), self.name, collected.identity(), stamp)

    async def collect(self) -> Collected:
        rank = self.disk.tip().round + 1
        return Collected(rank, (f"{self.name}:{rank}",))

    async def send_liveness(self, prior: Frame | None, collected: Collected) -> None:
        self.sent.liveness = collected
        self._publish(Topic.LIVENESS, collected)

    # -- voting --------------------------------------------------------------------------

    async def send_proposal(self, proposal: Frame) -> None:
        self.registry.sign(("proposal", proposal.round, 0, proposal.identity(), self.name))
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
            order = priority(model.leader_order(self.provers, rank, self.disk.chain), attempt)
            proposer = min(proposals, key=lambda p: order.index(p) if p in order else len(order))
            frame = proposals[proposer]
            if not frame.proof:  # checked only now, as a real peer checks the proof it votes for
                raise InvalidProposal(proposer, frame.identity(), "bad proof of work")
            vote = Vote(rank, attempt, frame.identity(), proposer, self.name)
            self.disk.votes[(rank, attempt)] = vote  # durable before it is published
        self.registry.sign(("vote", rank, attempt, vote.frame_id, self.name))
        self.sent.voted(vote)
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
        attempt = next(iter(proposal_votes.values())).attempt
        return frame.body().certified(attempt, by_frame[frame_id], final=False), Peer(frame.prover)

    async def send_confirmation(self, finalized: Frame) -> None:
        message = Confirmation(finalized, self.name)
        if finalized.final:
            self.sent.commit = message
        else:
            statement = ("precommit", finalized.round, finalized.cert_attempt)
            self.registry.sign((*statement, finalized.identity(), self.name))
            self.sent.precommit = message
        self._publish(Topic.CONFIRMATION, message)

    async def is_commit(self, confirmations: Mapping[str, Frame]) -> bool:
        if any(frame.final and self.registry.valid(frame) for frame in confirmations.values()):
            return True
        return self._certified(_senders_by_frame(confirmations)) is not None

    async def finalize_commit(self, confirmations: Mapping[str, Frame]) -> Frame:
        for frame in confirmations.values():
            if frame.final and self.registry.valid(frame):
                return frame
        by_frame = _senders_by_frame(confirmations)
        frame_id = self._certified(by_frame)
        if frame_id is None:
            raise ProviderError("no commit certificate")
        sample = next(f for f in confirmations.values() if f.identity() == frame_id)
        return sample.certified(sample.cert_attempt, by_frame[frame_id], final=True)

    def on_finalized(self, state: Frame) -> None:
        """Store the final frame; the latest one is re-broadcast so laggards finalize at once."""
        self.disk.keep(state)
        if state.final:
            self.sent.commit = Confirmation(state, self.name)


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
