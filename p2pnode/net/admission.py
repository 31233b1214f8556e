"""Who gets in and how much they get: inbound handshakes, strangers' connections and their work.

Provers and named peers are never refused, displaced or paced here. Strangers share seats and
a rate by IP prefix (identities are free, addresses are not); inbound handshakes, whose peer is
not known yet, share seats by IP prefix too, and the oldest give way to newcomers.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.abc import INetStream
from libp2p.network.exceptions import SwarmException

from p2pnode.net.contracts import NetConfig
from p2pnode.net.fixes import Handle, reset_quietly, socket_ip
from p2pnode.net.penalty import Buckets
from p2pnode.net.tiers import Seats, Shares, Tiers, prefix

log = logging.getLogger(__name__)

STREAM_COST = 8
"""The work a stream a stranger opens brings, in `pace` units (about one small message judged
each): negotiating its protocol and starting its handler took 1.5 ms of CPU a stream."""

STREAM_WAIT = 1.0
"""The longest a stranger's new stream waits for its network's budget; one that would wait
longer is reset at once (a task waiting for each stream of a flood would pile up)."""

SwarmHandler = Callable[[INetStream], Awaitable[None]]
"""py-libp2p's swarm handler, called with every stream a remote opens."""

Upgrade = Callable[[Any, Any], Awaitable[Any]]
"""py-libp2p's `Swarm.upgrade_inbound_raw_conn(raw_conn, maddr)`: Noise, then yamux."""


@dataclass(slots=True)
class _Handshake:
    scope: trio.CancelScope
    spoke: bool = False
    """The remote sent something: it is handshaking, not just holding a socket."""


def listen(raw_conn: Any, handshake: _Handshake) -> None:
    """Mark `handshake` as soon as `raw_conn` reads anything (this instance's own method,
    wrapped for the connection's life; it costs an attribute set per read)."""
    read = raw_conn.read

    async def reading(n: int | None = None) -> bytes:
        data: bytes = await read(n)
        handshake.spoke = True
        return data

    raw_conn.read = reading


class Refused(enum.Enum):
    """What admission turned away (counted, shown in the status)."""

    HANDSHAKE_DISPLACED = "handshakes displaced by newer ones"
    HANDSHAKE_TIMEOUT = "handshakes over their time"
    INBOUND_RATE = "inbound connections over their network's rate"
    STRANGER_SEATS = "stranger connections over their seats"
    STRANGER_DISPLACED = "stranger connections displaced by another network's"
    PACED = "stranger RPCs that waited for their budget"
    MESH = "stranger GRAFTs over their mesh places"
    IWANT = "stranger IWANTs whose answer their budget did not hold"
    SLOW = "strangers dropped for not reading what they were sent"
    STREAMS = "stranger streams reset for want of budget"


