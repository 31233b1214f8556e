"""Wire messages: canonical CBOR envelopes [version, kind, body] with a strict, bounded decoder."""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar, Literal, NoReturn, TypeAlias, overload

import cbor2

from p2pnode.chain.genesis import MAX_PROVERS
from p2pnode.chain.mempool import MAX_MUTATION_SIZE, MAX_MUTATIONS_PER_FRAME
from p2pnode.chain.types import (
    HASH_SIZE,
    KEY_SIZE,
    SIGNATURE_SIZE,
    Certificate,
    CertKind,
    Frame,
    Vote,
    canonical,
)
from p2pnode.chain.vdf import FORM_SIZE

VERSION = 1
MAX_MESSAGE_SIZE = 56 * 1024
"""A gossip message must fit one yamux frame (64 KiB with py-libp2p's RPC around it): py-libp2p
writes a longer one as several frames that a concurrent write on the stream can interleave."""
"""Checked before decoding: it bounds the decoder's work, and cbor2 reads a declared length in
chunks, so an absurd one fails at the end of the input instead of allocating."""
MAX_DEPTH = 6
"""Arrays nest at most this deep, the envelope being level 1. The deepest message needs all six:
envelope > SyncResponse body > frame list > frame > certificate > signer list."""
MAX_INT = 2**63 - 1
MAX_MUTATIONS = MAX_MUTATIONS_PER_FRAME
MAX_SIGNERS = MAX_PROVERS
MAX_SYNC_FRAMES = 64
MAX_TEXT = 256
MAX_ADDRS = 16
MAX_GENESIS_SIZE = 32 * 1024

FRAME_ARITY = 11
"""`Frame.fields(signed=True)` (ten fields) and the certificate or null."""


class CodecError(ValueError):
    """The bytes are not a valid message (or a message cannot be encoded)."""


class MessageKind(enum.IntEnum):
    LIVENESS = 1
    PROPOSAL = 2
    VOTE = 3
    CONFIRMATION = 4
    MUTATION = 5
    SYNC_REQUEST = 6
    SYNC_RESPONSE = 7
    STATUS = 8
    PEERS = 9
    GENESIS = 10


@dataclass(frozen=True, slots=True)
class Liveness:
    """A prover announces it is live for `rank`, with the root of the mutations it collected."""

    KIND: ClassVar[MessageKind] = MessageKind.LIVENESS
    rank: int
    prover: bytes
    root: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proven frame, without certificate."""

    KIND: ClassVar[MessageKind] = MessageKind.PROPOSAL
    frame: Frame


@dataclass(frozen=True, slots=True)
class VoteMsg:
    KIND: ClassVar[MessageKind] = MessageKind.VOTE
    vote: Vote


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A precommit: `sender` confirms `frame`, which carries the certificate that justifies it."""

    KIND: ClassVar[MessageKind] = MessageKind.CONFIRMATION
    frame: Frame
    sender: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class MutationMsg:
    KIND: ClassVar[MessageKind] = MessageKind.MUTATION
    data: bytes


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """Ask for up to `limit` finalized frames from rank `start` on."""

    KIND: ClassVar[MessageKind] = MessageKind.SYNC_REQUEST
    start: int
    limit: int


@dataclass(frozen=True, slots=True)
class SyncResponse:
    """Finalized frames, each with its commit certificate."""

    KIND: ClassVar[MessageKind] = MessageKind.SYNC_RESPONSE
    frames: tuple[Frame, ...]


@dataclass(frozen=True, slots=True)
class Status:
    KIND: ClassVar[MessageKind] = MessageKind.STATUS
    rank: int
    frame_id: bytes


@dataclass(frozen=True, slots=True)
class Peers:
    KIND: ClassVar[MessageKind] = MessageKind.PEERS
    peer_id: str
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GenesisMsg:
    """The raw bytes of a genesis file."""

    KIND: ClassVar[MessageKind] = MessageKind.GENESIS
    data: bytes


