"""The py-libp2p host, pubsub and gossipsub router, built and driven behind typed methods."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, cast

import multiaddr
import trio
from google.protobuf.message import DecodeError
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee, ISubscriptionAPI
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection import swarm_connection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub, ValidationCache, ValidationResult
from libp2p.tools.anyio_service import background_trio_service

from p2pnode.net.contracts import MeshDegrees, NetError, Verdict

log = logging.getLogger(__name__)

SUBSCRIPTION_CAPACITY = 1024
"""py-libp2p gives each subscription a 32-slot channel and drops on overflow; a
burst of relayed messages lands in one scheduler batch before the drain task runs."""

_ORIGIN_CACHE_SIZE = 4096

Validator = Callable[[str, str, bytes], Verdict]
"""(forwarder, origin, data) -> the verdict; only ACCEPT lets libp2p deliver and forward."""
StreamHandler = Callable[[str, INetStream], Awaitable[None]]
"""(remote peer id, stream); may raise, the stack resets the stream and logs."""


def harden_rpc_reader() -> None:
    """Make a peer that sends bytes that are not an RPC cost its stream, not our process.

    py-libp2p's pubsub reader handles oversized RPCs but lets protobuf's DecodeError escape,
    which ends the swarm's connection task with an error and takes the whole host down: one
    malformed RPC from anyone would stop a peer. Idempotent.
    """
    original = Pubsub.continuously_read_stream
    if getattr(original, "_p2pnode_hardened", False):
        return

    async def read_guarded(self: Pubsub, stream: INetStream) -> None:
        try:
            await original(self, stream)
        except DecodeError:
            peer = stream.muxed_conn.peer_id
            log.warning("undecodable pubsub RPC from %s: dropping its stream", peer)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer)

    read_guarded._p2pnode_hardened = True  # type: ignore[attr-defined]
    Pubsub.continuously_read_stream = read_guarded  # type: ignore[method-assign]


def route_libp2p_logging() -> None:
    """Send py-libp2p's records to `p2pnode.net.libp2p` instead of Python's last-resort stderr
    handler, so the application's logging configuration decides what is shown (idempotent).
    py-libp2p sets its `libp2p` logger to WARNING when imported; lower that logger to see more.
    """
    # swarm_connection.py logs through the root functions (`logging.debug(...)`), and the first
    # such call in a process without logging configured runs `logging.basicConfig()`: a stderr
    # handler on the application's root logger, printing every WARNING from then on. It only
    # calls debug and warning, which a named Logger has too.
    if vars(swarm_connection).get("logging") is logging:
        vars(swarm_connection)["logging"] = logging.getLogger(swarm_connection.__name__)
    source = logging.getLogger("libp2p")
    if not any(isinstance(h, _Forward) for h in source.handlers):
        source.addHandler(_Forward())
        source.propagate = False
    # A library never prints on its own: without this, p2pnode.net records would reach the
    # last-resort handler too when the application configured no logging at all.
    target = logging.getLogger("p2pnode.net")
    if not any(isinstance(h, logging.NullHandler) for h in target.handlers):
        target.addHandler(logging.NullHandler())


class _Forward(logging.Handler):
    _target = logging.getLogger("p2pnode.net.libp2p")

    def emit(self, record: logging.LogRecord) -> None:
        if self._target.isEnabledFor(record.levelno):
            # A copy: other handlers on the libp2p logger may hold the original.
            copy = logging.makeLogRecord(record.__dict__)
            copy.name = f"p2pnode.net.{record.name}"
            self._target.handle(copy)


def message_id_function(peers_topic: str) -> Callable[[rpc_pb2.Message], bytes]:
    """Content-addressed ids: the raw sha256 of the payload.

    libp2p's `get_content_addressed_msg_id` multibase-encodes the digest (base58, pure Python
    big-integer work) and pubsub computes the id several times per message, so hash it raw.
    Discovery announcements repeat the same bytes on purpose; with a payload-only id they would
    be dropped as seen for the whole dedupe window, so their id also covers signer and seqno.
    """

    def message_id(msg: rpc_pb2.Message) -> bytes:
        if peers_topic in msg.topicIDs:
            return hashlib.sha256(msg.from_id + msg.seqno + msg.data).digest()
        return hashlib.sha256(msg.data).digest()

    return message_id


def new_libp2p_host(seed: bytes | None) -> IHost:
    """TCP + Noise + Yamux; one connection per peer, which also skips the 250 ms happy-eyeballs
    wait py-libp2p's dialer adds whenever more are allowed."""
    key_pair = create_identity_from_seed(seed if seed is not None else secrets.token_bytes(32))
    return new_host(
        key_pair=key_pair,
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1),
    )


