"""py-libp2p's pubsub receive paths, guarded: remote input costs its sender, never the peer."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import importlib.metadata
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from libp2p.abc import INetStream
from libp2p.exceptions import ParseError
from libp2p.io.exceptions import IOException, MessageTooLarge
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.utils.varint import read_varint_prefixed_bytes_limited

from p2pnode.net.contracts import MAX_PAYLOAD

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
MAX_IWANT = 64
"""Message ids answered per IWANT: py-libp2p answered every id, repeats included, so 4,000
copies of one id in a 192 KB request came back as 4,000 copies of the message."""
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
    FAILED = "py-libp2p failed on it"


Report = Callable[[str, Malformed], None]
"""(the remote peer that sent it, why): counted and held against the sender."""


def _no_report(peer: str, reason: Malformed) -> None:
    """The default until the network installs its own."""


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


class GuardedPubsub(Pubsub):
    """Pubsub whose stream reader and message task drop what they cannot handle.

    An exception in either ends py-libp2p's pubsub service (and with it the peer): the
    reader's escapes the connection task, the message task's stops the service's manager.
    The reader is our own: py-libp2p's also stores the signed peer record an RPC may carry
    (addresses kept for two hours, whoever sends them, checked on every RPC); peers are found
    through bootstrap and our own signed announcements instead.
    """

    report: Report = staticmethod(_no_report)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_libp2p_version()
        super().__init__(*args, **kwargs)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            while self.manager.is_running:
                data = await read_varint_prefixed_bytes_limited(stream, self.max_inbound_rpc_size)
                rpc = rpc_pb2.RPC()
                rpc.ParseFromString(data)
                await self._handle_rpc(peer, rpc)
        except Exception as err:
            if isinstance(err, _CLOSED) and not isinstance(err, _BAD_FRAMING):
                log.debug("pubsub stream of %s ended: %r", peer, err)
                return
            log.warning("bad pubsub RPC from %s (%r): dropping its stream", peer, err)
            self.report(peer.to_base58(), Malformed.UNDECODABLE)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer)

    async def _handle_rpc(self, peer: ID, rpc: rpc_pb2.RPC) -> None:
        for msg in rpc.publish:
            if self._is_subscribed_to_msg(msg) and self.manager.is_running:
                self.manager.run_task(self.push_msg, peer, msg)
        if len(rpc.subscriptions) > self.max_subscriptions_per_rpc:
            log.debug("%s sent %d subscriptions: ignored", peer, len(rpc.subscriptions))
        else:
            for subscription in rpc.subscriptions:
                self.handle_subscription(peer, subscription)
        if rpc.HasField("control"):
            await self.router.handle_rpc(rpc, peer)

    async def push_msg(self, msg_forwarder: ID, msg: rpc_pb2.Message) -> None:
        if msg_forwarder != self.my_id:
            reason = well_formed(msg)
            if reason is not None:
                log.debug("malformed message from %s: %s", msg_forwarder, reason.value)
                self.report(msg_forwarder.to_base58(), reason)
                return
        try:
            await super().push_msg(msg_forwarder, msg)
        except Exception as err:
            log.warning("py-libp2p failed on a message from %s: %r", msg_forwarder, err)
            if msg_forwarder != self.my_id:
                self.report(msg_forwarder.to_base58(), Malformed.FAILED)


def bounded_iwant(iwant: rpc_pb2.ControlIWant) -> rpc_pb2.ControlIWant:
    """The request's distinct ids, at most MAX_IWANT of them."""
    distinct = list(dict.fromkeys(iwant.messageIDs))[:MAX_IWANT]
    return rpc_pb2.ControlIWant(messageIDs=distinct)


class GuardedGossipSub(GossipSub):
    """GossipSub that keeps control state for our topics only and never acts on peer exchange.

    py-libp2p records a backoff for every topic a PRUNE names and scores every topic a GRAFT
    names, ours or not, and keeps them after the sender leaves: made-up topic names grew
    memory without bound. It dials the peers a PRUNE names whatever `do_px` says, from any
    peer (its score threshold for PX is -inf): peers are found through bootstrap and signed
    announcements only. We speak gossipsub v1.1, so IDONTWANT and v1.3 messages are dropped.
    """

    topics: frozenset[str] = frozenset()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_libp2p_version()
        super().__init__(*args, **kwargs)

    def _perform_opportunistic_grafting(
        self, topic: str, peers_to_graft: defaultdict[ID, list[str]]
    ) -> int:
        """Never graft beyond D_low on a heartbeat.

        py-libp2p grafts up to two more peers per topic on every heartbeat whenever their score
        reaches the mesh median (go-libp2p: every 60 heartbeats, and only when the median is
        low). A sparse mesh is never pruned (D_high >= N-1), so at 16 provers every mesh filled
        to all 15 others within seconds, and every peer received each message 15 times. The
        prover set is known and every connection gated, so the score has nothing to add here.
        """
        return 0

    async def handle_rpc(self, rpc: rpc_pb2.RPC, sender_peer_id: ID) -> None:
        control, ours = rpc.control, self.topics
        for ihave in control.ihave:
            if ihave.topicID in ours:
                await self.handle_ihave(ihave, sender_peer_id)
        for iwant in control.iwant:
            await self.handle_iwant(bounded_iwant(iwant), sender_peer_id)
        for graft in control.graft:
            if graft.topicID in ours:
                await self.handle_graft(graft, sender_peer_id)
        for prune in control.prune:
            if prune.topicID in ours:
                await self.handle_prune(prune, sender_peer_id)

    async def handle_prune(self, prune_msg: rpc_pb2.ControlPrune, sender_peer_id: ID) -> None:
        if len(prune_msg.peers):
            log.debug("ignoring peer exchange from %s", sender_peer_id)
            del prune_msg.peers[:]
        await super().handle_prune(prune_msg, sender_peer_id)
