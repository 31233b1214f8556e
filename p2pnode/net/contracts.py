"""What the network adapter promises its user and asks of it: topics, verdicts, judge, config."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

SEED_SIZE = 32
KIB = 1024
MAX_PAYLOAD = 60 * KIB
"""py-libp2p writes an RPC larger than one yamux frame (64 KiB) as several frames under a
per-frame lock, so two writes on one stream can interleave and the receiver cannot parse
either; one frame, with room for the signed envelope, is the limit."""


class NetError(Exception):
    """A network operation failed or timed out; the message says which and why."""


class Topic(enum.Enum):
    """The gossip topics; the value is the topic's name on the wire (see `topic_name`)."""

    LIVENESS = "liveness"
    PROPOSALS = "proposals"
    VOTES = "votes"
    CONFIRMATIONS = "confirmations"
    MUTATIONS = "mutations"
    PEERS = "peers"
    """Discovery: every peer announces its multiaddrs here, as the codec's `Peers` message."""


DIRECT_TOPICS = (
    Topic.LIVENESS,
    Topic.PROPOSALS,
    Topic.VOTES,
    Topic.CONFIRMATIONS,
    Topic.MUTATIONS,
)
"""Topics whose messages their author sends straight to every prover, and which provers relay
to each other only when they did not come from a prover author (see `GuardedGossipSub`):
everything but discovery (an announcement every 30 s or so, left to plain gossip)."""


class Verdict(enum.Enum):
    ACCEPT = "accept"
    """Valid and useful: delivered and forwarded."""
    IGNORE = "ignore"
    """Stale, duplicate or too far ahead: dropped quietly, not forwarded."""
    REJECT = "reject"
    """Malformed or forged: dropped, not forwarded, counted against its author and forwarder."""


def topic_name(network: str, topic: Topic) -> str:
    return f"/p2pnode/{network}/{topic.value}/cbor"


def sync_protocol(network: str) -> str:
    return f"/p2pnode/{network}/sync/1"


GENESIS_PROTOCOL = "/p2pnode/genesis/1"
"""Not network-specific: a new peer fetches the genesis before it knows the network id."""


def networks_served(protocols: Iterable[str]) -> frozenset[str]:
    """The networks whose sync protocol is among `protocols` (what a peer's identify lists)."""
    found = (re.fullmatch(r"/p2pnode/([^/]+)/sync/1", protocol) for protocol in protocols)
    return frozenset(match.group(1) for match in found if match is not None)


class Judge(Protocol):
    """Decides what happens to every gossip message, before it is forwarded.

    Called synchronously on py-libp2p's receive path: it must be fast and must not block.
    A message's id is the hash of its payload, and each id is judged once: an accepted one is
    then remembered as seen and a rejected one as rejected, for `dedupe_ttl`, whoever sends
    the same bytes again. An ignored one is judged afresh when another copy arrives, since it
    may be acceptable by then. So judge the data, and use `origin` (the libp2p peer id of the
    message's signer) as information: it is whoever published these bytes first.
    """

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict: ...


class SyncServer(Protocol):
    """Answers catch-up requests: one request in, up to `max_response_items` items out."""

    async def serve(self, request: bytes) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class MeshDegrees:
    """GossipSub's D_low, D and D_high."""

    low: int
    target: int
    high: int


def mesh_degrees(expected_peers: int) -> MeshDegrees:
    """Degrees that keep a small prover set whole in every peer's mesh, and a larger one sparse.

    With N-1 > D_high py-libp2p's heartbeat prunes carry no backoff and the mesh collapses into
    GRAFT/PRUNE churn, and a peer with an empty mesh sends its own messages to nobody (§4-G):
    D_high >= N-1 avoids both, as nothing is ever pruned. Up to seven peers, D_low = D = N-1
    grafts every peer on subscribe. Beyond, a whole mesh makes every peer receive every message
    once from each of the others, and those copies outgrow the work itself (at ten provers on
    two cores, rounds stalled); D_low = 3 and D = 4 leave each peer 4 to 8 mesh members, still
    never pruned, and the heartbeat's gossip (IHAVE) to the others covers any gap.
    """
    others = max(1, expected_peers - 1)
    if others > SMALL_MESH:
        return MeshDegrees(low=3, target=4, high=max(12, others))
    return MeshDegrees(low=others, target=others, high=12)


