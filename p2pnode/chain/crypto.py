"""Ed25519 keys, domain-separated signatures over canonical statements, and key files."""

from __future__ import annotations

import contextlib
import os
import string
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing

from p2pnode.chain.types import KEY_SIZE, SIGNATURE_SIZE, Frame, ProverId, canonical

SEED_SIZE = 32
DOMAIN = "p2pnode/1"
"""Prefix of every signed statement: a signature made here means nothing to another protocol
(or to another version of this one), and the network id after it keeps networks apart."""


@dataclass(frozen=True, slots=True)
class Keypair:
    """An ed25519 key pair; the seed is the secret (kept out of repr)."""

    seed: bytes = field(repr=False)
    public: bytes
    _signer: nacl.signing.SigningKey = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_SIZE:
            raise ValueError(f"an ed25519 seed is {SEED_SIZE} bytes, not {len(self.seed)}")
        signer = nacl.signing.SigningKey(self.seed)
        # A mismatched public key would name a prover whose signatures this pair cannot make.
        if bytes(signer.verify_key) != self.public:
            raise ValueError("the public key does not belong to the seed")
        object.__setattr__(self, "_signer", signer)

    @classmethod
    def generate(cls) -> Keypair:
        return cls.from_seed(os.urandom(SEED_SIZE))

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an ed25519 seed is {SEED_SIZE} bytes, not {len(seed)}")
        return cls(seed, bytes(nacl.signing.SigningKey(seed).verify_key))

    @property
    def prover(self) -> ProverId:
        return ProverId(self.public)


def _signed_bytes(network: str, statement: list[object]) -> bytes:
    return canonical([DOMAIN, network, *statement])


def sign(keypair: Keypair, network: str, statement: list[object]) -> bytes:
    """The signature of `statement` in `network` (64 bytes)."""
    return keypair._signer.sign(_signed_bytes(network, statement)).signature


def verify(public: bytes, network: str, statement: list[object], signature: bytes) -> bool:
    """Whether `signature` is `public`'s signature of `statement` in `network`.

    Malformed keys or signatures are just invalid: the inputs come off the wire.
    """
    if not isinstance(public, bytes) or len(public) != KEY_SIZE:
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    message = _signed_bytes(network, statement)
    try:
        nacl.signing.VerifyKey(public).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        # CryptoError covers a forged signature and keys libsodium refuses (small order).
        return False
    return True


def frame_statement(frame: Frame) -> list[object]:
    return ["frame", *frame.fields(signed=False)]


def vote_statement(rank: int, attempt: int, frame_id: bytes) -> list[object]:
    return ["vote", rank, attempt, frame_id]


def precommit_statement(rank: int, attempt: int, frame_id: bytes) -> list[object]:
    return ["precommit", rank, attempt, frame_id]


def liveness_statement(rank: int, prover_key: bytes, root: bytes) -> list[object]:
    return ["liveness", rank, prover_key, root]


def final_statement(rank: int, attempt: int, frame_id: bytes) -> list[object]:
    return ["final", rank, attempt, frame_id]


def save_keypair(path: str | os.PathLike[str], keypair: Keypair) -> None:
    """Write the seed (hex) to a new file readable by its owner only.

    The file appears complete or not at all: the seed goes to a private temporary file first,
    which is then hard-linked to `path`; linking, unlike renaming, fails if `path` exists, so
    an existing key is never replaced (FileExistsError).
    """
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"key file {target} exists; refusing to overwrite it")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            # The umask may only have narrowed 0600; make the mode exact.
            os.fchmod(file.fileno(), 0o600)
            file.write(keypair.seed.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_directory(target.parent)


def _sync_directory(directory: Path) -> None:
    # Persist the new directory entry, so a crash right after saving does not lose the key.
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_keypair(path: str | os.PathLike[str]) -> Keypair:
    """Read a key file written by `save_keypair`; ValueError if it holds no seed."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError as err:
        raise ValueError(f"key file {path}: not a hex seed (non-ASCII content)") from err
    if len(text) != 2 * SEED_SIZE or not all(c in string.hexdigits for c in text):
        raise ValueError(
            f"key file {path}: expected {2 * SEED_SIZE} hex digits (an ed25519 seed), "
            f"found {len(text)} characters"
        )
    return Keypair.from_seed(bytes.fromhex(text))