Message: TypeAlias = (
    Liveness
    | Proposal
    | VoteMsg
    | Confirmation
    | MutationMsg
    | SyncRequest
    | SyncResponse
    | Status
    | Peers
    | GenesisMsg
)


def message_id(data: bytes) -> bytes:
    """The gossip message id of a payload: one content has one encoding, hence one id."""
    return hashlib.sha256(data).digest()


# --- encoding -------------------------------------------------------------------------------


def _certificate_value(certificate: Certificate | None) -> object:
    if certificate is None:
        return None
    return [
        int(certificate.kind),
        certificate.attempt,
        list(certificate.signers),
        list(certificate.signatures),
    ]


def _frame_value(frame: Frame) -> list[object]:
    return [*frame.fields(signed=True), _certificate_value(frame.certificate)]


def _body_value(message: Message) -> list[object]:
    match message:
        case Liveness():
            return [message.rank, message.prover, message.root, message.signature]
        case Proposal():
            return [_frame_value(message.frame)]
        case VoteMsg():
            vote = message.vote
            return [
                vote.round,
                vote.attempt_no,
                vote.frame,
                vote.proposer,
                vote.voter,
                vote.signature,
            ]
        case Confirmation():
            return [_frame_value(message.frame), message.sender, message.signature]
        case MutationMsg():
            return [message.data]
        case SyncRequest():
            return [message.start, message.limit]
        case SyncResponse():
            return [[_frame_value(frame) for frame in message.frames]]
        case Status():
            return [message.rank, message.frame_id]
        case Peers():
            return [message.peer_id, list(message.addrs)]
        case GenesisMsg():
            return [message.data]


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


def _fail(message: str) -> NoReturn:
    raise CodecError(message)


def _uint(value: object, what: str) -> int:
    # `type(...) is int` also refuses bools, which Python counts as ints.
    if type(value) is not int or not 0 <= value <= MAX_INT:
        _fail(f"{what}: expected an integer in [0, 2**63)")
    return value


def _bytes(value: object, what: str, *, size: int | None = None, max_size: int = 0) -> bytes:
    if type(value) is not bytes:
        _fail(f"{what}: expected a byte string")
    if size is not None and len(value) != size:
        _fail(f"{what}: expected {size} bytes, got {len(value)}")
    if size is None and len(value) > max_size:
        _fail(f"{what}: {len(value)} bytes exceeds {max_size}")
    return value


def _text(value: object, what: str) -> str:
    if type(value) is not str:
        _fail(f"{what}: expected a text string")
    if len(value) > MAX_TEXT:
        _fail(f"{what}: {len(value)} characters exceeds {MAX_TEXT}")
    return value


def _array(value: object, what: str, *, arity: int | None = None, max_len: int = 0) -> list[object]:
    if type(value) is not list:
        _fail(f"{what}: expected an array")
    if arity is not None and len(value) != arity:
        _fail(f"{what}: expected {arity} elements, got {len(value)}")
    if arity is None and len(value) > max_len:
        _fail(f"{what}: {len(value)} elements exceeds {max_len}")
    return value


def _certificate(value: object, what: str) -> Certificate:
    kind, attempt, signers, signatures = _array(value, what, arity=4)
    kind_number = _uint(kind, f"{what}.kind")
    try:
        cert_kind = CertKind(kind_number)
    except ValueError:
        _fail(f"{what}.kind: unknown certificate kind {kind_number}")
    indices = tuple(
        _uint(index, f"{what}.signers")
        for index in _array(signers, f"{what}.signers", max_len=MAX_SIGNERS)
    )
    sigs = tuple(
        _bytes(signature, f"{what}.signatures", size=SIGNATURE_SIZE)
        for signature in _array(signatures, f"{what}.signatures", max_len=MAX_SIGNERS)
    )
    if not indices:
        _fail(f"{what}: no signers")
    if len(indices) != len(sigs):
        _fail(f"{what}: {len(indices)} signers but {len(sigs)} signatures")
    # One order per signer set, so one certificate has one encoding (and no signer counts twice).
    if any(a >= b for a, b in pairwise(indices)):
        _fail(f"{what}.signers: not strictly ascending")
    return Certificate(cert_kind, _uint(attempt, f"{what}.attempt"), indices, sigs)


