"""Wire messages: canonical CBOR envelopes [version, kind, body] with a strict, bounded decoder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal, NoReturn, overload

import cbor2

from p2pnode.chain.mempool import MAX_FRAME_MUTATION_BYTES, MAX_MUTATION_SIZE, mutation_bytes
from p2pnode.chain.messages import (
    Confirmation,
    Liveness,
    Message,
    MessageKind,
    MutationMsg,
    Peers,
    Proposal,
    SyncRequest,
    SyncResponse,
    VoteMsg,
)
from p2pnode.chain.types import (
    HASH_SIZE,
    KEY_SIZE,
    SIGNATURE_SIZE,
    CertKind,
    Frame,
    Vote,
    canonical,
)
from p2pnode.wire import fields
from p2pnode.wire.fields import MAX_MUTATIONS, MAX_SIGNERS, MAX_TEXT, CodecError

# The records are re-exported: a user of the wire format needs them with encode and decode.
__all__ = [
    "MAX_ADDRS",
    "MAX_DEPTH",
    "MAX_MESSAGE_SIZE",
    "MAX_MUTATIONS",
    "MAX_SIGNERS",
    "MAX_SYNC_FRAMES",
    "MAX_TEXT",
    "VERSION",
    "CodecError",
    "Confirmation",
    "Liveness",
    "Message",
    "MessageKind",
    "MutationMsg",
    "Peers",
    "Proposal",
    "SyncRequest",
    "SyncResponse",
    "VoteMsg",
    "decode",
    "decode_frame",
    "decode_vote",
    "encode",
    "encode_frame",
    "encode_vote",
    "message_id",
]

VERSION = 1
MAX_MESSAGE_SIZE = 56 * 1024
"""A gossip message must fit one yamux frame (64 KiB with py-libp2p's RPC around it): py-libp2p
writes a longer one as several frames that a concurrent write on the stream can interleave."""
"""Checked before decoding: it bounds the decoder's work, and cbor2 reads a declared length in
chunks, so an absurd one fails at the end of the input instead of allocating."""
MAX_DEPTH = 6
"""Arrays nest at most this deep, the envelope being level 1. The deepest message needs all six:
envelope > SyncResponse body > frame list > frame > certificate > signer list."""
MAX_SYNC_FRAMES = 64
MAX_ADDRS = 16


def message_id(data: bytes) -> bytes:
    """The gossip message id of a payload: one content has one encoding, hence one id."""
    return hashlib.sha256(data).digest()


# --- encoding -------------------------------------------------------------------------------


def _body_value(message: Message) -> list[object]:
    match message:
        case Liveness():
            return [message.rank, message.prover, message.root, message.signature]
        case Proposal():
            return [fields.frame_value(message.frame)]
        case VoteMsg():
            vote = message.vote
            return [
                vote.round,
                vote.attempt,
                vote.frame,
                vote.proposer,
                vote.voter,
                vote.signature,
            ]
        case Confirmation():
            return [fields.frame_value(message.frame), message.sender, message.signature]
        case MutationMsg():
            return [list(message.mutations)]
        case SyncRequest():
            return [message.start, message.limit]
        case SyncResponse():
            return [[fields.frame_value(frame) for frame in message.frames]]
        case Peers():
            return [message.peer_id, list(message.addrs)]


def encode(message: Message) -> bytes:
    """The canonical encoding of `message`; CodecError if a peer's decoder would refuse it."""
    kind = message.KIND
    body = _body_value(message)
    # Run the decoder's checks on what we are about to send: never emit what peers reject.
    _DECODERS[kind](body)
    data = canonical([VERSION, int(kind), body])
    if len(data) > MAX_MESSAGE_SIZE:
        raise CodecError(f"{kind.name} message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return data


# --- decoding -------------------------------------------------------------------------------


def _liveness(body: object) -> Liveness:
    rank, prover, root, signature = fields.array(body, "liveness", arity=4)
    return Liveness(
        fields.uint(rank, "liveness.rank"),
        fields.byte_string(prover, "liveness.prover", size=KEY_SIZE),
        fields.byte_string(root, "liveness.root", size=HASH_SIZE),
        fields.byte_string(signature, "liveness.signature", size=SIGNATURE_SIZE),
    )


def _proposal(body: object) -> Proposal:
    (value,) = fields.array(body, "proposal", arity=1)
    frame = fields.frame(value, "proposal.frame")
    if frame.certificate is not None:
        fields.fail("proposal.frame: a proposal carries no certificate")
    return Proposal(frame)


def _vote(body: object) -> VoteMsg:
    round_, attempt, frame, proposer, voter, signature = fields.array(body, "vote", arity=6)
    return VoteMsg(
        Vote(
            round=fields.uint(round_, "vote.round"),
            attempt=fields.uint(attempt, "vote.attempt"),
            frame=fields.byte_string(frame, "vote.frame", size=HASH_SIZE),
            proposer=fields.byte_string(proposer, "vote.proposer", size=KEY_SIZE),
            voter=fields.byte_string(voter, "vote.voter", size=KEY_SIZE),
            signature=fields.byte_string(signature, "vote.signature", size=SIGNATURE_SIZE),
        )
    )


def _confirmation(body: object) -> Confirmation:
    value, sender, signature = fields.array(body, "confirmation", arity=3)
    frame = fields.frame(value, "confirmation.frame")
    if frame.certificate is None:
        fields.fail("confirmation.frame: a confirmation carries a certificate")
    return Confirmation(
        frame,
        fields.byte_string(sender, "confirmation.sender", size=KEY_SIZE),
        fields.byte_string(signature, "confirmation.signature", size=SIGNATURE_SIZE),
    )


def _mutation(body: object) -> MutationMsg:
    (items,) = fields.array(body, "mutation", arity=1)
    batch = fields.array(items, "mutation.mutations", max_len=MAX_MUTATIONS)
    if not batch:
        fields.fail("mutation.mutations: an empty batch")
    mutations = tuple(
        fields.byte_string(item, "mutation.mutations", max_size=MAX_MUTATION_SIZE) for item in batch
    )
    if mutation_bytes(mutations) > MAX_FRAME_MUTATION_BYTES:
        fields.fail(f"mutation.mutations: more than {MAX_FRAME_MUTATION_BYTES} bytes")
    return MutationMsg(mutations)


def _sync_request(body: object) -> SyncRequest:
    start, limit = fields.array(body, "sync_request", arity=2)
    count = fields.uint(limit, "sync_request.limit")
    # A request for more than one response can carry, or for nothing, is not a request.
    if not 1 <= count <= MAX_SYNC_FRAMES:
        fields.fail(f"sync_request.limit: {count} is not in [1, {MAX_SYNC_FRAMES}]")
    return SyncRequest(fields.uint(start, "sync_request.start"), count)


def _sync_response(body: object) -> SyncResponse:
    (values,) = fields.array(body, "sync_response", arity=1)
    frames = tuple(
        fields.frame(value, "sync_response.frame")
        for value in fields.array(values, "sync_response.frames", max_len=MAX_SYNC_FRAMES)
    )
    for frame in frames:
        if frame.certificate is None or frame.certificate.kind is not CertKind.COMMIT:
            fields.fail("sync_response.frame: a synced frame carries its commit certificate")
    return SyncResponse(frames)


def _peers(body: object) -> Peers:
    peer_id, addrs = fields.array(body, "peers", arity=2)
    return Peers(
        fields.text(peer_id, "peers.peer_id"),
        tuple(
            fields.text(addr, "peers.addrs")
            for addr in fields.array(addrs, "peers.addrs", max_len=MAX_ADDRS)
        ),
    )


_DECODERS: dict[MessageKind, Callable[[object], Message]] = {
    MessageKind.LIVENESS: _liveness,
    MessageKind.PROPOSAL: _proposal,
    MessageKind.VOTE: _vote,
    MessageKind.CONFIRMATION: _confirmation,
    MessageKind.MUTATION: _mutation,
    MessageKind.SYNC_REQUEST: _sync_request,
    MessageKind.SYNC_RESPONSE: _sync_response,
    MessageKind.PEERS: _peers,
}


def _refuse_tag(tag: cbor2.CBORTag, immutable: bool) -> NoReturn:
    raise CodecError(f"CBOR tag {tag.tag} is not allowed")


def _refuse_semantic(value: object, immutable: bool) -> NoReturn:
    raise CodecError("CBOR tags are not allowed")


# cbor2 decodes these tags itself (dates, bignums, shared references, sets...) without asking
# the tag hook; overriding each one makes every tag an error. (Found by decoding every tag up
# to 70000 with a raising hook; the canonical comparison would catch a tag missed here too.)
_BUILTIN_TAGS = (*range(6), 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004)
_REFUSING_DECODERS = dict.fromkeys((*_BUILTIN_TAGS, 43000, 55799), _refuse_semantic)


def _parse(data: bytes) -> object:
    if type(data) is not bytes:
        fields.fail("a payload is a byte string")
    if len(data) > MAX_MESSAGE_SIZE:
        fields.fail(f"payload of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        return cbor2.loads(
            data,
            tag_hook=_refuse_tag,
            semantic_decoders=_REFUSING_DECODERS,
            max_depth=MAX_DEPTH,
            allow_indefinite=False,
        )
    except Exception as err:
        # Hostile bytes reach a native decoder: whatever it raises (its own errors, EOF,
        # overflow, recursion, memory) means only that the payload is malformed.
        raise CodecError(f"malformed CBOR: {err}") from err


# The literal overloads type `decode(data, MessageKind.VOTE)` as a VoteMsg for callers.
@overload
def decode(data: bytes, expected: Literal[MessageKind.LIVENESS]) -> Liveness: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.PROPOSAL]) -> Proposal: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.VOTE]) -> VoteMsg: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.CONFIRMATION]) -> Confirmation: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.MUTATION]) -> MutationMsg: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.SYNC_REQUEST]) -> SyncRequest: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.SYNC_RESPONSE]) -> SyncResponse: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.PEERS]) -> Peers: ...
@overload
def decode(data: bytes, expected: MessageKind | None = None) -> Message: ...


