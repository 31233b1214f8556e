"""The peer's network: gossip judged message by message, discovery, bans, sync and genesis."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from p2pnode.net.admission import Admission, Refused
from p2pnode.net.backpressure import Backpressure
from p2pnode.net.contracts import (
    DIRECT_TOPICS,
    GENESIS_PROTOCOL,
    MAX_PAYLOAD,
    Judge,
    NetConfig,
    SyncServer,
    Topic,
    Verdict,
    mesh_degrees,
    sync_protocol,
    topic_name,
)
from p2pnode.net.dialer import Dialer
from p2pnode.net.discovery import announcement, encode_record
from p2pnode.net.fixes import route_libp2p_logging
from p2pnode.net.gate import Gate
from p2pnode.net.guards import Malformed
from p2pnode.net.penalty import Limited, Penalties
from p2pnode.net.serving import Serving
from p2pnode.net.stack import Stack
from p2pnode.net.tiers import Tiers

log = logging.getLogger(__name__)

_QUEUE_POLL = 0.002
"""How often a back-pressured `publish` looks at the outbound queues again."""
_HOUSEKEEPING = 1.0
_DELIVERIES_EVERY = 60.0
_ANNOUNCE_SETTLE = 0.1
"""After a peer change, wait this long so one announcement covers a burst of connections."""


class Network:
    """A running peer; obtained from `open_network`, valid inside its context only."""

    def __init__(
        self,
        config: NetConfig,
        judge: Judge,
        sync_server: SyncServer | None,
        stack: Stack,
        tasks: trio.Nursery,
        tiers: Tiers,
    ) -> None:
        self._config = config
        self._stack = stack
        self._tasks = tasks
        self._tiers = tiers
        self._names = {topic: topic_name(config.network, topic) for topic in Topic}
        self._penalties = Penalties(config.reject_limit, config.reject_window, config.ban_period)
        self._backpressure = Backpressure(config.queue_threshold)
        self._slow: set[str] = set()
        self._closing = False
        self._peers_changed = trio.Event()
        self._new_peer_listeners: list[Callable[[str], None]] = []
        self._kick_send, self._kick_receive = trio.open_memory_channel[str](256)
        self._admission = Admission(config, tiers, self._kick)
        self._dialer = Dialer(
            config,
            stack,
            tiers,
            tasks,
            banned=self._penalties.banned,
            prover_ips=self._admission.note_prover_ips,
            changed=self._announce_soon,
        )
        self._gate = Gate(
            stack.peer_id,
            config,
            judge,
            self._dialer.directory,
            penalise=self._penalise,
            learn=self._dialer.learn,
            tiers=tiers,
        )
        self._serving = Serving(
            config,
            stack,
            sync_server,
            budget_key=lambda peer: (
                self._admission.budget_key(peer) if tiers.is_stranger(peer) else None
            ),
            refused=lambda peer: self._penalties.is_banned(peer, trio.current_time()),
            over_rate=self._gate.over_rate,
        )

    # Status

    @property
    def peer_id(self) -> str:
        return self._stack.peer_id

    @property
    def config(self) -> NetConfig:
        return self._config

    def addrs(self) -> list[str]:
        """This peer's listen multiaddrs, each with /p2p/<peer id>."""
        return self._stack.addrs()

    def peers(self) -> list[str]:
        """Connected peers."""
        return self._stack.connected()

    def on_new_peer(self, listener: Callable[[str], None]) -> None:
        """Call `listener` with the id of each peer that connects (it must not block)."""
        self._new_peer_listeners.append(listener)

    def mesh_sizes(self) -> dict[Topic, int]:
        return {topic: self._stack.mesh_size(name) for topic, name in self._names.items()}

    def counters(self) -> dict[tuple[Topic, Verdict], int]:
        """Verdicts given so far, per topic and verdict (every pair present)."""
        return dict(self._gate.counts)

    def copies(self) -> dict[tuple[Topic, bool], int]:
        """Gossip messages received from peers, by topic and whether a copy came before."""
        topics = {name: topic for topic, name in self._names.items()}
        return {
            (topics[name], duplicate): count
            for (name, duplicate), count in self._stack.pubsub.copies.items()
            if name in topics
        }

    def malformed(self) -> dict[Malformed, int]:
        """RPCs and messages dropped before judging, per reason (every reason present)."""
        return dict(self._gate.malformed)

    def known_peers(self) -> int:
        """Peers in the discovery directory (connected or not)."""
        return len(self._dialer.directory)

    def limited(self) -> dict[Limited, int]:
        """What was refused by a per-peer rate or a ban, per limit (every limit present)."""
        return dict(self._gate.limited)

    def refused(self) -> dict[Refused, int]:
        """What admission turned away or held back, per reason (every reason present)."""
        router = self._stack.router
        return {
            **self._admission.refused,
            Refused.MESH: router.grafts_refused,
            Refused.IWANT: router.iwants_refused,
        }

    def strangers(self) -> int:
        """Connected peers that are neither provers nor named."""
        return self._admission.strangers()

    def banned(self) -> list[str]:
        return self._penalties.banned(trio.current_time())

    # Gossip

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish `data` on `topic`, first waiting while a peer's outbound queue is filling.

        py-libp2p drops RPCs silently once a peer's queue holds 32, so waiting
        at `queue_threshold` turns a burst into back-pressure instead of loss. A peer whose
        queue stays full for `publish_max_wait` is logged and not waited for (see `Backpressure`).
        Publishing the same bytes again re-broadcasts them: peers that accepted them drop the
        copy as seen, peers that ignored them judge it again. Never raises for network
        trouble; with `echo` a non-ACCEPT of an own message means it is not published, as for
        anyone else's. Raises ValueError for a payload over MAX_PAYLOAD, which py-libp2p would
        drop silently.
        """
        if len(data) > MAX_PAYLOAD:
            raise ValueError(f"{len(data)}-byte payload exceeds {MAX_PAYLOAD}")
        if self._closing:
            log.debug("network closing: %s message not published", topic.value)
            return
        deadline = trio.current_time() + self._config.publish_max_wait
        while full := self._backpressure.full(self._reserved_queues(), trio.current_time()):
            if trio.current_time() >= deadline:
                log.warning("outbound queues of %s stay full: not waiting for them", full)
                self._backpressure.give_up(full, trio.current_time())
                break
            await trio.sleep(_QUEUE_POLL)
        try:
            await self._stack.publish(self._names[topic], data)
        except Exception as err:
            log.warning("publishing on %s failed: %r", topic.value, err)

    def _reserved_queues(self) -> dict[str, int]:
        """The outbound queue depths of provers and named peers: publishing waits for them
        only. A stranger that stops reading got a publish held 2 s at a time; its RPCs are
        dropped when its queue is full, and it is dropped itself (`_drop_slow_strangers`)."""
        depths = self._stack.queue_depths()
        return {peer: depth for peer, depth in depths.items() if not self._tiers.is_stranger(peer)}

    def _drop_slow_strangers(self) -> None:
        """Disconnect strangers whose outbound queue was full at two housekeepings running."""
        threshold = self._config.queue_threshold
        full = {
            peer
            for peer, depth in self._stack.queue_depths().items()
            if depth >= threshold and self._tiers.is_stranger(peer)
        }
        for peer in full & self._slow:
            self._admission.refused[Refused.SLOW] += 1
            self._kick(peer)
        self._slow = full

    def _penalise(self, peers: set[str]) -> None:
        """Charge each peer one reject; too many ban a stranger. A prover or a named peer is
        counted (the status shows it) but never refused: a version skew or a bug on either
        side must not cut the prover set apart."""
        now = trio.current_time()
        for peer in sorted(peers):
            self._admission.charge(peer)
            if not self._tiers.is_stranger(peer):
                continue
            if self._penalties.reject(peer, now):
                log.warning(
                    "banning %s for %s s: too many rejected messages",
                    peer,
                    self._config.ban_period,
                )
                self._stack.refuse(peer)
                self._kick(peer)

    def _kick(self, peer: str) -> None:
        try:
            self._kick_send.send_nowait(peer)
        except trio.WouldBlock:
            log.warning("too many disconnects pending: %s stays connected for now", peer)

    async def _enforce_bans(self) -> None:
        """Disconnect each kicked peer that is still connected, at once (closing one takes
        py-libp2p some 0.2 s: a queue of them must not wait in line)."""
        async for peer in self._kick_receive:
            if peer in self._stack.connected():
                self._tasks.start_soon(self._disconnect_kicked, peer)

    async def _disconnect_kicked(self, peer: str) -> None:
        with trio.move_on_after(self._config.dial_timeout):
            await self._disconnect_quietly(peer)

    def _on_connected(self, peer: str, ip: str | None, key: int) -> None:
        now = trio.current_time()
        if self._penalties.is_banned(peer, now):
            self._gate.over_rate(Limited.BANNED)
            self._kick(peer)
            return
        if not self._admission.connected(peer, ip, key):
            self._kick(peer)
            return
        self._dialer.directory.heard_of(peer, now)
        self._announce_soon()
        for listener in list(self._new_peer_listeners):
            listener(peer)

    def _announce_soon(self) -> None:
        """Announce within `_ANNOUNCE_SETTLE` (the event is replaced each time it fires)."""
        self._peers_changed.set()

    def _on_disconnected(self, peer: str, key: int) -> None:
        self._admission.disconnected(peer, key)

    # Discovery

    async def _announce(self) -> None:
        """Publish this peer's addresses every `announce_interval`, and soon after any change
        in the peers it knows or is connected to, so newcomers learn of it quickly. Only a
        prover announces: peers dial only addresses provers announce for themselves."""
        if self.peer_id not in self._tiers.provers:
            return
        while True:
            record = announcement(self.peer_id, self._stack.addrs())
            await self.publish(Topic.PEERS, encode_record(record))
            with trio.move_on_after(self._config.announce_interval):
                await self._peers_changed.wait()
            if self._peers_changed.is_set():
                self._peers_changed = trio.Event()
                await trio.sleep(_ANNOUNCE_SETTLE)

    async def _housekeeping(self) -> None:
        since_deliveries = 0.0
        while True:
            await trio.sleep(_HOUSEKEEPING)
            now = trio.current_time()
            for peer in self._penalties.expire(now):
                log.info("ban on %s lifted", peer)
                self._stack.admit(peer)
            for peer in self._penalties.banned(now):
                self._stack.purge(peer)
            for peer in self._stack.connected():
                self._dialer.directory.heard_of(peer, now)
                if self._penalties.is_banned(peer, now) or not self._admission.seated(peer):
                    self._kick(peer)  # a kick that could not be queued before, say
            self._drop_slow_strangers()
            self._stack.mend_streams()
            self._dialer.directory.forget_stale(now)
            self._dialer.dial_due(now)
            since_deliveries += _HOUSEKEEPING
            if since_deliveries >= _DELIVERIES_EVERY:
                since_deliveries = 0.0
                self._stack.forget_deliveries()

    # Request/response

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]:
        """Ask `peer_id`'s sync server; return its items (at most `max_response_items`).
        Raises NetError on any failure or after `timeout` seconds."""
        return await self._serving.request(peer_id, request, timeout=timeout)

    # Life cycle

    async def _start(self, drains: trio.Nursery) -> None:
        stack = self._stack
        stack.watch(
            self._on_connected,
            self._on_disconnected,
            self._config.stall_timeout,
            trusted=lambda peer: not self._tiers.is_stranger(peer),
        )
        stack.install(self._admission)
        stack.on_malformed(self._gate.malformed_from)
        stack.handle(sync_protocol(self._config.network), self._serving.serve_sync)
        stack.handle(GENESIS_PROTOCOL, self._serving.serve_genesis)
        for topic, name in self._names.items():
            # The validator goes in before the subscription: nothing arrives unjudged.
            stack.set_validator(name, functools.partial(self._gate.validate, topic))
            await stack.subscribe(name)
            drains.start_soon(stack.drain, name)
        self._tasks.start_soon(self._announce)
        self._tasks.start_soon(self._enforce_bans)
        self._tasks.start_soon(self._housekeeping)
        self._dialer.start_bootstrap()

    async def _stop(self) -> None:
        """The graceful shutdown: stop publishing, let outbound queues drain,
        unsubscribe, disconnect every peer; bounded by `shutdown_timeout`, never raising."""
        self._closing = self._dialer.closing = True
        self._tasks.cancel_scope.cancel()
        with trio.move_on_after(self._config.shutdown_timeout) as scope:
            scope.shield = True
            try:
                with trio.move_on_after(self._config.shutdown_timeout / 3):
                    while any(self._stack.queue_depths().values()):
                        await trio.sleep(_QUEUE_POLL)
                await self._stack.unsubscribe_all()
                # Closing one connection takes py-libp2p ~0.2 s: close them all at once.
                async with trio.open_nursery() as closing:
                    for peer in self._stack.connected():
                        closing.start_soon(self._disconnect_quietly, peer)
            except Exception as err:
                log.debug("error during graceful shutdown: %r", err)

    async def _disconnect_quietly(self, peer: str) -> None:
        try:
            await self._stack.disconnect(peer)
        except Exception as err:
            log.debug("disconnecting %s failed: %r", peer, err)


@asynccontextmanager
async def open_network(
    config: NetConfig, judge: Judge, sync_server: SyncServer | None = None
) -> AsyncIterator[Network]:
    """Start a peer: listen, join every topic, bootstrap and discover; shut down gracefully on
    leaving. Raises NetError if it cannot start."""
    route_libp2p_logging()
    tiers = Tiers(config.provers, config.named)
    stack = Stack(
        config.seed,
        degrees=mesh_degrees(config.expected_peers),
        heartbeat=config.heartbeat,
        dedupe_ttl=config.dedupe_ttl,
        topics=[topic_name(config.network, topic) for topic in Topic],
        peers_topic=topic_name(config.network, Topic.PEERS),
        announce=config.announce,
        tiers=tiers,
        stranger_mesh=config.stranger_mesh,
        direct_topics=[topic_name(config.network, topic) for topic in DIRECT_TOPICS],
    )
    try:
        async with stack.running(config.listen), trio.open_nursery() as drains:
            try:
                async with trio.open_nursery() as tasks:
                    network = Network(config, judge, sync_server, stack, tasks, tiers)
                    await network._start(drains)
                    try:
                        yield network
                    finally:
                        await network._stop()
            finally:
                # Unsubscribing ends the drains; this covers a shutdown that could not.
                drains.cancel_scope.cancel()
    finally:
        stack.close()
