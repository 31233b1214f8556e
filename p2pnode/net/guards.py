"""py-libp2p's pubsub receive paths, guarded: remote input costs its sender, never the peer."""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
from collections.abc import Callable

from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

from p2pnode.net.contracts import MAX_PAYLOAD

log = logging.getLogger(__name__)

ED25519_ID_PREFIX = bytes.fromhex("002408011220")
"""An ed25519 peer id: identity multihash (0x00, 36 bytes) of the protobuf public key (type 1,
32 bytes of key). Every p2pnode peer id has this form; its key is inline, so a message's
`key` field is never needed."""
ED25519_ID_SIZE = len(ED25519_ID_PREFIX) + 32
SEQNO_SIZE = 8
SIGNATURE_SIZE = 64


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
    """

    report: Report = staticmethod(_no_report)

    async def continuously_read_stream(self, stream: INetStream) -> None:
        try:
            await super().continuously_read_stream(stream)
        except Exception as err:
            peer = stream.muxed_conn.peer_id
            log.warning("bad pubsub RPC from %s (%r): dropping its stream", peer, err)
            self.report(peer.to_base58(), Malformed.UNDECODABLE)
            with contextlib.suppress(Exception):
                await stream.reset()
            self._handle_dead_peer(peer)

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


class GuardedGossipSub(GossipSub):
    """GossipSub that never acts on peer exchange.

    py-libp2p dials the peers a PRUNE names whatever `do_px` says, and accepts them from any
    peer (its score threshold for PX is -inf): one PRUNE from a stranger would have us dial
    whoever it likes. Peers are found through bootstrap and signed announcements only.
    """

    async def handle_prune(self, prune_msg: rpc_pb2.ControlPrune, sender_peer_id: ID) -> None:
        if len(prune_msg.peers):
            log.debug("ignoring peer exchange from %s", sender_peer_id)
            del prune_msg.peers[:]
        await super().handle_prune(prune_msg, sender_peer_id)
