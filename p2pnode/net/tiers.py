"""Who a peer is to us, and the budgets strangers share: by IP prefix, never by identity.

Pure bookkeeping with explicit clocks and keys, tested without a network.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable

from p2pnode.net.penalty import Buckets


class Tier(enum.Enum):
    PROVER = "prover"
    """A key of the genesis: reserved connection slots, never throttled, kept in the mesh."""
    NAMED = "named"
    """A peer the operator named: reserved slots and never throttled, like a prover."""
    STRANGER = "stranger"
    """Anyone else: identities are free, so strangers share budgets kept by IP prefix."""


class Tiers:
    def __init__(self, provers: Iterable[str] = (), named: Iterable[str] = ()) -> None:
        self.provers = frozenset(provers)
        self.named = frozenset(named) - self.provers

    def of(self, peer: str) -> Tier:
        if peer in self.provers:
            return Tier.PROVER
        if peer in self.named:
            return Tier.NAMED
        return Tier.STRANGER

    def is_stranger(self, peer: str) -> bool:
        return peer not in self.provers and peer not in self.named


UNKNOWN_PREFIX = "unknown"
"""Where a connection's address cannot be read: one prefix for all such (shared, like any)."""


def prefix(ip: str | None) -> str:
    """The network a stranger's budgets are kept by: its /24 for IPv4, its /64 for IPv6 (what
    one operator of a host, or one customer of a provider, usually holds)."""
    if ip is None:
        return UNKNOWN_PREFIX
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return UNKNOWN_PREFIX
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


class Shares:
    """A rate shared by all strangers together, and within it a share per prefix.

    Costs are charged whether or not the tokens are there: the answer is how long the payer
    should wait before it goes on (back-pressure), so that, however many identities and
    connections a prefix holds, all of them together get the prefix's rate, and all strangers
    together about the total rate.
    """

    def __init__(self, rate: float, burst: float, prefix_rate: float, prefix_burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._total = Buckets(rate, burst, max_peers=1)
        self._prefix_rate = prefix_rate
        self._prefixes = Buckets(prefix_rate, prefix_burst)

    def charge(self, network: str, now: float, cost: float) -> float:
        """Charge `cost` to `network` (a prefix) and to the total; the seconds until both are
        back out of debt."""
        # The total is never owed more than a burst: one network's flood slows the others by
        # a few seconds at most, while its own debt is paid in full.
        total = self._total.charge("", now, cost, floor=-self._burst)
        own = self._prefixes.charge(network, now, cost)
        return max(-total / self._rate, -own / self._prefix_rate, 0.0)

    def owed(self, network: str, now: float) -> float:
        """The seconds until `network`'s own share is out of debt (whatever the total owes)."""
        return max(-self._prefixes.tokens(network, now) / self._prefix_rate, 0.0)

    def take(self, network: str, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` if both the total and `network`'s share hold it; False spends nothing."""
        if self._total.tokens("", now) < cost or self._prefixes.tokens(network, now) < cost:
            return False
        self._total.charge("", now, cost)
        self._prefixes.charge(network, now, cost)
        return True


class Seats:
    """A bounded set of seats held by keys (connections), at most `per_prefix` per prefix.

    When a prefix is at its bound, a newcomer from it takes the seat of that prefix's oldest
    if `displace_own` (handshakes: raw sockets that never speak go first) or is refused (an
    established stranger connection is not churned by its neighbours). When all seats are
    taken, a newcomer from a prefix holding fewer than the largest takes the seat of that
    prefix's oldest: prefixes even out, and a flood from one network only displaces itself.
    """

    def __init__(
        self,
        total: int,
        per_prefix: int,
        *,
        displace_own: bool,
        quiet: Callable[[Hashable], bool] = lambda key: True,
    ) -> None:
        self._total = total
        self._per_prefix = per_prefix
        self._displace_own = displace_own
        self._quiet = quiet
        """Whether a seat's holder has done nothing yet: of a prefix's seats, the oldest quiet
        one gives way first, then the oldest."""
        self._held: dict[str, OrderedDict[Hashable, None]] = {}
        self._prefix_of: dict[Hashable, str] = {}

    def __len__(self) -> int:
        return len(self._prefix_of)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._prefix_of

    def held_by(self, network: str) -> int:
        return len(self._held.get(network, ()))

    def take(self, key: Hashable, network: str) -> tuple[bool, Hashable | None]:
        """Seat `key` of `network`: (seated, the key it displaced, if any)."""
        if key in self._prefix_of:
            return True, None
        victim: Hashable | None = None
        if self.held_by(network) >= self._per_prefix:
            if not self._displace_own:
                return False, None
            victim = self._oldest(network)
        elif len(self._prefix_of) >= self._total:
            largest = max(self._held, key=self.held_by)
            if self.held_by(largest) <= self.held_by(network):
                if not self._displace_own:
                    return False, None
                largest = network
            victim = self._oldest(largest)
        if victim is not None:
            self.leave(victim)
        self._held.setdefault(network, OrderedDict())[key] = None
        self._prefix_of[key] = network
        return True, victim

    def leave(self, key: Hashable) -> None:
        network = self._prefix_of.pop(key, None)
        if network is None:
            return
        keys = self._held[network]
        del keys[key]
        if not keys:
            del self._held[network]

    def _oldest(self, network: str) -> Hashable:
        held = self._held[network]
        return next((key for key in held if self._quiet(key)), next(iter(held)))
