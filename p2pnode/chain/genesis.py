"""The genesis of a network: its id, its prover set and its proof difficulty."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.chain.types import (
    HASH_SIZE,
    Frame,
    ProverId,
    key_of_peer_id,
    mutations_root,
)
from p2pnode.consensus.rules import max_faults

NETWORK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
GENESIS_VERSION = 1
MAX_PROVERS = 64


class GenesisError(ValueError):
    """A genesis file that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Genesis:
    """What every peer of a network agrees on before the first frame."""

    network: str
    provers: tuple[ProverId, ...]
    """The prover set, ordered by public key: a certificate names signers by this order."""
    difficulty: int
    """VDF iterations a prover must perform per frame."""
    timestamp: int
    """Milliseconds since the epoch when the network was created."""

    def __post_init__(self) -> None:
        if not NETWORK_NAME.match(self.network):
            raise GenesisError(
                f"network name {self.network!r} must be 1-63 lowercase letters, digits or '-'"
            )
        if not 1 <= len(self.provers) <= MAX_PROVERS:
            raise GenesisError(f"a network needs 1 to {MAX_PROVERS} provers")
        keys = [p.key for p in self.provers]
        if keys != sorted(set(keys)):
            raise GenesisError("provers must be distinct and ordered by key")
        if not 1 <= self.difficulty <= 10_000_000:
            raise GenesisError("difficulty must be between 1 and 10000000 iterations")
        if self.timestamp < 0:
            raise GenesisError("timestamp must not be negative")

    @classmethod
    def create(
        cls, network: str, provers: list[ProverId], difficulty: int, timestamp: int
    ) -> Genesis:
        return cls(network, tuple(sorted(set(provers), key=lambda p: p.key)), difficulty, timestamp)

    @property
    def quorum(self) -> int:
        """Signatures a certificate needs: n - f."""
        return len(self.provers) - max_faults(len(self.provers))

    def index_of(self, key: bytes) -> int | None:
        for index, prover in enumerate(self.provers):
            if prover.key == key:
                return index
        return None

    def is_prover(self, key: bytes) -> bool:
        return self.index_of(key) is not None

    def frame(self) -> Frame:
        """Rank 0: the frame every chain of this network starts from."""
        return Frame(
            round=0,
            parent=bytes(HASH_SIZE),
            prover=bytes(32),
            timestamp=self.timestamp,
            root=mutations_root(()),
            mutations=(),
            difficulty=self.difficulty,
            output=self.hash(),
            proof=b"",
            signature=b"",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": GENESIS_VERSION,
            "network": self.network,
            "provers": [p.identity() for p in self.provers],
            "difficulty": self.difficulty,
            "timestamp": self.timestamp,
        }

    def to_bytes(self) -> bytes:
        """The canonical file content: sorted keys, no spaces, one trailing newline."""
        return (json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()

    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        try:
            document = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise GenesisError(f"genesis is not JSON: {err}") from None
        if not isinstance(document, dict):
            raise GenesisError("genesis must be a JSON object")
        expected = {"version", "network", "provers", "difficulty", "timestamp"}
        if set(document) != expected:
            raise GenesisError(f"genesis must have exactly the fields {sorted(expected)}")
        if document["version"] != GENESIS_VERSION:
            raise GenesisError(f"unsupported genesis version {document['version']!r}")
        provers = document["provers"]
        if not isinstance(provers, list) or not all(isinstance(p, str) for p in provers):
            raise GenesisError("provers must be a list of peer ids")
        try:
            keys = [ProverId(key_of_peer_id(p)) for p in provers]
        except ValueError as err:
            raise GenesisError(str(err)) from None
        for name in ("difficulty", "timestamp"):
            if not isinstance(document[name], int) or isinstance(document[name], bool):
                raise GenesisError(f"{name} must be an integer")
        if not isinstance(document["network"], str):
            raise GenesisError("network must be a string")
        return cls(document["network"], tuple(keys), document["difficulty"], document["timestamp"])

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            return cls.from_bytes(path.read_bytes())
        except OSError as err:
            raise GenesisError(f"cannot read {path}: {err.strerror}") from None

    def save(self, path: Path) -> None:
        path.write_bytes(self.to_bytes())


def leader_order(genesis: Genesis, prior: Frame) -> list[ProverId]:
    """The provers of the rank after `prior`, highest priority first: a permutation of the
    prover set seeded by the prior frame's id, so every peer computes the same order."""
    return sorted(genesis.provers, key=lambda p: hashlib.sha256(prior.id + p.key).digest())


def frame_challenge(
    genesis: Genesis, rank: int, parent: bytes, prover: bytes, root: bytes
) -> bytes:
    """The VDF challenge of a frame: bound to its network, place in the chain, prover and body."""
    material = b"".join([genesis.network.encode(), rank.to_bytes(8, "big"), parent, prover, root])
    return hashlib.sha256(material).digest()[:HASH_SIZE]