class Admission:
    def __init__(self, config: NetConfig, tiers: Tiers, kick: Callable[[str], None]) -> None:
        self.tiers = tiers
        self._kick = kick
        self._handshake_timeout = config.handshake_timeout
        self._handshakes = Seats(
            config.max_handshakes,
            config.max_handshakes_per_prefix,
            displace_own=True,
            quiet=lambda key: not self._pending[key].spoke,
        )
        self._pending: dict[Hashable, _Handshake] = {}
        self._inbound = Buckets(config.inbound_rate, 2 * config.inbound_rate)
        self._prover_ips: set[str] = set()
        """Addresses provers connected from or announced: never held to the inbound rate."""
        self._strangers = Seats(
            config.max_strangers, config.max_strangers_per_prefix, displace_own=False
        )
        self._work = Shares(
            config.stranger_rate,
            2 * config.stranger_rate,
            config.stranger_prefix_rate,
            2 * config.stranger_prefix_rate,
        )
        self._prefixes: dict[str, str] = {}
        self._connections: dict[str, set[Hashable]] = {}
        """Each connected peer's connections, by key: its seat goes with the last of them."""
        self.refused = dict.fromkeys(Refused, 0)

    def strangers(self) -> int:
        return len(self._strangers)

    # Inbound handshakes

    def gate(self, handle: Handle) -> Handle:
        """`handle` (py-libp2p's handler of a new inbound socket) behind a rate per prefix of
        new connections: beyond it a socket is closed before py-libp2p does any work for it.
        Addresses provers use are never held to it."""

        async def gated(stream: Any, maddr: Any) -> None:
            ip = socket_ip(stream)
            if ip not in self._prover_ips and not self._inbound.take(
                prefix(ip), trio.current_time()
            ):
                self.refused[Refused.INBOUND_RATE] += 1
                await stream.close()
                return
            await handle(stream, maddr)

        return gated

    def guard(self, upgrade: Upgrade) -> Upgrade:
        """`upgrade` (py-libp2p's inbound upgrade) bounded: seats by prefix, a timeout."""

        async def guarded(raw_conn: Any, maddr: Any) -> Any:
            ip = socket_ip(raw_conn)
            if ip in self._prover_ips:
                # Never displaced, by however many networks: a prover's dial gets through.
                return await self._timed(upgrade, raw_conn, maddr)
            key = object()
            handshake = self._pending[key] = _Handshake(trio.CancelScope())
            listen(raw_conn, handshake)
            # With `displace_own` a newcomer always gets a seat, if need be another's.
            _, displaced = self._handshakes.take(key, prefix(ip))
            if displaced is not None:
                self.refused[Refused.HANDSHAKE_DISPLACED] += 1
                self._pending.pop(displaced).scope.cancel()
            try:
                with handshake.scope:
                    return await self._timed(upgrade, raw_conn, maddr)
            finally:
                self._handshakes.leave(key)
                self._pending.pop(key, None)
            # Reached only when displaced: the scope swallowed its own cancellation.
            raise SwarmException("inbound handshake displaced by a newer one")

        return guarded

    def charge(self, peer: str) -> None:
        """A stranger sent what we reject: its network pays with a new connection's worth of
        its inbound rate. A ban is per identity and identities are free; this way a network
        that sends junk under name after name gets fewer names in, and each costs a handshake.
        """
        network = self._prefixes.get(peer)
        # A gossip author that is not connected here (a made-up origin) has no network to pay:
        # its forwarder is charged for the same message.
        if network is not None and self.tiers.is_stranger(peer):
            self._inbound.charge(network, trio.current_time(), 1.0)

    async def _timed(self, upgrade: Upgrade, raw_conn: Any, maddr: Any) -> Any:
        try:
            with trio.fail_after(self._handshake_timeout):
                return await upgrade(raw_conn, maddr)
        except trio.TooSlowError:
            self.refused[Refused.HANDSHAKE_TIMEOUT] += 1
            raise SwarmException("inbound handshake over its time") from None

    def note_prover_ips(self, ips: Iterable[str]) -> None:
        self._prover_ips.update(ips)

    # Established connections

    def connected(self, peer: str, ip: str | None, key: Hashable = None) -> bool:
        """A connection is up; False if it must go (a stranger without a seat). A stranger
        from a network holding fewer seats than the largest displaces that one's oldest. One
        peer's connections share its seat (py-libp2p can hold two for a while, one key on two
        hosts as well), which is given up with the last of them."""
        self._connections.setdefault(peer, set()).add(key)
        network = self._prefixes.setdefault(peer, prefix(ip))
        if peer in self.tiers.provers and ip is not None:
            self._prover_ips.add(ip)
        if not self.tiers.is_stranger(peer):
            return True
        if ip in self._prover_ips and not self._inbound.take(network, trio.current_time()):
            # From a prover's address the inbound rate let it in unread; a stranger there is
            # held to it now, once known (before identify and pubsub cost anything more).
            self.refused[Refused.INBOUND_RATE] += 1
            return False
        seated, displaced = self._strangers.take(peer, network)
        if displaced is not None:
            self.refused[Refused.STRANGER_DISPLACED] += 1
            self._kick(str(displaced))
        if not seated:
            self.refused[Refused.STRANGER_SEATS] += 1
        return seated

    def disconnected(self, peer: str, key: Hashable = None) -> None:
        keys = self._connections.get(peer)
        if keys is None or key not in keys:
            return  # never counted (py-libp2p tells of some it never said were up)
        keys.discard(key)
        if keys:
            return
        del self._connections[peer]
        self._strangers.leave(peer)
        self._prefixes.pop(peer, None)

    def seated(self, peer: str) -> bool:
        """Whether a connected peer may stay: a prover, a named peer, a stranger with a seat,
        or one whose connection admission has not been told of yet."""
        unknown = peer not in self._connections
        return unknown or not self.tiers.is_stranger(peer) or peer in self._strangers

    def budget_key(self, peer: str) -> str:
        """Whom a per-peer budget (sync requests, genesis fetches) is kept for: a prover or a
        named peer itself, a stranger's whole network (its identities are free)."""
        if not self.tiers.is_stranger(peer):
            return peer
        return "network " + self._prefixes.get(peer, prefix(None))

    def spend(self, peer: str, units: int) -> bool:
        """Spend `units` of a stranger's work budget if its network and all strangers hold
        them (a prover or named peer always may); False spends nothing."""
        if not self.tiers.is_stranger(peer):
            return True
        network = self._prefixes.get(peer, prefix(None))
        return self._work.take(network, trio.current_time(), units)

    def paced_streams(self, handler: SwarmHandler) -> SwarmHandler:
        """`handler`, run for a stranger's stream once its network has paid STREAM_COST.

        A stranger that opened a gossip stream and reset it, in a loop, had each one
        negotiated at no charge: one Python attacker took half a peer's core. A stream is
        refused on its own network's debt alone, and only one let through is charged: one
        network's flood never refuses another's streams, nor owes more than STREAM_WAIT."""

        async def paced(stream: INetStream) -> None:
            peer = stream.muxed_conn.peer_id.to_base58()
            if self.tiers.is_stranger(peer):
                network = self._prefixes.get(peer, prefix(None))
                now = trio.current_time()
                if self._work.owed(network, now) > STREAM_WAIT:
                    self.refused[Refused.STREAMS] += 1
                    await reset_quietly(stream)
                    return
                await trio.sleep(self._work.charge(network, now, STREAM_COST))
            await handler(stream)

        return paced

    async def pace(self, peer: str, cost: int) -> None:
        """Wait until a stranger's network, and strangers together, have the budget for
        `cost` more units of work; provers and named peers never wait."""
        if not self.tiers.is_stranger(peer):
            return
        network = self._prefixes.get(peer, prefix(None))
        wait = self._work.charge(network, trio.current_time(), cost)
        if wait > 0:
            self.refused[Refused.PACED] += 1
            await trio.sleep(wait)
