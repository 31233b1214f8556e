"""A peer: host, engine, providers, store and sync assembled from its home, and its status."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypedDict

import trio

from p2pnode.chain import vdf
from p2pnode.chain.certs import CertificateChecker
from p2pnode.chain.crypto import Keypair
from p2pnode.chain.genesis import Genesis, wall_clock_ms
from p2pnode.chain.mempool import LOCAL, Admission, Mempool, mutation_id
from p2pnode.chain.messages import Confirmation, Liveness, Message, MutationMsg, Proposal, VoteMsg
from p2pnode.chain.providers import ChainProviders
from p2pnode.chain.types import Collected, Frame, ProverId, Vote
from p2pnode.chain.validation import FrameChecker
from p2pnode.chain.warmup import Warmup
from p2pnode.consensus import StateMachine
from p2pnode.net import NetConfig, NetError, Network, Topic, Verdict, open_network
from p2pnode.peer.batches import Batcher
from p2pnode.peer.catchup import CatchUp
from p2pnode.peer.home import Home
from p2pnode.peer.inbound import Inbound
from p2pnode.peer.logsetup import LogCounter, counting
from p2pnode.peer.metrics import Metrics
from p2pnode.peer.phases import PhaseClock
from p2pnode.peer.resend import ResendClock, Resender
from p2pnode.peer.settings import NodeSettings
from p2pnode.peer.status import (
    Activity,
    CurrentRound,
    PeerStatus,
    RoundSummary,
    Verdicts,
    quantile,
    sync_state,
)
from p2pnode.peer.store import Store
from p2pnode.peer.writer import StoreError
from p2pnode.wire.codec import encode

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

Machine = StateMachine[Frame, Vote, ProverId, Collected]

TOPICS: dict[type, Topic] = {
    Liveness: Topic.LIVENESS,
    Proposal: Topic.PROPOSALS,
    VoteMsg: Topic.VOTES,
    Confirmation: Topic.CONFIRMATIONS,
    MutationMsg: Topic.MUTATIONS,
}


SUBMIT_SLICE = 128
"""Mutations of a batch submit admitted between two checkpoints (some 2.5 ms of work)."""


class NodeError(Exception):
    """The peer cannot go on; the message says why, in one line."""


class Outbox:
    """Publishes messages and asks peers for frames, once the network is up.

    A proposal, a vote or a confirmation leaves only once the store's writes made before it
    are durable (`durable`): the round record behind it (the lock, the vote given, the own
    proposal), the vote and the precommit are on disk before anyone sees them. A liveness
    announcement or a batch of mutations commits this peer to nothing it must remember, so it
    does not wait for a commit (a final frame's, say) to end.
    """

    def __init__(self, durable: Callable[[], Awaitable[None]]) -> None:
        self.network: Network | None = None
        self._durable = durable
        self.published: Counter[str] = Counter()
        """Messages handed to the network so far, by topic."""

    async def publish(self, message: Message) -> None:
        if isinstance(message, Proposal | VoteMsg | Confirmation):
            await self._durable()
        if self.network is None:
            return
        topic = TOPICS[type(message)]
        self.published[topic.value] += 1
        await self.network.publish(topic, encode(message))

    def peers(self) -> list[str]:
        return [] if self.network is None else self.network.peers()

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]:
        if self.network is None:
            raise NetError("the network is not running")
        return await self.network.request(peer_id, request, timeout=timeout)


class LogTracer:
    """The engine's trace logger, on the standard logging module; errors are kept for show."""

    def __init__(self, activity: Activity) -> None:
        self._log = logging.getLogger("p2pnode.consensus")
        self._activity = activity

    def trace(self, message: str) -> None:
        self._log.debug(message)

    def error(self, message: str, err: BaseException | None) -> None:
        self._log.warning("%s: %r", message, err)
        self._activity.error(f"{message}: {err}" if err is not None else message)


class Node:
    """One p2pnode peer. `run` serves until `stop` is called (or the engine stops)."""

    def __init__(self, home: Home, keypair: Keypair, genesis: Genesis, settings: NodeSettings):
        self.home = home
        self.keypair = keypair
        self.genesis = genesis
        self.settings = settings
        self.store = Store(home.store_file, genesis)
        trusted = {prover.identity() for prover in genesis.provers} | set(settings.named)
        self.mempool = Mempool(
            final_among=self.store.final_among,
            clock=wall_clock_ms,
            trusted=trusted.__contains__,
        )
        self.checker = FrameChecker(genesis, CertificateChecker(genesis), wall_clock_ms)
        self.outbox = Outbox(self.store.flush)
        self.batcher = Batcher(self.outbox.publish)
        provers = [prover.identity() for prover in genesis.provers]
        self.sync = CatchUp(
            self.store, self.checker, self.outbox, provers=provers, stored=self._finalized_by_sync
        )
        self.providers = ChainProviders(
            genesis,
            keypair,
            self.store,
            self.mempool,
            self.outbox,
            self.sync,
            wall_clock_ms,
            self.checker,
        )
        self.providers.restore(self.store.load())
        engine = settings.engine
        minimum = engine.minimum_provers or genesis.quorum
        if minimum > len(genesis.provers):
            raise NodeError(
                f"consensus.minimum_provers is {minimum} but the network has only "
                f"{len(genesis.provers)} provers"
            )
        self.activity = Activity()
        self.log_counts = LogCounter()
        self.machine: Machine = StateMachine(
            keypair.prover,
            self.store.tip(),
            not settings.echo,
            minimum,
            self.providers,
            self.providers,
            self.providers,
            self.providers,
            LogTracer(self.activity),
            # Whatever the genesis difficulty, proving never outlasts the waits for proposals.
            timeouts=engine.timeouts.for_proving(vdf.proving_time(genesis.difficulty)),
            limits=engine.limits,
            journal=self.store,
        )
        self.machine.add_finality_listener(self)
        self.machine.add_listener(self.activity)
        self.phases = PhaseClock()
        self.machine.add_listener(self.phases)
        self.warmup = Warmup(genesis, keypair.public, self.store.tip, self.providers.leaders)
        self.inbound = Inbound(
            genesis,
            self.machine,
            self.checker,
            self.providers.precommits,
            self.mempool,
            self.store.tip,
            wall_clock_ms,
            self.sync.ahead.note,
            self.providers.sent.heard,
            self.warmup.on_liveness,
        )
        self.network: Network | None = None
        self._stop = trio.Event()
        self._resender: Resender | None = None
        self._stop_requested = False
        self._store_failed: StoreError | None = None
        self._engine_done = trio.Event()
        self._finalized_at: float | None = None
        self._history_at: int | None = None
        self._history: tuple[tuple[RoundSummary, ...], tuple[tuple[int, str], ...]] = ((), ())
        self.metrics = Metrics(self.status)

    @property
    def role(self) -> str:
        return "prover" if self.genesis.is_prover(self.keypair.public) else "follower"

    def on_finalized(self, state: Frame) -> None:
        self.providers.on_finalized(state)
        self.phases.on_final(state.round)
        self.batcher.flush_soon()
        if self._resender is not None:
            self._resender.clock.progressed(trio.current_time())
        now = time.monotonic()
        if self._finalized_at is not None:
            self.metrics.round_duration.observe(now - self._finalized_at)
        self._finalized_at = now
        log.info("final rank %d: %s", state.round, state.identity()[:16])

    def net_config(self) -> NetConfig:
        settings = self.settings
        return NetConfig(
            network=self.genesis.network,
            seed=self.keypair.seed,
            listen=settings.listen,
            bootstrap=settings.bootstrap,
            announce=settings.announce,
            expected_peers=len(self.genesis.provers) + 1,
            provers=self.sync.provers,
            named=frozenset(settings.named),
            echo=settings.echo,
            genesis=self.genesis.to_bytes(),
        )

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the peer until `stop`; its warnings and errors are counted for its status."""
        with counting(self.log_counts):
            await self._run(task_status)

    async def _run(self, task_status: TaskStatus[None]) -> None:
        crashed = False
        clock = ResendClock(self.settings.rebroadcast, trio.current_time())
        self._resender = resender = Resender(clock, self._send_latest)
        try:
            async with open_network(self.net_config(), self.inbound, self.sync) as network:
                if not network.addrs():
                    raise NodeError(f"could not listen on {', '.join(self.settings.listen)}")
                self.network = network
                self.outbox.network = network
                network.on_new_peer(lambda peer: resender.newcomer())
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._commit_writes)
                    await nursery.start(self._engine)
                    self.machine.start()
                    if self.role == "prover":  # a follower sends nothing
                        # Gossip is best effort: from the first period on, so a restarted
                        # peer re-announces what it stored.
                        nursery.start_soon(resender.run)
                    nursery.start_soon(self.warmup.run)
                    nursery.start_soon(self.batcher.run)
                    task_status.started()
                    await self._stop.wait()
                    crashed = self._engine_done.is_set() and not self._stop_requested
                    self.machine.stop()
                    with trio.move_on_after(5):
                        await self._engine_done.wait()
                    nursery.cancel_scope.cancel()
            if self._store_failed is not None:
                raise NodeError(str(self._store_failed))
            if crashed:
                raise NodeError("the consensus engine stopped on an error; see the log")
            if not self._stop_requested:
                # Whatever ended the network without a stop is a crash, never a clean exit.
                raise NodeError("the network stopped without being asked to; see the log")
        finally:
            self.outbox.network = None
            self.network = None
            with trio.CancelScope(shield=True):
                # A proof cancelled by the stop is still unwinding in its worker thread.
                await vdf.settle()
            self.store.close()

    def stop(self) -> None:
        self._stop_requested = True
        self._stop.set()

    async def _commit_writes(self) -> None:
        """Commit the store's writes; a failed commit stops the peer, which cannot go on."""
        try:
            await self.store.run()
        except StoreError as err:
            self._store_failed = err
            self._stop.set()

    async def _engine(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine; when it stops by itself (a provider crashed), the node stops too."""
        try:
            await self.machine.run(task_status=task_status)
        finally:
            self._engine_done.set()
            self._stop.set()

    async def _send_latest(self) -> None:
        """This peer's messages for the rank being decided, again; and a probe whether the
        others have finalized it already."""
        for message in self.providers.sent.at(self.store.tip().round + 1):
            await self.outbox.publish(message)
        for final in await self.sync.probe():
            # Each one's commit certificate is checked: the engine finalizes the rank being
            # decided, and syncs on seeing a later one final.
            self.machine.receive_confirmation(ProverId(final.prover), final, commit=True)

    def _finalized_by_sync(self, frames: Sequence[Frame]) -> None:
        """A lagging peer's pool held every mutation the others finalized meanwhile until it
        expired (5,000 in one soak), each in the way of a frame's collection."""
        for frame in frames:
            self.mempool.finalized(frame.mutations)

    async def submit(self, data: bytes) -> tuple[str, Admission]:
        """Add a mutation to the pool, to be gossiped with the next batch; returns its id."""
        return (await self.submit_many([data]))[0]

    async def submit_many(self, mutations: Sequence[bytes]) -> list[tuple[str, Admission]]:
        """Add mutations to the pool, to be gossiped in batches; each one's id and admission.

        In slices of SUBMIT_SLICE, the event loop running between them: a whole batch of
        10,000 (a store lookup each) held it for some 200 ms.
        """
        results = []
        for start in range(0, len(mutations), SUBMIT_SLICE):
            if start:
                await trio.sleep(0)
            piece = mutations[start : start + SUBMIT_SLICE]
            for data, admitted in zip(piece, self.mempool.add_many(piece, LOCAL), strict=True):
                if admitted is Admission.ADDED:
                    self.batcher.add(data)
                results.append((mutation_id(data).hex(), admitted))
        return results

    def status(self) -> PeerStatus:
        network, tip = self.network, self.store.tip()
        since = None if self._finalized_at is None else time.monotonic() - self._finalized_at
        best = max(self.sync.best_peer_rank, self.inbound.best_rank, tip.round)
        votes_for = {v: vote.frame.hex() for v, vote in self.machine.current_votes().items()}
        rounds, recent = self._recent_history()
        return PeerStatus(
            peer_id=self.keypair.prover.identity(),
            name=self.settings.name or self.home.path.name,
            network=self.genesis.network,
            role=self.role,
            state=str(self.machine.get_state()),
            state_time=round(self.machine.get_state_time(), 3),
            finalized_rank=tip.round,
            finalized_id=tip.identity(),
            best_peer_rank=best,
            sync=sync_state(tip.round, best, since),
            since_finalized=since,
            mempool=len(self.mempool),
            transitions=self.machine.get_transition_count(),
            hop_latency_ms=quantile(self.inbound.hop_delays, 0.5),
            hop_latency_p99_ms=quantile(self.inbound.hop_delays, 0.99),
            provers=tuple(p.identity() for p in self.genesis.provers),
            recent_rounds=rounds,
            transition_log=tuple(self.activity.transitions),
            errors=tuple(self.activity.errors),
            round=CurrentRound.of(self.machine.round_view(), votes_for, self.genesis.quorum),
            recent=recent,
            sync_rejected=self.sync.rejected,
            rejected=tuple(
                (f"{t.value}: {why}", n) for (t, why), n in self.inbound.reasons.items()
            ),
            work=self._work(),
            log_warnings=self.log_counts.warnings,
            log_errors=self.log_counts.errors,
            last_log_error=self.log_counts.last_error,
            **_network_status(network),
        )

    def _work(self) -> tuple[tuple[str, int], ...]:
        writes = self.store.writes
        resends = {} if self._resender is None else self._resender.resends
        return (
            ("store_commits", writes.commits),
            ("store_blocking_us", int(writes.blocking_seconds * 1e6)),
            *((f"published_{kind}", count) for kind, count in self.outbox.published.items()),
            *((f"resent_{cause}", count) for cause, count in resends.items()),
            *(() if self.network is None else self._copies(self.network)),
        )

    @staticmethod
    def _copies(network: Network) -> tuple[tuple[str, int], ...]:
        """Copies received in all, new and duplicate, then the duplicates per topic."""
        copies = network.copies()
        new = sum(n for (_, duplicate), n in copies.items() if not duplicate)
        per_topic = {topic.value: n for (topic, duplicate), n in copies.items() if duplicate}
        return (
            ("copies_new", new),
            ("copies_duplicate", sum(per_topic.values())),
            *((f"duplicate_{topic}", n) for topic, n in sorted(per_topic.items())),
        )

    def _recent_history(
        self,
    ) -> tuple[tuple[RoundSummary, ...], tuple[tuple[int, str], ...]]:
        """The last 16 final frames summarised and the last 64 as (rank, id), newest first:
        read and decoded again only when the tip moves (dashboards ask several times a second)."""
        tip = self.store.tip().round
        if self._history_at != tip:
            self._history = (tuple(self._summaries(16)), tuple(self.store.recent(64)))
            self._history_at = tip
        return self._history

    def _summaries(self, count: int) -> list[RoundSummary]:
        tip = self.store.tip().round
        oldest = max(1, tip - count + 1)
        by_rank = {frame.round: frame for frame in self.store.frames(oldest - 1, count + 1)}
        by_rank[0] = self.genesis.frame()
        summaries = []
        for rank in range(tip, oldest - 1, -1):
            frame, parent = by_rank[rank], by_rank.get(rank - 1)
            certificate = frame.certificate
            summaries.append(
                RoundSummary(
                    rank=rank,
                    frame_id=frame.identity(),
                    prover=ProverId(frame.prover).identity(),
                    mutations=len(frame.mutations),
                    signers=0 if certificate is None else len(certificate.signers),
                    attempt=frame.attempt,
                    duration_ms=0 if parent is None else frame.timestamp - parent.timestamp,
                    phases=self.phases.of(rank),
                )
            )
        return summaries


_VERDICTS = (Verdict.ACCEPT, Verdict.IGNORE, Verdict.REJECT)
"""In the order of `Verdicts`' fields."""


class _NetworkStatus(TypedDict):
    peers: tuple[str, ...]
    mesh: tuple[tuple[str, int], ...]
    counters: tuple[Verdicts, ...]
    malformed: tuple[tuple[str, int], ...]
    banned: tuple[str, ...]
    limited: tuple[tuple[str, int], ...]
    addrs: tuple[str, ...]


def _network_status(network: Network | None) -> _NetworkStatus:
    """The status fields the running network fills in (empty while it is not running)."""
    if network is None:
        return _NetworkStatus(
            peers=(), mesh=(), counters=(), malformed=(), banned=(), limited=(), addrs=()
        )
    counts = network.counters()
    return _NetworkStatus(
        peers=tuple(network.peers()),
        mesh=tuple((t.value, n) for t, n in network.mesh_sizes().items()),
        counters=tuple(
            Verdicts(topic.value, *(counts.get((topic, v), 0) for v in _VERDICTS))
            for topic in sorted({topic for topic, _ in counts}, key=lambda t: t.value)
        ),
        malformed=tuple((why.value, n) for why, n in network.malformed().items() if n),
        banned=tuple(network.banned()),
        limited=tuple(
            (why.value, n)
            for why, n in [*network.limited().items(), *network.refused().items()]
            if n
        ),
        addrs=tuple(network.addrs()),
    )