class _Guarded:
    """Leaves a libp2p context without letting py-libp2p's own failures escape.

    py-libp2p can fail while tearing down with RPCs in flight (`Nursery is closed to new
    arrivals`): such failures are logged, while the body's own exception and trio
    cancellations still propagate. A failure that cancelled the body (a py-libp2p service
    crashed while the peer was running) becomes a NetError: the caller must learn that its
    network died, just not from inside py-libp2p.
    """

    def __init__(self, inner: AbstractAsyncContextManager[Any], what: str) -> None:
        self._inner = inner
        self._what = what

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool:
        try:
            return bool(await self._inner.__aexit__(kind, error, trace))
        except BaseException as failure:
            if failure is error:
                raise
            keep, noise = _separate(failure, error)
            if keep is None:
                if isinstance(error, trio.Cancelled):
                    # The service's nursery cancelled the body and consumed that Cancelled.
                    raise NetError(f"{self._what} stopped: {failure!r}") from failure
                log.debug("suppressed an error leaving %s", self._what, exc_info=noise)
                return error is None
            if noise is not None:
                log.debug("suppressed an error leaving %s", self._what, exc_info=noise)
            if _leaves(keep) == [error]:
                return False
            raise keep from None


def _separate(
    failure: BaseException, error: BaseException | None
) -> tuple[BaseException | None, BaseException | None]:
    """Split a teardown failure into what must propagate (the body's own error, cancellations
    and other BaseExceptions) and py-libp2p's own Exceptions."""

    def keep(leaf: BaseException) -> bool:
        return leaf is error or not isinstance(leaf, Exception)

    if isinstance(failure, BaseExceptionGroup):
        return failure.split(lambda e: not isinstance(e, BaseExceptionGroup) and keep(e))
    return (failure, None) if keep(failure) else (None, failure)


def _leaves(failure: BaseException) -> list[BaseException]:
    if isinstance(failure, BaseExceptionGroup):
        return [leaf for inner in failure.exceptions for leaf in _leaves(inner)]
    return [failure]


class _Verdicts(ValidationCache):
    """py-libp2p's per-message-id cache of validation results, minus IGNORE verdicts.

    py-libp2p caches failures like successes, so a message once ignored (say a vote too far
    ahead) would be dropped unjudged for the whole TTL, even re-broadcast after this peer
    caught up. REJECT stays cached: garbage does not become valid.
    """

    def __init__(self, ttl: int) -> None:
        super().__init__(ttl=ttl)
        self.transient: bytes | None = None

    def put(self, msg_id: bytes, result: ValidationResult) -> None:
        # The validator flags the id right before py-libp2p records its failure, with no
        # checkpoint between the two: the flag always names the failure being recorded.
        if not result.is_valid and msg_id == self.transient:
            self.transient = None
            return
        super().put(msg_id, result)


class _Watcher(INotifee):
    def __init__(self, on_connected: Callable[[str], None]) -> None:
        self._on_connected = on_connected

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        # Called inline by the swarm while it registers the connection: never block here.
        self._on_connected(conn.muxed_conn.peer_id.to_base58())
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


def peer_info(addrs: Sequence[str]) -> PeerInfo:
    """One peer's PeerInfo from its full multiaddrs (each with /p2p/<id>)."""
    if not addrs:
        raise NetError("no address to dial")
    try:
        infos = [info_from_p2p_addr(multiaddr.Multiaddr(addr)) for addr in addrs]
    except Exception as err:
        raise NetError(f"bad multiaddr in {list(addrs)}: {err}") from None
    if len({info.peer_id for info in infos}) != 1:
        raise NetError(f"addresses of different peers: {list(addrs)}")
    return PeerInfo(infos[0].peer_id, [addr for info in infos for addr in info.addrs])


async def reset_quietly(stream: INetStream) -> None:
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.reset()
        except Exception:
            log.debug("stream reset failed", exc_info=True)


async def dial(host: IHost, addrs: Sequence[str]) -> str:
    """Connect `host` to the peer at `addrs` (full multiaddrs); return its id. Raises NetError
    for bad addresses and whatever py-libp2p raises for a failed dial."""
    info = peer_info(addrs)
    # A failed dial puts the peer in the swarm's negative cache for 60 s, during which every
    # dial fails at once: retrying with backoff would be pointless without this.
    unblock = getattr(host.get_network(), "unblock_peer", None)
    if unblock is not None:
        unblock(info.peer_id)
    await host.connect(info)
    return info.peer_id.to_base58()


async def open_stream(host: IHost, peer: str, protocol: str) -> INetStream:
    return await host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])


