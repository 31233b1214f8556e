"""A simulated peer: an engine, its reference providers, inbound checks, re-broadcast, crashes."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio
from trio_typing import TaskStatus

from p2pnode.consensus import EquivocationError, Limits, Receipt, StateMachine, Timeouts
from p2pnode.peer.resend import ResendClock
from p2pnode.sim.bus import Bus, Topic
from p2pnode.sim.conducts import Conduct, Misbehaviour
from p2pnode.sim.model import Collected, Confirmation, Frame, Peer, Vote
from p2pnode.sim.providers import Disk, Reference, Registry, SyncServers
from p2pnode.sim.stale import Coalition

Machine = StateMachine[Frame, Vote, Peer, Collected]

MAX_AHEAD = 30.0
"""How far (virtual seconds) a proposal's timestamp may run ahead of a peer's clock before the
peer ignores it for now (a later re-send may be taken): the real peer's bound (its chain's
MAX_CLOCK_AHEAD_MS; a test holds them equal). A tighter one left a prover whose clock runs
slow ignoring a fast prover's frames for seconds after calm."""


@dataclass
class Inbox:
    """What a peer did with what it received."""

    accepted: int = 0
    ignored: int = 0
    rejected: int = 0
    equivocations: int = 0


@dataclass(frozen=True, slots=True)
class Skew:
    """A peer's clock: `offset` seconds off, and running `rate` times as fast as real time."""

    offset: float = 0.0
    rate: float = 1.0


@dataclass
class NodeConfig:
    minimum_provers: int
    emit_on_sends: bool
    timeouts: Timeouts
    limits: Limits
    prove_time: float = 0.5
    rebroadcast: float = 2.0