def _frame(value: object, what: str) -> Frame:
    (
        round_,
        parent,
        prover,
        timestamp,
        root,
        mutations,
        difficulty,
        output,
        proof,
        signature,
        certificate,
    ) = _array(value, what, arity=FRAME_ARITY)
    items = _array(mutations, f"{what}.mutations", max_len=MAX_MUTATIONS)
    return Frame(
        round=_uint(round_, f"{what}.round"),
        parent=_bytes(parent, f"{what}.parent", size=HASH_SIZE),
        prover=_bytes(prover, f"{what}.prover", size=KEY_SIZE),
        timestamp=_uint(timestamp, f"{what}.timestamp"),
        root=_bytes(root, f"{what}.root", size=HASH_SIZE),
        mutations=tuple(
            _bytes(item, f"{what}.mutations", max_size=MAX_MUTATION_SIZE) for item in items
        ),
        difficulty=_uint(difficulty, f"{what}.difficulty"),
        output=_bytes(output, f"{what}.output", size=FORM_SIZE),
        proof=_bytes(proof, f"{what}.proof", size=FORM_SIZE),
        signature=_bytes(signature, f"{what}.signature", size=SIGNATURE_SIZE),
        certificate=None if certificate is None else _certificate(certificate, f"{what}.cert"),
    )


def _liveness(body: object) -> Liveness:
    rank, prover, root, signature = _array(body, "liveness", arity=4)
    return Liveness(
        _uint(rank, "liveness.rank"),
        _bytes(prover, "liveness.prover", size=KEY_SIZE),
        _bytes(root, "liveness.root", size=HASH_SIZE),
        _bytes(signature, "liveness.signature", size=SIGNATURE_SIZE),
    )


def _proposal(body: object) -> Proposal:
    (value,) = _array(body, "proposal", arity=1)
    frame = _frame(value, "proposal.frame")
    if frame.certificate is not None:
        _fail("proposal.frame: a proposal carries no certificate")
    return Proposal(frame)


def _vote(body: object) -> VoteMsg:
    round_, attempt, frame, proposer, voter, signature = _array(body, "vote", arity=6)
    return VoteMsg(
        Vote(
            round=_uint(round_, "vote.round"),
            attempt_no=_uint(attempt, "vote.attempt"),
            frame=_bytes(frame, "vote.frame", size=HASH_SIZE),
            proposer=_bytes(proposer, "vote.proposer", size=KEY_SIZE),
            voter=_bytes(voter, "vote.voter", size=KEY_SIZE),
            signature=_bytes(signature, "vote.signature", size=SIGNATURE_SIZE),
        )
    )


def _confirmation(body: object) -> Confirmation:
    value, sender, signature = _array(body, "confirmation", arity=3)
    frame = _frame(value, "confirmation.frame")
    if frame.certificate is None:
        _fail("confirmation.frame: a confirmation carries a certificate")
    return Confirmation(
        frame,
        _bytes(sender, "confirmation.sender", size=KEY_SIZE),
        _bytes(signature, "confirmation.signature", size=SIGNATURE_SIZE),
    )


def _mutation(body: object) -> MutationMsg:
    (data,) = _array(body, "mutation", arity=1)
    return MutationMsg(_bytes(data, "mutation.data", max_size=MAX_MUTATION_SIZE))


def _sync_request(body: object) -> SyncRequest:
    start, limit = _array(body, "sync_request", arity=2)
    count = _uint(limit, "sync_request.limit")
    # A request for more than one response can carry, or for nothing, is not a request.
    if not 1 <= count <= MAX_SYNC_FRAMES:
        _fail(f"sync_request.limit: {count} is not in [1, {MAX_SYNC_FRAMES}]")
    return SyncRequest(_uint(start, "sync_request.start"), count)


