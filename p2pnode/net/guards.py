"""py-libp2p's pubsub receive paths, guarded: remote input costs its sender, never the peer."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.metadata
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from libp2p.abc import INetStream
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from p2pnode.net.contracts import MAX_PAYLOAD, Verdict

log = logging.getLogger(__name__)

WRITTEN_FOR = "0.8."
"""The py-libp2p series whose internals the classes below override."""


def check_libp2p_version(installed: str | None = None) -> None:
    """Fail loudly on a py-libp2p these overrides were not written for: a changed internal
    would otherwise turn a guard into a silent no-op, or a crash."""
    found = installed or importlib.metadata.version("libp2p")
    if not found.startswith(WRITTEN_FOR):
        raise RuntimeError(f"py-libp2p {found} is installed; p2pnode needs {WRITTEN_FOR}x")


ED25519_ID_PREFIX = bytes.fromhex("002408011220")
"""An ed25519 peer id: identity multihash (0x00, 36 bytes) of the protobuf public key (type 1,
32 bytes of key). Every p2pnode peer id has this form; its key is inline, so a message's
`key` field is never needed."""
ED25519_ID_SIZE = len(ED25519_ID_PREFIX) + 32
SEQNO_SIZE = 8
SIGNATURE_SIZE = 64
MAX_READERS = 2
"""Pubsub streams read at once from one peer: its own, and one that replaces it."""
ENVELOPES_KEPT = 16384
"""Verdicts on signatures kept (about 1 MiB): the same bytes again cost a lookup, not a verify."""
_CLOSED = (StreamError, IOException, RawConnError)
"""How a stream ends when its peer goes (py-libp2p's own reader treats these as normal)."""
_BAD_FRAMING = (MessageTooLarge, ParseError)
"""IOExceptions that are the sender's doing, not the stream's end."""


class Malformed(enum.Enum):
    """Why a pubsub RPC or message was dropped before py-libp2p or the judge saw it."""

    UNDECODABLE = "undecodable RPC"
    ORIGIN = "from is not an ed25519 peer id"
    KEY = "key is not the origin's key"
    SEQNO = "seqno is not 8 bytes"
    SIGNATURE = "signature is not 64 bytes"
    TOPICS = "not exactly one topic"
    OVERSIZED = "payload over the size limit"
    SIGNATURE_INVALID = "signature does not verify"
    NOT_OURS = "a topic we do not serve"
    CONTROL = "control messages beyond their bounds"
    FAILED = "py-libp2p failed on it"


Report = Callable[[str, Malformed], None]
"""(the remote peer that sent it, why): counted and held against the sender."""
Pace = Callable[[str, int], Awaitable[None]]
"""(the remote peer, the work its last RPC brought): charges it, and returns once the peer's
budget is out of debt (at once for a peer that is not held to one)."""


def _no_report(peer: str, reason: Malformed) -> None:
    """The default until the network installs its own."""


async def _no_pace(peer: str, cost: int) -> None:
    """The default until the network installs its own: no one waits."""


def rpc_cost(rpc: rpc_pb2.RPC, size: int) -> int:
    """The work an RPC brings, in units of about one small message judged: one for the RPC,
    one per message, and one per KiB read (control entries are bounded per RPC, and cost
    what their bytes do)."""
    return 1 + len(rpc.publish) + size // 1024


Judging = Callable[[ID, rpc_pb2.Message], Verdict]
"""(forwarder, message) -> the verdict on it."""


class Remembered:
    """Ids remembered for `ttl` seconds (of the monotonic clock), at most `size` of them,
    the oldest forgotten first."""

    def __init__(
        self, ttl: float, size: int = ENVELOPES_KEPT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._until: OrderedDict[bytes, float] = OrderedDict()

    def add(self, key: bytes) -> None:
        self._until.pop(key, None)
        self._until[key] = self._clock() + self._ttl
        if len(self._until) > self._size:
            self._until.popitem(last=False)

    def live(self) -> int:
        """How many are remembered still (the expired ones are forgotten now)."""
        now = self._clock()
        while self._until and next(iter(self._until.values())) <= now:
            self._until.popitem(last=False)
        return len(self._until)

    def holds(self, key: bytes) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until > self._clock():
            return True
        del self._until[key]
        return False


def envelope_key(msg: rpc_pb2.Message) -> bytes:
    """The message as it came, signature included: what a signature verdict is kept by."""
    return hashlib.sha256(msg.SerializeToString()).digest()


def well_formed(msg: rpc_pb2.Message) -> Malformed | None:
    """What is wrong with the message's envelope, or None; a shape check, no cryptography.

    py-libp2p parses these fields inside a task of its pubsub service, where an exception
    ends the whole service: a `key` that is not a public key did. Messages that pass here
    leave it nothing to fail on, and the signature it checks next covers the rest.
    """
    if len(msg.from_id) != ED25519_ID_SIZE or not msg.from_id.startswith(ED25519_ID_PREFIX):
        return Malformed.ORIGIN
    if msg.key and msg.key != msg.from_id[2:]:
        return Malformed.KEY
    if len(msg.seqno) != SEQNO_SIZE:
        return Malformed.SEQNO
    if len(msg.signature) != SIGNATURE_SIZE:
        return Malformed.SIGNATURE
    if len(msg.topicIDs) != 1:
        return Malformed.TOPICS
    if len(msg.data) > MAX_PAYLOAD:
        return Malformed.OVERSIZED
    return None


def message_id(peers_topic: str) -> Callable[[rpc_pb2.Message], bytes]:
    """A message's id: the sha256 of its topic, origin and payload (and seqno on PEERS).

    Verdicts are cached by id, so an id must name exactly what was judged. With the payload
    alone, a stranger who re-published a prover's message under its own origin got it
    rejected ("signer is not the sender"), and the prover's genuine copy was then dropped
    unjudged, on every topic. Discovery announcements repeat the same bytes on purpose;
    their id also covers the seqno, so each one is new.
    """

    def identify(msg: rpc_pb2.Message) -> bytes:
        topic = msg.topicIDs[0] if msg.topicIDs else ""
        seqno = msg.seqno if topic == peers_topic else b""
        return content_id(topic, msg.from_id, msg.data, seqno)

    return identify


def content_id(topic: str, origin: bytes, data: bytes, seqno: bytes = b"") -> bytes:
    digest = hashlib.sha256()
    for part in (topic.encode(), origin, seqno):
        digest.update(len(part).to_bytes(2, "big"))
        digest.update(part)
    digest.update(data)
    return digest.digest()


async def _reset_quietly(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()


class GuardedPubsub(Pubsub):
    """Pubsub whose stream reader and message path drop what they cannot handle, and charge it.

    An exception in either ends py-libp2p's pubsub service (and with it the peer): the
    reader's escapes the connection task, the message task's stops the service's manager.
    The reader is our own: py-libp2p's also stores the signed peer record an RPC may carry
    (addresses kept for two hours, whoever sends them, checked on every RPC); peers are found
    through bootstrap and our own signed announcements instead. Each RPC read is paced by
    `pace` (strangers share a budget) before it is handled. The message path is our own too:
    py-libp2p dropped a message whose signature failed without charging anyone and without
    remembering it, so the same bytes cost a verify each time they came.
    """

    report: Report = staticmethod(_no_report)
    pace: Pace = staticmethod(_no_pace)

    def __init__(self, *args: Any, verdict_ttl: float = 120.0, **kwargs: Any) -> None:
        check_libp2p_version()
        super().__init__(*args, **kwargs)
        self._signatures: OrderedDict[bytes, bool] = OrderedDict()
        self._readers: dict[ID, list[INetStream]] = {}
        """The streams read from each peer, oldest first."""
        self.judges: dict[str, Judging] = {}
        """Each topic's verdict on a message, by the network's judge."""
        self.rejected = Remembered(verdict_ttl)
        self.accepted = Remembered(verdict_ttl)
        self.copies: Counter[tuple[str, bool]] = Counter()
        """Well-formed messages received from peers, by topic and whether seen before."""

    async def write_msg(self, stream: INetStream, rpc_msg: rpc_pb2.RPC) -> bool:
        """Write an RPC without the signed peer record py-libp2p puts in each one: about 213
        bytes of every RPC (a fifth of what a prover sends at n = 4), parsed by every receiver
        and read by none of ours (peers are found by bootstrap and signed announcements)."""
        if rpc_msg.HasField("senderRecord"):
            rpc_msg.ClearField("senderRecord")
        return await super().write_msg(stream, rpc_msg)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        """Read RPCs and handle each at once; after each, wait while the sender's budget is
        in debt (`pace`), so the next is read only when it may be: nothing waits in memory.
        A peer is read on MAX_READERS streams at most: a new one replaces its oldest."""
        peer = stream.muxed_conn.peer_id
        remote = peer.to_base58()
        reading = self._readers.setdefault(peer, [])
        if len(reading) >= MAX_READERS:
            # Refusing the new stream silenced a peer for good once its link had flapped: its
            # old streams sat on connections this side still held (half-open, with nothing
            # to send there that could time out). The opener is charged all the same.
            self.report(remote, Malformed.CONTROL)
            self.manager.run_task(_reset_quietly, reading.pop(0))
        reading.append(stream)
        bad = False
        try:
            await self.pace(remote, 0)
            while self.manager.is_running:
                data = await read_varint_prefixed_bytes_limited(stream, self.max_inbound_rpc_size)
                rpc = rpc_pb2.RPC()
                rpc.ParseFromString(data)
                await self._handle_rpc(peer, rpc)
                await self.pace(remote, rpc_cost(rpc, len(data)))
        except Exception as err:
            if isinstance(err, _CLOSED) and not isinstance(err, _BAD_FRAMING):
                log.debug("pubsub stream of %s ended: %r", peer, err)
                return
            log.debug("bad pubsub RPC from %s (%r): dropping its stream", peer, err)
            self.report(remote, Malformed.UNDECODABLE)
            await _reset_quietly(stream)
            bad = True
        finally:
            self._stop_reading(peer, stream)
        if bad:  # no longer counted as read: its subscriptions go with its stream
            self._handle_dead_peer(peer)

    def _stop_reading(self, peer: ID, stream: INetStream) -> None:
        reading = self._readers.get(peer, [])
        if stream in reading:  # not if a newer stream replaced it
            reading.remove(stream)
        if not reading:
            self._readers.pop(peer, None)

    def _handle_dead_peer(self, peer_id: ID) -> None:
        """Drop our stream to the peer, as py-libp2p does, but keep the peer's subscriptions
        while its stream to us is read and it is still connected.

        py-libp2p forgot them whenever our stream to the peer failed, though they came on the
        peer's stream to us: a peer whose stream to us lived on never announced them again, so
        we never again sent it a message. After a flapping link, a connected prover heard
        nothing for minutes and never learned that the others had gone on without it."""
        topics = [topic for topic, peers in self.peer_topics.items() if peer_id in peers]
        replayed = set(self._replayed_recent_topics.get(peer_id, ()))
        reading = peer_id in self._readers
        super()._handle_dead_peer(peer_id)
        if not reading or not self._peer_is_connected(peer_id):
            return
        # Replayed once already: a peer resetting each stream we open would otherwise be sent
        # the whole message cache again each time, unpaced.
        self._replayed_recent_topics[peer_id] = replayed
        for topic in topics:
            self.handle_subscription(peer_id, rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic))

    def mend_streams(self, connected: Iterable[ID]) -> None:
        """Open a stream to each connected peer we have none to, unless one is being opened.

        py-libp2p retries only from the failure it sees: a write failing during the retry's own
        replay dropped the new stream while the retry still counted as pending, and the peer,
        connected and subscribed, was sent nothing again."""
        for peer in connected:
            if peer not in self.peers and not self.is_peer_blacklisted(peer):
                self._schedule_peer_stream_retry(peer)  # a no-op while one is pending

    async def _handle_rpc(self, peer: ID, rpc: rpc_pb2.RPC) -> None:
        foreign = False
        for msg in rpc.publish:
            if not self._is_subscribed_to_msg(msg):
                foreign = True
            elif self.manager.is_running:
                self.manager.run_task(self.push_msg, peer, msg)
        if foreign:
            self.report(peer.to_base58(), Malformed.NOT_OURS)
        if len(rpc.subscriptions) > self.max_subscriptions_per_rpc:
            self.report(peer.to_base58(), Malformed.CONTROL)
        else:
            for subscription in rpc.subscriptions:
                self.handle_subscription(peer, subscription)
        if rpc.HasField("control"):
            await self.router.handle_rpc(rpc, peer)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        """py-libp2p's path for a message (ours or a peer's): checks cheapest first, each
        failure charged to the peer that sent it; then validation, delivery and forwarding."""
        remote = msg_forwarder != self.my_id
        if remote:
            reason = well_formed(msg)
            if reason is not None:
                log.debug("malformed message from %s: %s", msg_forwarder, reason.value)
                self.report(msg_forwarder.to_base58(), reason)
                return
        if self.is_peer_blacklisted(msg_forwarder):
            return
        topic = msg.topicIDs[0]  # exactly one: `well_formed` checked it
        if self._is_msg_seen(msg):
            self.copies[topic, True] += remote
            return
        if remote and not self._signed(msg):
            self.report(msg_forwarder.to_base58(), Malformed.SIGNATURE_INVALID)
            return
        self.copies[topic, False] += remote
        if ID(msg.from_id) == self.my_id and remote:
            return  # our own message relayed back: seen here before, or a forgery
        if not self._judged(msg_forwarder, msg):
            return  # the judge (the gate) counted and charged it
        try:
            self._mark_msg_seen(msg)
            self.notify_subscriptions(msg)
            await self.router.publish(msg_forwarder, msg)
        except Exception as err:
            log.debug("py-libp2p failed on a message from %s: %r", msg_forwarder, err)
            if remote:
                self.report(msg_forwarder.to_base58(), Malformed.FAILED)

    def _judged(self, forwarder: ID, msg: rpc_pb2.Message) -> bool:
        """Whether the topic's judge accepts the message; an accepted or rejected id is
        remembered (the same message again gets the same answer unjudged), an ignored one is
        judged again next time.

        py-libp2p's own validation step put the whole message into an exception's text each
        time it failed (a 33 KB mutation batch formatted for nothing: 7% of a peer's time
        under a flood) and kept its cache in a list it searched on every message."""
        msg_id = self._msg_id_constructor(msg)
        if self.rejected.holds(msg_id):
            return False
        if self.accepted.holds(msg_id):
            return True  # our own, published again (remote ones are seen by now)
        judge = self.judges.get(msg.topicIDs[0]) if msg.topicIDs else None
        verdict = Verdict.IGNORE if judge is None else judge(forwarder, msg)
        if verdict is not Verdict.IGNORE:
            (self.accepted if verdict is Verdict.ACCEPT else self.rejected).add(msg_id)
        return verdict is Verdict.ACCEPT

    def _signed(self, msg: rpc_pb2.Message) -> bool:
        """Whether the message's signature verifies; each envelope is verified once."""
        key = envelope_key(msg)
        verdict = self._signatures.get(key)
        if verdict is None:
            try:
                verdict = signature_validator(msg)
            except Exception:
                verdict = False
            self._signatures[key] = verdict
            if len(self._signatures) > ENVELOPES_KEPT:
                self._signatures.popitem(last=False)
        return verdict