def decode(data: bytes, expected: MessageKind | None = None) -> Message:
    """The message `data` encodes; CodecError (and nothing else) for anything but the canonical
    encoding of a valid message (of kind `expected`, if given)."""
    value = _parse(data)
    version, kind_number, body = fields.array(value, "envelope", arity=3)
    if type(version) is not int or version != VERSION:
        fields.fail(f"envelope.version: expected {VERSION}")
    number = fields.uint(kind_number, "envelope.kind")
    try:
        kind = MessageKind(number)
    except ValueError:
        fields.fail(f"envelope.kind: unknown message kind {number}")
    if expected is not None and kind is not expected:
        fields.fail(f"envelope.kind: expected {expected.name}, got {kind.name}")
    message = _DECODERS[kind](body)
    _require_canonical(value, data)
    return message


def _require_canonical(value: object, data: bytes) -> None:
    # Called once `value` is fully checked: only ints, byte and text strings, arrays and null
    # remain, so re-encoding cannot fail. Comparing refuses every other encoding of the same
    # content (long-form lengths, trailing bytes, ...), so one content has one byte string.
    if canonical(value) != data:
        fields.fail("not the canonical encoding")


# --- bare records, for storage and sync streams ---------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """A frame with its certificate (or null), encoded as inside messages."""
    value = fields.frame_value(frame)
    fields.frame(value, "frame")
    return canonical(value)


def decode_frame(data: bytes) -> Frame:
    """The frame `encode_frame` made `data` from; CodecError (only) for anything else."""
    value = _parse(data)
    frame = fields.frame(value, "frame")
    _require_canonical(value, data)
    return frame


def encode_vote(vote: Vote) -> bytes:
    """A vote, encoded as the body of a vote message."""
    value = _body_value(VoteMsg(vote))
    _vote(value)
    return canonical(value)


def decode_vote(data: bytes) -> Vote:
    """The vote `encode_vote` made `data` from; CodecError (only) for anything else."""
    value = _parse(data)
    vote = _vote(value).vote
    _require_canonical(value, data)
    return vote