def _sync_response(body: object) -> SyncResponse:
    (values,) = _array(body, "sync_response", arity=1)
    frames = tuple(
        _frame(value, "sync_response.frame")
        for value in _array(values, "sync_response.frames", max_len=MAX_SYNC_FRAMES)
    )
    for frame in frames:
        if frame.certificate is None or frame.certificate.kind is not CertKind.COMMIT:
            _fail("sync_response.frame: a synced frame carries its commit certificate")
    return SyncResponse(frames)


def _status(body: object) -> Status:
    rank, frame_id = _array(body, "status", arity=2)
    return Status(_uint(rank, "status.rank"), _bytes(frame_id, "status.frame_id", size=HASH_SIZE))


def _peers(body: object) -> Peers:
    peer_id, addrs = _array(body, "peers", arity=2)
    return Peers(
        _text(peer_id, "peers.peer_id"),
        tuple(
            _text(addr, "peers.addrs") for addr in _array(addrs, "peers.addrs", max_len=MAX_ADDRS)
        ),
    )


def _genesis(body: object) -> GenesisMsg:
    (data,) = _array(body, "genesis", arity=1)
    return GenesisMsg(_bytes(data, "genesis.data", max_size=MAX_GENESIS_SIZE))


_DECODERS: dict[MessageKind, Callable[[object], Message]] = {
    MessageKind.LIVENESS: _liveness,
    MessageKind.PROPOSAL: _proposal,
    MessageKind.VOTE: _vote,
    MessageKind.CONFIRMATION: _confirmation,
    MessageKind.MUTATION: _mutation,
    MessageKind.SYNC_REQUEST: _sync_request,
    MessageKind.SYNC_RESPONSE: _sync_response,
    MessageKind.STATUS: _status,
    MessageKind.PEERS: _peers,
    MessageKind.GENESIS: _genesis,
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
        _fail("a payload is a byte string")
    if len(data) > MAX_MESSAGE_SIZE:
        _fail(f"payload of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
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
def decode(data: bytes, expected: Literal[MessageKind.STATUS]) -> Status: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.PEERS]) -> Peers: ...
@overload
def decode(data: bytes, expected: Literal[MessageKind.GENESIS]) -> GenesisMsg: ...
@overload
def decode(data: bytes, expected: MessageKind | None = None) -> Message: ...


def decode(data: bytes, expected: MessageKind | None = None) -> Message:
    """The message `data` encodes; CodecError (and nothing else) for anything but the canonical
    encoding of a valid message (of kind `expected`, if given)."""
    value = _parse(data)
    version, kind_number, body = _array(value, "envelope", arity=3)
    if type(version) is not int or version != VERSION:
        _fail(f"envelope.version: expected {VERSION}")
    number = _uint(kind_number, "envelope.kind")
    try:
        kind = MessageKind(number)
    except ValueError:
        _fail(f"envelope.kind: unknown message kind {number}")
    if expected is not None and kind is not expected:
        _fail(f"envelope.kind: expected {expected.name}, got {kind.name}")
    message = _DECODERS[kind](body)
    _require_canonical(value, data)
    return message


def _require_canonical(value: object, data: bytes) -> None:
    # Called once `value` is fully checked: only ints, byte and text strings, arrays and null
    # remain, so re-encoding cannot fail. Comparing refuses every other encoding of the same
    # content (long-form lengths, trailing bytes, ...), so one content has one byte string.
    if canonical(value) != data:
        _fail("not the canonical encoding")


# --- bare records, for storage and sync streams ---------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """A frame with its certificate (or null), encoded as inside messages."""
    value = _frame_value(frame)
    _frame(value, "frame")
    return canonical(value)


def decode_frame(data: bytes) -> Frame:
    """The frame `encode_frame` made `data` from; CodecError (only) for anything else."""
    value = _parse(data)
    frame = _frame(value, "frame")
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
