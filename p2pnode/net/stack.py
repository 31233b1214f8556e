"""The py-libp2p host, pubsub and gossipsub router, built and driven behind typed methods."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import cast

import multiaddr
from libp2p import new_host
from libp2p.abc import IHost, INetStream, ISubscriptionAPI
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import create_identity_from_seed
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.pubsub import pubsub as pubsub_module
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from p2pnode.net.addresses import AddressError, interface_ips, shared, why_unbound, with_peer
from p2pnode.net.admission import Admission
from p2pnode.net.contracts import (
    MAX_PAYLOAD,
    MeshDegrees,
    NetError,
    Verdict,
    networks_served,
)
from p2pnode.net.fixes import (
    ORIGIN_CACHE_SIZE,
    SUBSCRIPTION_CAPACITY,
    CachedAddrs,
    Guarded,
    StreamHandler,
    Validator,
    Watcher,
    exclusive_listeners,
    inbound_handler,
    reset_quietly,
)
from p2pnode.net.guards import GuardedPubsub, Report, content_id, message_id
from p2pnode.net.router import GuardedGossipSub
from p2pnode.net.tiers import Tiers
from p2pnode.net.yamux import credit_at_half, windows_held

log = logging.getLogger(__name__)

LIBP2P_MAX_CONNECTIONS = 4096
_MAX_RPC = 4 * MAX_PAYLOAD
"""Inbound RPC bound: py-libp2p's default is 1 MiB, while one of our messages is at most
MAX_PAYLOAD and py-libp2p sends each in its own RPC."""


def new_libp2p_host(seed: bytes | None) -> IHost:
    """TCP + Noise + Yamux; one connection per peer, which also skips the 250 ms happy-eyeballs
    wait py-libp2p's dialer adds whenever more are allowed.

    py-libp2p's own connection bound (300, of which 250 inbound, handshakes included) is
    raised out of the way: it counts everyone alike, so strangers could fill it and keep
    provers out. The network's admission bounds strangers and handshakes instead.

    Noise only: py-libp2p's default also offers TLS, SECIO and plaintext, and plaintext takes
    a peer id on the remote's word (it never asks for proof of the private key), so anyone
    could connect as a prover and be trusted as one.
    """
    key_pair = create_identity_from_seed(seed if seed is not None else secrets.token_bytes(32))
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        connection_config=ConnectionConfig(
            max_connections_per_peer=1,
            max_connections=LIBP2P_MAX_CONNECTIONS,
            high_watermark=LIBP2P_MAX_CONNECTIONS,
            # The auto-connector dials up to these on its own (it is stopped once running).
            min_connections=0,
            low_watermark=0,
        ),
    )


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


async def dial(host: IHost, addrs: Sequence[str]) -> str:
    """Connect `host` to the peer at `addrs` (full multiaddrs), and only there; return its id.
    Raises NetError for bad addresses and whatever py-libp2p raises for a failed dial."""
    info = peer_info(addrs)
    # A failed dial puts the peer in the swarm's negative cache for 60 s, during which every
    # dial fails at once: retrying with backoff would be pointless without this.
    unblock = getattr(host.get_network(), "unblock_peer", None)
    if unblock is not None:
        unblock(info.peer_id)
    # py-libp2p dials the first address per transport among all it holds for the peer, and
    # identify adds what the peer says it listens on: a wildcard /ip4/0.0.0.0 there dialled
    # this host itself, for good. Only the addresses given here are dialled.
    host.get_peerstore().clear_addrs(info.peer_id)
    await host.connect(info)
    return info.peer_id.to_base58()


async def open_stream(host: IHost, peer: str, protocol: str) -> INetStream:
    return await host.new_stream(ID.from_base58(peer), [TProtocol(protocol)])


@asynccontextmanager
async def client_host() -> AsyncIterator[IHost]:
    """A throwaway host with a random identity that dials but does not listen."""
    host = new_libp2p_host(None)
    with credit_at_half():
        async with Guarded(host.run([]), "a client host"):
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
        topics: Sequence[str],
        peers_topic: str,
        announce: Sequence[str] = (),
        tiers: Tiers | None = None,
        stranger_mesh: int = 2,
        direct_topics: Sequence[str] = (),
    ) -> None:
        tiers = tiers if tiers is not None else Tiers()
        self.host = new_libp2p_host(seed)
        # This host's own method, replaced on this instance only (see CachedAddrs).
        self.host.get_addrs = CachedAddrs(self.host.get_addrs)  # type: ignore[method-assign]
        self.peer_id = self.host.get_id().to_base58()
        try:
            self._announce = [with_peer(addr, self.peer_id) for addr in announce]
        except AddressError as err:
            raise NetError(f"cannot announce {list(announce)}: {err}") from None
        self.router = GuardedGossipSub(
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
        self.router.topics = frozenset(topics)
        self.router.direct_topics = frozenset(direct_topics)
        self.router.provers = frozenset(ID.from_base58(peer) for peer in tiers.provers)
        self.router.reserved = self.router.provers | {ID.from_base58(p) for p in tiers.named}
        self.router.stranger_places = stranger_mesh
        self.pubsub = GuardedPubsub(
            self.host,
            self.router,
            strict_signing=True,
            msg_id_constructor=message_id(peers_topic),
            seen_ttl=dedupe_ttl,
            # Subscription state is kept per peer and topic: only ours can be announced.
            allowed_topics=frozenset(topics),
            max_subscriptions_per_rpc=2 * len(topics),
            max_inbound_rpc_size=_MAX_RPC,
            # Verdicts are remembered as long as seen ids: a copy is either deduplicated or
            # judged afresh, never delivered on a stale verdict.
            verdict_ttl=dedupe_ttl,
        )
        self._peers_topic = peers_topic
        # py-libp2p seeds the seqno counter with time.time() in whole seconds, so a peer that
        # published more than one message a second reuses its old seqnos after a restart, and
        # relays that still remember them drop the new messages as "equivocation" instead of
        # forwarding them. go-libp2p seeds with Unix nanoseconds; so do we (fits in uint64).
        self.pubsub.counter = time.time_ns()
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
            stack.enter_context(credit_at_half())
            stack.enter_context(windows_held())
            stack.enter_context(exclusive_listeners())
            try:
                await stack.enter_async_context(Guarded(self.host.run(addrs), "the host"))
                self._check_listening(addrs)
                await stack.enter_async_context(
                    Guarded(background_trio_service(self.pubsub), "pubsub")
                )
                await stack.enter_async_context(
                    Guarded(background_trio_service(self.router), "gossipsub")
                )
                await self.pubsub.wait_until_ready()
                await self._stop_auto_connector()
            except NetError:
                raise
            except Exception as err:
                raise NetError(f"cannot start libp2p on {list(listen)}: {err}") from err
            yield

    def _check_listening(self, addrs: Sequence[multiaddr.Multiaddr]) -> None:
        """py-libp2p goes on without an address it could not listen on (it logs why): a peer
        must not, or it runs where nobody can reach it. NetError names the first one."""
        listening = self.host.get_network().listeners
        for addr in addrs:
            if str(addr) not in listening:
                raise NetError(f"cannot listen on {addr}: {why_unbound(str(addr))}")

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

    def watch(
        self,
        on_connected: Callable[[str, str | None, int], None],
        on_disconnected: Callable[[str, int], None],
        stall_timeout: float,
        trusted: Callable[[str], bool] = lambda _: False,
    ) -> None:
        """Call `on_connected` with each new connection's peer, remote IP and key, and
        `on_disconnected` with the peer and key of each one that ends; bound each connection's
        unacknowledged data to `stall_timeout` seconds (see `bound_unacknowledged`), and the
        rate at which its remote opens streams unless the peer is `trusted`."""
        notifee = Watcher(on_connected, on_disconnected, stall_timeout, trusted)
        self.host.get_network().register_notifee(notifee)

    def install(self, admission: Admission) -> None:
        """Inbound sockets and handshakes bounded by `admission`, each stream opened and each RPC
        read paced by it."""
        swarm = self.host.get_network()
        # The instance's own method, replaced on this instance only: the swarm calls it by
        # attribute for every inbound connection, between accepting and registering it.
        swarm.upgrade_inbound_raw_conn = admission.guard(swarm.upgrade_inbound_raw_conn)  # type: ignore[method-assign,assignment]
        gate = admission.gate(inbound_handler(swarm))
        swarm._handle_inbound_connection = gate  # type: ignore[attr-defined]
        self.pubsub.pace = admission.pace
        handler = swarm.common_stream_handler  # type: ignore[attr-defined]
        swarm.common_stream_handler = admission.paced_streams(handler)  # type: ignore[attr-defined]
        self.router.budget_key = admission.budget_key
        self.router.spend = admission.spend

    # Status

    def addrs(self) -> list[str]:
        """The multiaddrs others are told to dial, each with /p2p/<peer id>: the announced
        ones if any, else the listen ones with wildcards expanded to this host's addresses
        (read each time: the port of a /tcp/0 listener is known once listening, and the
        interfaces may change), loopback only when there is nothing else."""
        if self._announce:
            return list(self._announce)
        listening = [str(addr) for addr in self.host.get_addrs()]
        return shared(listening, self.peer_id, (), interface_ips())

    def connected(self) -> list[str]:
        return sorted(peer.to_base58() for peer in self.host.get_connected_peers())

    def networks_of(self, peer: str) -> frozenset[str] | None:
        """The p2pnode networks `peer` serves, as its identify told; None until it told."""
        try:
            protocols = self.host.get_peerstore().get_protocols(ID.from_base58(peer))
        except Exception:  # not in the peerstore (yet), or not a peer id
            return None
        return networks_served(protocols) if protocols else None

    def mend_streams(self) -> None:
        """A pubsub stream to every connected peer (see `GuardedPubsub.mend_streams`)."""
        self.pubsub.mend_streams(self.host.get_connected_peers())

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
            if len(self._origins) >= ORIGIN_CACHE_SIZE:
                self._origins.clear()
            text = self._origins[from_id] = ID(from_id).to_base58()
        return text

    def on_malformed(self, report: Report) -> None:
        """Call `report` with each peer that sends what pubsub cannot handle, and why."""
        self.pubsub.report = report
        self.router.report = report

    def set_validator(self, topic: str, validator: Validator) -> None:
        def judge(forwarder: ID, msg: rpc_pb2.Message) -> Verdict:
            return validator(forwarder.to_base58(), self.origin(msg.from_id), msg.data)

        self.pubsub.judges[topic] = judge

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

        Ids hash topic, origin and payload, so py-libp2p would drop a repeat at the author as
        seen, for the whole dedupe window, silently. Forgetting our own sighting first lets
        the repeat out; receivers that accepted it drop it as seen, those that ignored it
        judge it again. (PEERS ids include the seqno: every announcement is new anyway.)
        """
        if topic != self._peers_topic:
            seen = self.pubsub.seen_messages
            with seen.lock:
                seen.cache.pop(content_id(topic, self.host.get_id().to_bytes(), data), None)
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
