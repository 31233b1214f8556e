"""A simulated peer: an engine, its reference providers, inbound checks, re-broadcast, crashes."""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import trio
from trio_typing import TaskStatus

from p2pnode.consensus import EquivocationError, Limits, StateMachine, Timeouts
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.model import Collected, Frame, Peer, Vote
from p2pnode.sim.providers import Disk, Reference, Registry

Machine = StateMachine[Frame, Vote, Peer, Collected]


class Conduct(enum.Enum):
    """How a simulated prover behaves."""

    HONEST = "honest"
    EQUIVOCATING_PROPOSER = "equivocating_proposer"
    """Sends different frames to different peers."""
    DOUBLE_VOTER = "double_voter"
    """Votes for two different frames in every attempt."""
    SPAMMER = "spammer"
    """Honest, but also floods far-future ranks and messages in a non-prover's name."""


@dataclass
class Inbox:
    """What a peer did with what it received."""

    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    equivocations: int = 0


@dataclass
class NodeConfig:
    minimum_provers: int
    emit_on_sends: bool
    timeouts: Timeouts
    limits: Limits
    prove_time: float = 0.5
    rebroadcast: float = 1.0


@dataclass
class SimNode:
    """One simulated peer. Its disk survives crashes; everything else is rebuilt on restart."""

    name: str
    conduct: Conduct
    bus: Bus
    registry: Registry
    disks: Mapping[str, Disk]
    config: NodeConfig
    rng: random.Random
    inbox: Inbox = field(default_factory=Inbox)
    machine: Machine | None = None
    providers: Reference | None = None
    peak_stored: int = 0
    crashes: int = 0
    _scope: trio.CancelScope | None = None

    @property
    def disk(self) -> Disk:
        return self.disks[self.name]

    @property
    def honest(self) -> bool:
        return self.conduct in (Conduct.HONEST, Conduct.SPAMMER)

    @property
    def up(self) -> bool:
        return self._scope is not None

    def finalized_rank(self) -> int:
        return self.disk.tip().round

    async def start(self, nursery: trio.Nursery) -> None:
        """(Re)start the peer from its disk."""
        providers = Reference(
            self.name,
            self.disk,
            self.bus,
            self.registry,
            self.disks,
            prove_time=self.config.prove_time,
            publish=self._publish,
        )
        machine: Machine = StateMachine(
            Peer(self.name),
            self.disk.tip(),
            self.config.emit_on_sends,
            self.config.minimum_provers,
            providers,
            providers,
            providers,
            providers,
            timeouts=self.config.timeouts,
            limits=self.config.limits,
            journal=self.disk,
        )
        machine.add_finality_listener(providers)
        self.machine, self.providers = machine, providers
        self._scope = scope = trio.CancelScope()
        await nursery.start(self._live, machine, scope)

    async def _live(
        self, machine: Machine, scope: trio.CancelScope, task_status: TaskStatus[None]
    ) -> None:
        with scope:
            async with trio.open_nursery() as tasks:
                await tasks.start(machine.run)
                self.bus.subscribe(self.name, self._receive)
                tasks.start_soon(self._rebroadcast)
                if self.conduct is Conduct.SPAMMER:
                    tasks.start_soon(self._spam)
                machine.start()
                task_status.started()

    def crash(self) -> None:
        """Stop at once, losing everything but the disk."""
        self.bus.unsubscribe(self.name)
        if self._scope is not None:
            self._scope.cancel()
        self._scope = None
        self.crashes += 1

    # -- outbound ------------------------------------------------------------------------

    def _publish(self, topic: Topic, payload: object) -> None:
        peers = [p for p in self.bus.peers() if p != self.name]
        half = set(self.rng.sample(peers, len(peers) // 2))
        rest = set(self.bus.peers()) - half
        equivocating = self.conduct is Conduct.EQUIVOCATING_PROPOSER
        if equivocating and isinstance(payload, Frame) and topic is Topic.PROPOSAL:
            twin = replace(payload, payload=payload.payload + "'")
            self.bus.publish(self.name, topic, payload, to=rest)
            self.bus.publish(self.name, topic, twin, to=half)
            return
        if self.conduct is Conduct.DOUBLE_VOTER and isinstance(payload, Vote):
            twin_vote = replace(payload, frame_id="0" * 16, proposer=self.name)
            self.registry.sign(("vote", twin_vote.round, twin_vote.attempt_no, "0" * 16, self.name))
            self.bus.publish(self.name, topic, payload, to=rest)
            self.bus.publish(self.name, topic, twin_vote, to=half)
            return
        self.bus.publish(self.name, topic, payload)

    async def _rebroadcast(self) -> None:
        """Gossip is best effort: while the round stalls, send the latest messages again."""
        last = -1
        while True:
            await trio.sleep(self.config.rebroadcast)
            rank = self.finalized_rank()
            self._sample()
            if rank != last or self.providers is None:
                last = rank
                continue
            sent, target = self.providers.sent, rank + 1
            if sent.liveness is not None and sent.liveness.round == target:
                self._publish(Topic.LIVENESS, sent.liveness)
            if sent.proposal is not None and sent.proposal.round == target:
                self._publish(Topic.PROPOSAL, sent.proposal)
            if sent.vote is not None and sent.vote.round == target:
                self._publish(Topic.VOTE, sent.vote)
            if sent.confirmation is not None:
                self._publish(Topic.CONFIRMATION, sent.confirmation)

    async def _spam(self) -> None:
        """Far-future ranks in our name, and a non-prover's messages for the current rank."""
        while True:
            await trio.sleep(0.5)
            target = self.finalized_rank() + 1
            far = Collected(target + 1000)
            self.bus.publish(self.name, Topic.LIVENESS, far)
            self.bus.publish(self.name, Topic.PROPOSAL, Frame(target + 1000, "x", self.name, "x"))
            intruder = f"intruder-{self.name}"
            self.bus.publish(intruder, Topic.LIVENESS, Collected(target))
            self.bus.publish(intruder, Topic.PROPOSAL, Frame(target, "x", intruder, "x"))
            vote = Vote(target, 0, "f" * 16, intruder, intruder)
            self.bus.publish(intruder, Topic.VOTE, vote)

    # -- inbound -------------------------------------------------------------------------

    def _receive(self, sender: str, topic: Topic, payload: object) -> None:
        machine = self.machine
        if machine is None:
            return
        try:
            accepted = self._deliver(machine, sender, topic, payload)
        except EquivocationError:
            self.inbox.equivocations += 1
            self.inbox.rejected += 1
            return
        if accepted is None:
            self.inbox.rejected += 1
        elif accepted:
            self.inbox.accepted += 1
        else:
            self.inbox.ignored += 1

    def _deliver(self, machine: Machine, sender: str, topic: Topic, payload: object) -> bool | None:
        """Check what a signature would prove, then feed the engine; None means rejected."""
        peer = Peer(sender)
        if isinstance(payload, Collected) and topic is Topic.LIVENESS:
            return machine.receive_liveness_check(peer, payload).stored
        if isinstance(payload, Frame) and topic is Topic.PROPOSAL:
            if payload.prover != sender:
                return None
            return machine.receive_proposal(peer, payload.body()).stored
        if isinstance(payload, Vote) and topic is Topic.VOTE:
            if payload.voter != sender:
                return None
            return machine.receive_vote(Peer(payload.proposer), peer, payload).stored
        if isinstance(payload, Frame) and topic is Topic.CONFIRMATION:
            if not self.registry.valid(payload):
                return None
            machine.receive_proposal(Peer(payload.prover), payload.body(), certified=True)
            return machine.receive_confirmation(peer, payload).stored
        return None

    def _sample(self) -> None:
        if self.machine is not None:
            self.peak_stored = max(self.peak_stored, self.machine.stored_messages())