class RejectedError(Exception):
    """A message no honest peer would accept: dropped and counted."""


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
    servers: SyncServers | None = None
    skew: Skew = field(default_factory=Skew)
    inbox: Inbox = field(default_factory=Inbox)
    machine: Machine | None = None
    providers: Reference | None = None
    peak_stored: int = 0
    crashes: int = 0
    coalition: Coalition | None = None
    _scope: trio.CancelScope | None = None
    _tasks: trio.Nursery | None = None
    _byzantine: Misbehaviour | None = None

    @property
    def disk(self) -> Disk:
        return self.disks[self.name]

    @property
    def honest(self) -> bool:
        return self.conduct.honest

    @property
    def prover(self) -> bool:
        return self.name in self.registry.provers

    @property
    def up(self) -> bool:
        return self._scope is not None

    def finalized_rank(self) -> int:
        return self.disk.tip().round

    def clock(self) -> float:
        """This peer's wall clock (virtual seconds, skewed)."""
        return trio.current_time() * self.skew.rate + self.skew.offset

    def _timeouts(self) -> Timeouts:
        """The configured timeouts as this peer's clock measures them."""
        base = self.config.timeouts
        scaled = {f.name: getattr(base, f.name) / self.skew.rate for f in dataclasses.fields(base)}
        return Timeouts(**scaled)

    async def start(self, nursery: trio.Nursery) -> None:
        """(Re)start the peer from its disk."""
        providers = Reference(
            self.name,
            self.disk,
            self.bus,
            self.registry,
            self.servers if self.servers is not None else _Alone(),
            prove_time=self.config.prove_time,
            publish=self._publish,
            clock=self.clock,
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
            timeouts=self._timeouts(),
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
                self._tasks = tasks
                await tasks.start(machine.run)
                self.bus.subscribe(self.name, self._receive)
                tasks.start_soon(self._rebroadcast)
                self._misbehave(tasks, machine)
                machine.start()
                task_status.started()

    def _misbehave(self, tasks: trio.Nursery, machine: Machine) -> None:
        if self.conduct is Conduct.HONEST:
            self._byzantine = None
            return
        self._byzantine = bad = Misbehaviour(
            self.name,
            self.conduct,
            self.bus,
            self.registry,
            self.rng,
            machine.round_view,
            self._later,
            chain=self.disk.chain,
            coalition=self.coalition,
        )
        if self.conduct is Conduct.SPAMMER:
            tasks.start_soon(bad.spam, 0.5, lambda: self.finalized_rank() + 1)
        if self.conduct in (Conduct.REPLAYER, Conduct.CERT_REPLAYER, Conduct.FUZZER):
            tasks.start_soon(bad.replay, 0.5)
        if self.conduct is Conduct.CERT_REPLAYER and self.coalition is not None:
            tasks.start_soon(bad.replay_stale, 0.005)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        async def run() -> None:
            await trio.sleep(delay)
            action()

        if self._tasks is not None:
            self._tasks.start_soon(run)

    def crash(self) -> None:
        """Stop at once, losing everything but the disk."""
        self.bus.unsubscribe(self.name)
        if self._scope is not None:
            self._scope.cancel()
        self._scope = None
        self._tasks = None
        self.crashes += 1

    # -- outbound ------------------------------------------------------------------------

    def _publish(self, topic: Topic, payload: object) -> None:
        if self._byzantine is not None:
            self._byzantine.publish(topic, payload)
        else:
            self.bus.publish(self.name, topic, payload)

    async def _rebroadcast(self) -> None:
        """Gossip is best effort: while the round stalls, send the latest messages again, on
        the real peer's schedule (a period after the last progress, longer for slow rounds)."""
        clock = ResendClock(self.config.rebroadcast / self.skew.rate, trio.current_time())
        if self.machine is not None:
            self.machine.add_finality_listener(_Progress(clock))
        while True:
            await trio.sleep_until(clock.due())
            self._sample()
            now = trio.current_time()
            if self.providers is None or now < clock.due():
                continue  # the rank moved on meanwhile
            clock.resent(now)
            for topic, payload in self.providers.sent.at(self.finalized_rank() + 1):
                self._publish(topic, payload)

    def serve(self, start: int, limit: int) -> list[Frame]:
        """This peer's answer to a sync request."""
        frames = self.disk.frames(start, limit)
        if self.conduct in (Conduct.SYNC_LIAR, Conduct.FUZZER) and self._byzantine is not None:
            return self._byzantine.serve(frames, start)
        return frames

    # -- inbound -------------------------------------------------------------------------

    def _receive(self, sender: str, topic: Topic, payload: object) -> None:
        machine = self.machine
        if machine is None:
            return
        try:
            accepted = self._deliver(machine, sender, topic, payload)
        except EquivocationError:
            self.inbox.equivocations += 1
            self.inbox.ignored += 1
            return
        except RejectedError:
            self.inbox.rejected += 1
            return
        if accepted:
            self.inbox.accepted += 1
        else:
            self.inbox.ignored += 1

    def _deliver(self, machine: Machine, sender: str, topic: Topic, payload: object) -> bool:
        """Check what a real peer checks (signatures are the bus's authentic senders and the
        registry), then feed the engine; False means ignored, `RejectedError` rejected."""
        match payload:
            case Collected() if topic is Topic.LIVENESS:
                self._prover(sender)
                receipt = machine.receive_liveness_check(Peer(sender), payload)
                return self._noted(sender, payload.round - 1, receipt)
            case Frame() if topic is Topic.PROPOSAL:
                return self._proposal(machine, sender, payload)
            case Vote() if topic is Topic.VOTE:
                if payload.voter != sender:
                    raise RejectedError("signer is not the sender")
                self._prover(sender)
                self._prover(payload.proposer)
                receipt = machine.receive_vote(Peer(payload.proposer), Peer(sender), payload)
                return self._noted(sender, payload.round - 1, receipt)
            case Confirmation() if topic is Topic.CONFIRMATION:
                return self._confirmation(machine, sender, payload)
        raise RejectedError("unexpected message")

    def _prover(self, name: str) -> None:
        if name not in self.registry.provers:
            raise RejectedError("not a prover")

    def _noted(self, sender: str, final_rank: int, receipt: Receipt) -> bool:
        if receipt is Receipt.NOT_A_PROVER:
            raise RejectedError("not a prover of the round")
        if receipt.stored and self.providers is not None:
            self.providers.note_ahead(sender, final_rank)
        return receipt.stored

    def _extends_tip(self, frame: Frame) -> bool:
        """Whether `frame` is for the rank being decided; RejectedError if it cannot be valid."""
        tip = self.disk.tip()
        if frame.round != tip.round + 1:
            return False  # its parent cannot be checked: ignored
        if frame.parent != tip.identity() or frame.stamp <= tip.stamp:
            raise RejectedError("does not extend the final frame")
        return True

    def _proposal(self, machine: Machine, sender: str, frame: Frame) -> bool:
        if frame.prover != sender:
            raise RejectedError("signer is not the sender")
        self._prover(sender)
        if not self._extends_tip(frame):
            return False
        if frame.stamp > self.clock() + MAX_AHEAD:
            return False  # depends on this peer's clock: ignored, never held against a relay
        return self._noted(sender, frame.round - 1, machine.receive_proposal(Peer(sender), frame))

    def _confirmation(self, machine: Machine, sender: str, message: Confirmation) -> bool:
        """A confirmation speaks for its signer, whoever relays it (`sender`)."""
        frame, signer = message.frame, message.signer
        if not self.registry.valid(frame):
            raise RejectedError("invalid certificate")
        if not frame.final:
            self._prover(signer)
            statement = ("precommit", frame.round, frame.cert_attempt, frame.identity(), signer)
            if not self.registry.signed(statement):
                raise RejectedError("bad signature")
        if self._byzantine is not None:
            self._byzantine.hear(message)
        if frame.round <= self.disk.tip().round:
            return False
        if self.providers is not None:  # a certificate shows how far its sender has come
            self.providers.note_ahead(sender, frame.round if frame.final else frame.round - 1)
        if self._extends_tip(frame):
            if frame.stamp > self.clock() + MAX_AHEAD:
                return False  # as for a proposal: the certificate vouches for all but the clock
            # Kept by frame id, beside any other frame this prover sent us.
            machine.receive_certified(Peer(frame.prover), frame.body(), frame.cert_attempt)
            if not frame.final and self.providers is not None:
                self.providers.sent.heard(message)
        receipt = machine.receive_confirmation(Peer(signer), frame, commit=frame.final)
        if receipt is Receipt.NOT_A_PROVER:
            raise RejectedError("not a prover of the round")
        return receipt.stored

    def _sample(self) -> None:
        if self.machine is not None:
            self.peak_stored = max(self.peak_stored, self.machine.stored_messages())


class _Progress:
    """Tells the re-send clock of each final frame, when it becomes final."""

    def __init__(self, clock: ResendClock) -> None:
        self._clock = clock

    def on_finalized(self, state: Frame) -> None:
        self._clock.progressed(trio.current_time())


class _Alone:
    """No sync servers: a peer on its own."""

    def names(self) -> list[str]:
        return []

    def serve(self, server: str, start: int, limit: int) -> list[Frame]:
        return []