SMALL_MESH = 6
"""The most other peers every peer keeps in its mesh."""


@dataclass(frozen=True, slots=True)
class NetConfig:
    network: str
    seed: bytes
    """The 32-byte ed25519 seed: the peer's persistent identity."""
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    """Full multiaddrs (with /p2p/<id>) dialled until connected; discovery finds the rest."""
    announce: tuple[str, ...] = ()
    """Multiaddrs to announce instead of the listen ones (/p2p/<id> is appended if missing);
    empty: the listen ones, wildcards expanded to this host's interface addresses."""
    expected_peers: int = 4
    """The size of the prover set; sizes the mesh degrees (D_high >= expected_peers - 1)."""
    heartbeat: float = 1.0
    echo: bool = True
    """When False the peer's own publications are published but not fed to the judge."""
    max_response_items: int = 64
    max_item_size: int = MAX_PAYLOAD
    """Bound on each sync response item: a final frame, which gossip carries too."""
    max_response_bytes: int = 1024 * KIB
    """Bound on a whole sync response; a client asks again from where it ended."""
    max_sync_request: int = 256
    sync_rate: float = 2.0
    sync_burst: int = 16
    """Sync requests (and genesis fetches) served to strangers, per IP prefix for all of them
    together: a token bucket of `sync_burst`, refilled at `sync_rate` per second. Catching up
    asks one request per 64 frames; beyond that a stranger is refused. Provers and named
    peers are not held to it."""
    ignore_rate: float = 200.0
    ignore_burst: int = 2000
    """IGNOREd messages taken from one forwarder (a bucket like the sync one); beyond it each
    one counts as a reject against the forwarder. Never cached, they could replay for ever."""
    record_rate: float = 0.5
    record_burst: int = 32
    """Announcements of peers not yet known taken from one forwarder; beyond it they are
    ignored (and count against its ignore bucket)."""
    max_known_peers: int = 256
    provers: frozenset[str] = frozenset()
    """Peer ids of the prover set: a tier of their own (see `net.tiers`), never refused a
    connection, paced or displaced from the mesh."""
    named: frozenset[str] = frozenset()
    """Peer ids the operator named (followers it runs, say): never refused or paced, like
    provers, but not kept in the mesh."""
    max_strangers: int = 32
    max_strangers_per_prefix: int = 8
    """Connections of peers that are neither provers nor named, in all and per IP prefix (a
    /24 or /64): beyond, a newcomer is dropped, unless its network holds fewer than the
    largest, whose oldest then goes."""
    inbound_rate: float = 4.0
    """New inbound connections taken per second from one IP prefix (bursts of twice that),
    but from an address a prover uses; beyond, a socket is closed unread. Each message a
    stranger sends that is rejected costs its network one of these too."""
    max_handshakes: int = 32
    max_handshakes_per_prefix: int = 8
    handshake_timeout: float = 3.0
    """Inbound connections still handshaking, in all and per IP prefix, and their time: a
    newcomer takes the seat of the oldest (of its own prefix when that is full), so raw
    sockets that never speak cannot keep honest dials out."""
    stranger_rate: float = 500.0
    stranger_prefix_rate: float = 200.0
    """Work taken from strangers per second (one unit is about one small message), all of them
    together and each IP prefix; bursts of twice that. Beyond, their streams are not read until
    the budget refills: the sender waits (and its TCP window closes), the provers do not."""
    stranger_mesh: int = 2
    """Strangers in each topic's mesh; more GRAFTs are pruned. Others get messages by gossip."""
    genesis: bytes | None = None
    """Served on GENESIS_PROTOCOL when set."""
    max_genesis_size: int = 1024 * KIB
    announce_interval: float = 30.0
    """How often this peer announces its addresses on the PEERS topic while its peers stay the
    same; any change in them brings an announcement within 0.1 s. Every announcement reaches
    every peer: at 16 provers a 2 s interval made them 40% of all the gossip a peer judged."""
    dial_grace: float = 4.0
    """How long the peer with the larger id waits before it dials a newly learned peer itself
    (the smaller id dials first; see `Directory`)."""
    dial_timeout: float = 5.0
    stall_timeout: float = 5.0
    """A connection whose sent data stays unacknowledged this long is ended and dialled again,
    rather than left to TCP's retransmissions, which back off to tens of seconds."""
    redial: tuple[float, float] = (0.5, 2.0)
    """First and longest wait before dialling a known peer again after a failed dial."""
    reject_limit: int = 8
    """This many REJECT verdicts from one peer (as author or forwarder) within `reject_window`
    seconds get it disconnected and refused for `ban_period` seconds."""
    reject_window: float = 10.0
    ban_period: float = 60.0
    queue_threshold: int = 16
    """`publish` waits while any peer's outbound queue (py-libp2p drops RPCs at 32) is this full."""
    publish_max_wait: float = 2.0
    """After this long, `publish` gives up waiting for a stuck peer's queue and publishes."""
    dedupe_ttl: int = 120
    """Seconds a message id is remembered: copies within it are neither re-judged nor re-sent."""
    shutdown_timeout: float = 3.0

    def __post_init__(self) -> None:
        if not self.network or "/" in self.network:
            raise ValueError(f"network must be a non-empty name without '/', got {self.network!r}")
        if len(self.seed) != SEED_SIZE:
            raise ValueError(f"seed must be {SEED_SIZE} bytes, got {len(self.seed)}")
        if self.expected_peers < 1:
            raise ValueError("expected_peers must be at least 1")
        positive = {
            "heartbeat": self.heartbeat,
            "announce_interval": self.announce_interval,
            "dial_grace": self.dial_grace,
            "dial_timeout": self.dial_timeout,
            "stall_timeout": self.stall_timeout,
            "redial": min(self.redial),
            "reject_window": self.reject_window,
            "ban_period": self.ban_period,
            "publish_max_wait": self.publish_max_wait,
            "shutdown_timeout": self.shutdown_timeout,
            "max_response_items": self.max_response_items,
            "max_item_size": self.max_item_size,
            "max_response_bytes": self.max_response_bytes,
            "max_sync_request": self.max_sync_request,
            "sync_rate": self.sync_rate,
            "sync_burst": self.sync_burst,
            "ignore_rate": self.ignore_rate,
            "ignore_burst": self.ignore_burst,
            "record_rate": self.record_rate,
            "record_burst": self.record_burst,
            "max_known_peers": self.max_known_peers,
            "max_genesis_size": self.max_genesis_size,
            "reject_limit": self.reject_limit,
            "dedupe_ttl": self.dedupe_ttl,
            "max_strangers": self.max_strangers,
            "max_strangers_per_prefix": self.max_strangers_per_prefix,
            "max_handshakes": self.max_handshakes,
            "max_handshakes_per_prefix": self.max_handshakes_per_prefix,
            "handshake_timeout": self.handshake_timeout,
            "inbound_rate": self.inbound_rate,
            "stranger_rate": self.stranger_rate,
            "stranger_prefix_rate": self.stranger_prefix_rate,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if self.stranger_mesh < 0:
            raise ValueError(f"stranger_mesh must be at least 0, got {self.stranger_mesh!r}")
        if not 1 <= self.queue_threshold < 32:
            raise ValueError("queue_threshold must be in [1, 32): py-libp2p drops at 32")
        if self.genesis is not None and len(self.genesis) > self.max_genesis_size:
            raise ValueError("genesis is larger than max_genesis_size")
