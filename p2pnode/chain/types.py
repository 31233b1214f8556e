"""The application's records: provers, mutations, frames, votes and certificates."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field, replace

import base58
import cbor2

HASH_SIZE = 32
KEY_SIZE = 32
SIGNATURE_SIZE = 64

# libp2p encodes an ed25519 public key as protobuf {Type: Ed25519, Data: key} and, being short,
# puts it in an identity multihash: that is the peer id, base58btc encoded ("12D3KooW...").
_ED25519_PROTOBUF_PREFIX = bytes([0x08, 0x01, 0x12, KEY_SIZE])
_IDENTITY_MULTIHASH = bytes([0x00, len(_ED25519_PROTOBUF_PREFIX) + KEY_SIZE])


def canonical(value: object) -> bytes:
    """The one CBOR encoding of `value` (RFC 8949 core deterministic encoding)."""
    return cbor2.dumps(value, canonical=True)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def peer_id_text(key: bytes) -> str:
    """The libp2p peer id of an ed25519 public key."""
    return base58.b58encode(_IDENTITY_MULTIHASH + _ED25519_PROTOBUF_PREFIX + key).decode()


def key_of_peer_id(text: str) -> bytes:
    """The ed25519 public key inside a peer id; ValueError if it holds none."""
    try:
        raw = base58.b58decode(text)
    except ValueError as err:
        raise ValueError(f"not a peer id: {text!r}") from err
    prefix = _IDENTITY_MULTIHASH + _ED25519_PROTOBUF_PREFIX
    if len(raw) != len(prefix) + KEY_SIZE or not raw.startswith(prefix):
        raise ValueError(f"not an ed25519 peer id: {text!r}")
    return raw[len(prefix) :]


@dataclass(frozen=True, slots=True)
class ProverId:
    """A peer's identity: its ed25519 public key; `identity()` is its libp2p peer id."""

    key: bytes
    _text: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_text", peer_id_text(self.key))

    def identity(self) -> str:
        return self._text

    def rank(self) -> int:
        return 0

    def clone(self) -> ProverId:
        return self

    def __str__(self) -> str:
        return self._text


def mutations_root(mutations: tuple[bytes, ...]) -> bytes:
    """Root hash of an ordered list of mutations."""
    return digest(canonical([digest(m) for m in mutations]))


@dataclass(frozen=True, slots=True)
class Collected:
    """The mutations a prover collected for a rank (a received announcement carries the root)."""

    round: int
    root: bytes
    mutations: tuple[bytes, ...] = ()

    @classmethod
    def of(cls, rank: int, mutations: tuple[bytes, ...]) -> Collected:
        return cls(rank, mutations_root(mutations), mutations)

    def identity(self) -> str:
        return self.root.hex()

    def rank(self) -> int:
        return self.round

    def clone(self) -> Collected:
        return self


class CertKind(enum.IntEnum):
    VOTES = 1
    """A quorum voted for the frame in one attempt (carried by a precommit confirmation)."""
    COMMIT = 2
    """A quorum confirmed the frame in one attempt: the frame is final."""


@dataclass(frozen=True, slots=True)
class Certificate:
    """Signatures of a quorum of provers (by index in the prover set) on one statement."""

    kind: CertKind
    attempt: int
    signers: tuple[int, ...]
    signatures: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Frame:
    """One rank of the log: it extends `parent`, holds the prover's mutations, a proof of the
    prover's work (a VDF) and the prover's signature; it may carry a certificate.

    Its identity is the hash of its canonical encoding without the certificate, so a frame with
    or without a certificate is the same frame.
    """

    round: int
    parent: bytes
    prover: bytes
    timestamp: int
    """Milliseconds since the epoch, by the prover's clock."""
    root: bytes
    mutations: tuple[bytes, ...]
    difficulty: int
    output: bytes
    proof: bytes
    signature: bytes
    certificate: Certificate | None = field(default=None, compare=False)
    _id: bytes = field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id", digest(canonical(self.fields(signed=True))))

    def fields(self, *, signed: bool) -> list[object]:
        """The canonical field list: what the prover signs, or (signed) what names the frame."""
        body: list[object] = [
            self.round,
            self.parent,
            self.prover,
            self.timestamp,
            self.root,
            list(self.mutations),
            self.difficulty,
            self.output,
            self.proof,
        ]
        return [*body, self.signature] if signed else body

    @property
    def id(self) -> bytes:
        return self._id

    def identity(self) -> str:
        return self._id.hex()

    def rank(self) -> int:
        return self.round

    def clone(self) -> Frame:
        return self

    @property
    def attempt(self) -> int:
        """The attempt its certificate is from (0 without one)."""
        return self.certificate.attempt if self.certificate is not None else 0

    def bare(self) -> Frame:
        return replace(self, certificate=None) if self.certificate is not None else self

    def with_certificate(self, certificate: Certificate) -> Frame:
        return replace(self, certificate=certificate)


@dataclass(frozen=True, slots=True)
class Vote:
    """A prover's vote for a frame in one attempt of a rank; equal votes say the same thing."""

    round: int
    attempt: int
    frame: bytes
    proposer: bytes
    voter: bytes
    signature: bytes = field(compare=False)

    def identity(self) -> str:
        return digest(canonical(self.statement())).hex()

    def rank(self) -> int:
        return self.round

    def clone(self) -> Vote:
        return self

    def statement(self) -> list[object]:
        return ["vote", self.round, self.attempt, self.frame]