@asynccontextmanager
async def client_host() -> AsyncIterator[IHost]:
    """A throwaway host with a random identity that dials but does not listen."""
    host = new_libp2p_host(None)
    async with _Guarded(host.run([]), "a client host"):
        yield host


class Stack:
    """One peer's libp2p objects: the host, pubsub and a GossipSub router."""

    def __init__(
        self,
        seed: bytes,
        *,
        degrees: MeshDegrees,
        heartbeat: float,
        dedupe_ttl: int,
        peers_topic: str,
    ) -> None:
        self.host = new_libp2p_host(seed)
        self.router = GossipSub(
            # v1.2 sends an IDONTWANT per message to every mesh peer, small ones too, halving
            # throughput; consensus messages are small, so v1.1 then v1.0.
            protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
            degree=degrees.target,
            degree_low=degrees.low,
            degree_high=degrees.high,
            # libp2p annotates int but only sleeps on it; its default is 120 s.
            heartbeat_interval=cast(int, heartbeat),
            # Adaptive gossip stretches the heartbeat to 30-60 s on a healthy idle mesh (§4-B),
            # spam protection drops above 10 msg/s per forwarder and topic, own messages
            # included (§4-C), and eclipse protection wants 3 distinct IPs, which a prover set
            # on one host or behind one NAT never has.
            adaptive_gossip_enabled=False,
            spam_protection_enabled=False,
            eclipse_protection_enabled=False,
            # Heartbeat PRUNEs carry no peer exchange in py-libp2p (§4-H): nothing to gain.
            do_px=False,
        )
        self.pubsub = Pubsub(
            self.host,
            self.router,
            strict_signing=True,
            msg_id_constructor=message_id_function(peers_topic),
            seen_ttl=dedupe_ttl,
        )
        # Verdicts are cached by message id; the same lifetime as the seen cache means a copy
        # is either deduplicated or judged afresh, never delivered on a stale verdict.
        self._verdicts = _Verdicts(dedupe_ttl)
        self.pubsub.validation_cache = self._verdicts
        self._peers_topic = peers_topic
        # py-libp2p seeds the seqno counter with time.time() in whole seconds, so a peer that
        # published more than one message a second reuses its old seqnos after a restart, and
        # relays that still remember them drop the new messages as "equivocation" instead of
        # forwarding them. go-libp2p seeds with Unix nanoseconds; so do we (fits in uint64).
        self.pubsub.counter = time.time_ns()
        self.peer_id = self.host.get_id().to_base58()
        self._origins: dict[bytes, str] = {}
        self._subscriptions: dict[str, ISubscriptionAPI] = {}

    @asynccontextmanager
    async def running(self, listen: Sequence[str]) -> AsyncIterator[None]:
        """Listen and run pubsub and the router; leaving never raises from libp2p internals."""
        try:
            addrs = [multiaddr.Multiaddr(addr) for addr in listen]
        except Exception as err:
            raise NetError(f"bad listen multiaddr in {list(listen)}: {err}") from None
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(_Guarded(self.host.run(addrs), "the host"))
                await stack.enter_async_context(
                    _Guarded(background_trio_service(self.pubsub), "pubsub")
                )
                await stack.enter_async_context(
                    _Guarded(background_trio_service(self.router), "gossipsub")
                )
                await self.pubsub.wait_until_ready()
                await self._stop_auto_connector()
            except Exception as err:
                raise NetError(f"cannot start libp2p on {list(listen)}: {err}") from err
            yield

    async def _stop_auto_connector(self) -> None:
        """py-libp2p's swarm runs an AutoConnector that, below its default watermarks (100 to
        200 connections), dials every peerstore entry it is not connected to: for a prover set
        that is always, so it keeps redialling peers that left and peers we banned. Bootstrap
        and discovery manage connections here, so it is stopped (its own public `stop`)."""
        connector = getattr(self.host.get_network(), "auto_connector", None)
        if connector is not None:
            await connector.stop()

    @staticmethod
    def peer_of(addr: str) -> str:
        """The peer id in a full multiaddr. Raises NetError."""
        return peer_info([addr]).peer_id.to_base58()

    def watch(self, on_connected: Callable[[str], None]) -> None:
        self.host.get_network().register_notifee(_Watcher(on_connected))

    # Status

    def addrs(self) -> list[str]:
        return [str(addr) for addr in self.host.get_addrs()]

    def connected(self) -> list[str]:
        return sorted(peer.to_base58() for peer in self.host.get_connected_peers())

    def mesh_size(self, topic: str) -> int:
        """Mesh members we can actually send to (registered pubsub peers); see `refuse`."""
        return len(self.router.mesh.get(topic, set()) & self.pubsub.peers.keys())

    def queue_depths(self) -> dict[str, int]:
        """Each peer's outbound RPC queue length; py-libp2p drops RPCs once one holds 32."""
        return {peer.to_base58(): len(queue) for peer, queue in self.pubsub.peer_queues.items()}

    # Connections

    async def connect(self, addrs: Sequence[str]) -> str:
        """Connect to the peer at `addrs` (full multiaddrs); return its id. Raises on failure."""
        return await dial(self.host, addrs)

    async def disconnect(self, peer: str) -> None:
        await self.host.disconnect(ID.from_base58(peer))

    def refuse(self, peer: str) -> None:
        """Drop everything `peer` authors or forwards and never open pubsub to it again.

        Not `Pubsub.add_to_blacklist`: it deletes the peer's pubsub stream without telling the
        router or closing the outbound queue, so the peer stays in the mesh for ever. Adding to
        the set and disconnecting lets the normal dead-peer path clean up. The blacklist does
        not cover control messages, though: a refused peer's GRAFT still lands it in our mesh,
        and the dead-peer path skips unregistered peers, hence `purge`.
        """
        self.pubsub.blacklisted_peers.add(ID.from_base58(peer))
        self.purge(peer)

    def purge(self, peer: str) -> None:
        """Take a refused peer out of the router's mesh and fanout."""
        peer_id = ID.from_base58(peer)
        for members in (*self.router.mesh.values(), *self.router.fanout.values()):
            members.discard(peer_id)

    def admit(self, peer: str) -> None:
        self.pubsub.blacklisted_peers.discard(ID.from_base58(peer))

    # Gossip

    def origin(self, from_id: bytes) -> str:
        text = self._origins.get(from_id)
        if text is None:
            if len(self._origins) >= _ORIGIN_CACHE_SIZE:
                self._origins.clear()
            text = self._origins[from_id] = ID(from_id).to_base58()
        return text

    def set_validator(self, topic: str, validator: Validator) -> None:
        def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
            verdict = validator(forwarder.to_base58(), self.origin(msg.from_id), msg.data)
            if verdict is Verdict.IGNORE:
                self._verdicts.transient = self.pubsub.get_message_id(msg)
            return verdict is Verdict.ACCEPT

        self.pubsub.set_topic_validator(topic, validate, False)

    async def subscribe(self, topic: str) -> None:
        # Read by `subscribe` at call time (a module global, process-wide).
        capacity = max(pubsub_module.SUBSCRIPTION_CHANNEL_SIZE, SUBSCRIPTION_CAPACITY)
        pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = capacity
        self._subscriptions[topic] = await self.pubsub.subscribe(topic)

    async def drain(self, topic: str) -> None:
        """Empty a subscription's channel until unsubscribed. Messages were judged by the
        validator already; delivery here is only py-libp2p's copy, discarded."""
        async for _ in self._subscriptions[topic]:
            pass

    async def unsubscribe_all(self) -> None:
        for topic in list(self._subscriptions):
            await self.pubsub.unsubscribe(topic)
        self._subscriptions.clear()

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish; publishing the same bytes again re-broadcasts them.

        Ids are payload hashes, so py-libp2p would drop a repeat at the author as already
        seen, for the whole dedupe window, silently. Forgetting our own sighting first lets
        the repeat out; receivers that accepted it drop it as seen, those that ignored it
        judge it again. (PEERS ids include the seqno: every announcement is new anyway.)
        """
        if topic != self._peers_topic:
            seen = self.pubsub.seen_messages
            with seen.lock:
                seen.cache.pop(hashlib.sha256(data).digest(), None)
        await self.pubsub.publish(topic, data)

    def close(self) -> None:
        """Stop the seen cache's sweeper: py-libp2p starts a thread per Pubsub and never stops
        it, so every closed peer would leave one behind."""
        self.pubsub.seen_messages.stop()

    def forget_deliveries(self) -> None:
        """Only adaptive gossip prunes this per-message list; it is off, so it grows without
        bound."""
        self.router.recent_message_deliveries.clear()

    # Streams

    def handle(self, protocol: str, handler: StreamHandler) -> None:
        async def on_stream(stream: INetStream) -> None:
            try:
                await handler(stream.muxed_conn.peer_id.to_base58(), stream)
            except Exception as err:
                # An exception escaping a stream handler would take py-libp2p's swarm down.
                log.debug("%s handler failed: %s", protocol, err)
                await reset_quietly(stream)

        self.host.set_stream_handler(TProtocol(protocol), on_stream)

    async def open_stream(self, peer: str, protocol: str) -> INetStream:
        return await open_stream(self.host, peer, protocol)
