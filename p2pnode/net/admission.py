"""Who gets in and how much they get: inbound handshakes, strangers' connections and their work.

Provers and named peers are never refused, displaced or paced here. Strangers share seats and
a rate by IP prefix (identities are free, addresses are not); inbound handshakes, whose peer is
not known yet, share seats by IP prefix too, and the oldest give way to newcomers.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from libp2p.network.exceptions import SwarmException

from p2pnode.net.contracts import NetConfig
from p2pnode.net.tiers import Seats, Shares, Tiers, prefix

log = logging.getLogger(__name__)

Upgrade = Callable[[Any, Any], Awaitable[Any]]
"""py-libp2p's `Swarm.upgrade_inbound_raw_conn(raw_conn, maddr)`: Noise, then yamux."""


class Refused(enum.Enum):
    """What admission turned away (counted, shown in the status)."""

    HANDSHAKE_DISPLACED = "handshakes displaced by newer ones"
    HANDSHAKE_TIMEOUT = "handshakes over their time"
    STRANGER_SEATS = "stranger connections over their seats"
    STRANGER_DISPLACED = "stranger connections displaced by another network's"
    PACED = "stranger RPCs that waited for their budget"
    MESH = "stranger GRAFTs over their mesh places"


class Admission:
    def __init__(self, config: NetConfig, tiers: Tiers, kick: Callable[[str], None]) -> None:
        self.tiers = tiers
        self._kick = kick
        self._handshake_timeout = config.handshake_timeout
        self._handshakes = Seats(
            config.max_handshakes, config.max_handshakes_per_prefix, displace_own=True
        )
        self._pending: dict[object, trio.CancelScope] = {}
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
        self.refused = dict.fromkeys(Refused, 0)

    def strangers(self) -> int:
        return len(self._strangers)

    # Inbound handshakes

    def guard(self, upgrade: Upgrade) -> Upgrade:
        """`upgrade` (py-libp2p's inbound upgrade) bounded: seats by prefix, a timeout."""

        async def guarded(raw_conn: Any, maddr: Any) -> Any:
            remote = raw_conn.get_remote_address()
            key, scope = object(), trio.CancelScope()
            # With `displace_own` a newcomer always gets a seat, if need be another's.
            _, displaced = self._handshakes.take(key, prefix(remote and remote[0]))
            if displaced is not None:
                self.refused[Refused.HANDSHAKE_DISPLACED] += 1
                self._pending.pop(displaced).cancel()
            self._pending[key] = scope
            try:
                with scope, trio.fail_after(self._handshake_timeout):
                    return await upgrade(raw_conn, maddr)
            except trio.TooSlowError:
                self.refused[Refused.HANDSHAKE_TIMEOUT] += 1
                raise SwarmException("inbound handshake over its time") from None
            finally:
                self._handshakes.leave(key)
                self._pending.pop(key, None)
            # Reached only when displaced: the scope swallowed its own cancellation.
            raise SwarmException("inbound handshake displaced by a newer one")

        return guarded

    # Established connections

    def connected(self, peer: str, ip: str | None) -> bool:
        """A connection is up; False if it must go (a stranger without a seat). A stranger
        from a network holding fewer seats than the largest displaces that one's oldest."""
        network = prefix(ip)
        self._prefixes[peer] = network
        if not self.tiers.is_stranger(peer):
            return True
        seated, displaced = self._strangers.take(peer, network)
        if displaced is not None:
            self.refused[Refused.STRANGER_DISPLACED] += 1
            self._kick(str(displaced))
        if not seated:
            self.refused[Refused.STRANGER_SEATS] += 1
        return seated

    def disconnected(self, peer: str) -> None:
        self._strangers.leave(peer)
        self._prefixes.pop(peer, None)

    def budget_key(self, peer: str) -> str:
        """Whom a per-peer budget (sync requests, genesis fetches) is kept for: a prover or a
        named peer itself, a stranger's whole network (its identities are free)."""
        if not self.tiers.is_stranger(peer):
            return peer
        return "network " + self._prefixes.get(peer, prefix(None))

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
