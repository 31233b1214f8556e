"""The genesis of a network: its id, its prover set and its proof difficulty."""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.chain import vdf
from p2pnode.chain.types import (
    HASH_SIZE,
    Frame,
    ProverId,
    key_of_peer_id,
    mutations_root,
)
from p2pnode.consensus import leaders
from p2pnode.consensus.rules import max_faults

NETWORK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
GENESIS_VERSION = 1
MAX_PROVERS = 64
MAX_GENESIS_SIZE = 64 * 1024
"""Bytes a genesis may take, fetched or read from a file: 64 provers need under 4 KiB."""
MAX_TIMESTAMP = 2**63 - 1
"""The codec's largest integer: a frame's timestamp must encode."""
DEFAULT_DIFFICULTY = 1000
"""VDF iterations per frame of a new network unless its creator says otherwise."""
VDF_BITS = vdf.BITS
"""The proof sizes a genesis may choose: the bits of each proof's class-group discriminant."""
DEFAULT_VDF_BITS = vdf.DISCRIMINANT_BITS
_PEER_ID_MAX = 64  # an ed25519 peer id is 52 base58 characters; longer ones are not decoded
_FIELDS = frozenset({"version", "network", "provers", "difficulty", "timestamp"})
_OPTIONAL = frozenset({"vdf_bits"})
"""Written only when not the default, so the genesis of a network made before it had the
field keeps its bytes and its hash."""


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
    vdf_bits: int = DEFAULT_VDF_BITS
    """Size of each proof's discriminant (see `VDF_BITS`)."""

    def __post_init__(self) -> None:
        if not NETWORK_NAME.fullmatch(self.network):
            raise GenesisError(
                f"network name {_brief(self.network)} must be 1-63 lowercase letters, digits or '-'"
            )
        if not 1 <= len(self.provers) <= MAX_PROVERS:
            raise GenesisError(f"a network needs 1 to {MAX_PROVERS} provers")
        keys = [p.key for p in self.provers]
        if keys != sorted(set(keys)):
            raise GenesisError("provers must be distinct and ordered by key")
        if not 1 <= self.difficulty <= 10_000_000:
            raise GenesisError("difficulty must be between 1 and 10000000 iterations")
        if type(self.vdf_bits) is not int or self.vdf_bits not in VDF_BITS:
            raise GenesisError(f"vdf_bits must be one of {', '.join(map(str, VDF_BITS))}")
        if self.timestamp < 0:
            raise GenesisError("timestamp must not be negative")
        if self.timestamp > MAX_TIMESTAMP:
            raise GenesisError("timestamp must be below 2**63 milliseconds")

    @classmethod
    def create(
        cls,
        network: str,
        provers: list[ProverId],
        difficulty: int,
        timestamp: int,
        vdf_bits: int = DEFAULT_VDF_BITS,
    ) -> Genesis:
        ordered = tuple(sorted(set(provers), key=lambda p: p.key))
        return cls(network, ordered, difficulty, timestamp, vdf_bits)

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
        document: dict[str, Any] = {
            "version": GENESIS_VERSION,
            "network": self.network,
            "provers": [p.identity() for p in self.provers],
            "difficulty": self.difficulty,
            "timestamp": self.timestamp,
        }
        if self.vdf_bits != DEFAULT_VDF_BITS:
            document["vdf_bits"] = self.vdf_bits
        return document

    def to_bytes(self) -> bytes:
        """The canonical file content: sorted keys, no spaces, one trailing newline."""
        return (json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()

    def hash(self) -> bytes:
        return hashlib.sha256(self.to_bytes()).digest()

    @classmethod
    def from_bytes(cls, data: bytes) -> Genesis:
        """A genesis from untrusted bytes: whatever they hold, the only error is GenesisError."""
        document = _document(data)
        provers = document["provers"]
        if not isinstance(provers, list) or not all(isinstance(p, str) for p in provers):
            raise GenesisError("provers must be a list of peer ids")
        if not 1 <= len(provers) <= MAX_PROVERS:  # before decoding thousands of them
            raise GenesisError(f"a network needs 1 to {MAX_PROVERS} provers")
        keys = tuple(_prover(p) for p in provers)
        document.setdefault("vdf_bits", DEFAULT_VDF_BITS)
        for name in ("difficulty", "timestamp", "vdf_bits"):
            if not isinstance(document[name], int) or isinstance(document[name], bool):
                raise GenesisError(f"{name} must be an integer")
        if not isinstance(document["network"], str):
            raise GenesisError("network must be a string")
        return cls(
            document["network"],
            keys,
            document["difficulty"],
            document["timestamp"],
            document["vdf_bits"],
        )

    @classmethod
    def load(cls, path: Path) -> Genesis:
        try:
            with path.open("rb") as file:
                data = file.read(MAX_GENESIS_SIZE + 1)  # enough to tell it is too large
        except OSError as err:
            raise GenesisError(f"cannot read {path}: {err.strerror}") from None
        try:
            return cls.from_bytes(data)
        except GenesisError as err:
            raise GenesisError(f"{path}: {err}") from None

    def save(self, path: Path) -> None:
        """Written whole or not at all: a half-written genesis would stop the next start."""
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(self.to_bytes())
        os.replace(partial, path)


def check_pin(genesis: Genesis, pin: str | None, source: str) -> None:
    """Refuse a genesis whose sha256 is not the one the operator pinned; no pin takes any."""
    got = genesis.hash().hex()
    if pin is not None and got != pin.lower():
        raise GenesisError(f"the genesis {source} has sha256 {got}, not the pinned {pin.lower()}")


def _document(data: bytes) -> dict[str, Any]:
    """The genesis JSON object with exactly its fields, of a supported version."""
    if len(data) > MAX_GENESIS_SIZE:
        raise GenesisError(f"genesis exceeds {MAX_GENESIS_SIZE} bytes")
    try:
        document = json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise GenesisError("genesis is nested too deeply to be a genesis") from None
    except GenesisError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GenesisError(f"genesis is not JSON: {err}") from None
    except ValueError:  # an integer beyond Python's int-string conversion limit
        raise GenesisError("genesis holds a number too long to read") from None
    if not isinstance(document, dict):
        raise GenesisError("genesis must be a JSON object")
    if not _FIELDS <= set(document) <= _FIELDS | _OPTIONAL:
        raise GenesisError(
            f"genesis must have the fields {sorted(_FIELDS)}, and may have {sorted(_OPTIONAL)}"
        )
    version = document["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version != GENESIS_VERSION:
        raise GenesisError(f"unsupported genesis version {_brief(version)}")
    return document


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a repeated key is refused, as two readers could keep different values."""
    document = dict(pairs)
    if len(document) != len(pairs):
        raise GenesisError("genesis repeats a key in an object")
    return document


def _prover(text: str) -> ProverId:
    if len(text) > _PEER_ID_MAX:
        raise GenesisError(f"not a peer id: {_brief(text)}")
    try:
        return ProverId(key_of_peer_id(text))
    except ValueError as err:
        raise GenesisError(str(err)) from None


def _brief(value: object) -> str:
    """A value for an error line: short, and never the repr of a deep structure."""
    if isinstance(value, int) and value.bit_length() > 64:
        return "a very large number"  # its repr could exceed the int-string limit
    if isinstance(value, int | float | str) or value is None:
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return f"of type {type(value).__name__}"


def leader_order(
    genesis: Genesis, rank: int, frame_at: Callable[[int], Frame | None]
) -> list[ProverId]:
    """The provers of `rank`, highest priority first, by the engine's rule
    (`consensus.leaders`): the genesis prover set sorted by key and rotated by the rank, with
    the place lost by a prover that did not win its latest turn; `frame_at` reads the final
    frames that say who won."""
    return LeaderOrder(genesis, frame_at)(rank)


class LeaderOrder:
    """`leader_order` for one chain, remembering who won each rank it read (a final frame
    never changes), so a rank's order decodes at most the one frame it has not seen yet."""

    def __init__(self, genesis: Genesis, frame_at: Callable[[int], Frame | None]) -> None:
        self._by_name = {prover.key.hex(): prover for prover in genesis.provers}
        self._names = sorted(self._by_name)
        self._frame_at = frame_at
        self._winners: dict[int, str] = {}

    def __call__(self, rank: int) -> list[ProverId]:
        order = leaders.leader_order(self._names, rank, self._winner)
        return [self._by_name[name] for name in order]

    def _winner(self, rank: int) -> str | None:
        known = self._winners.get(rank)
        if known is not None:
            return known
        frame = self._frame_at(rank)
        if frame is None:
            return None  # not final here yet: read again next time
        if len(self._winners) >= 2 * leaders.memory(len(self._names)):
            del self._winners[min(self._winners)]
        self._winners[rank] = winner = frame.prover.hex()
        return winner


def frame_challenge(
    genesis: Genesis, rank: int, parent: bytes, prover: bytes, root: bytes
) -> bytes:
    """The VDF challenge of a frame: bound to its network, place in the chain, prover and body."""
    material = b"".join([genesis.network.encode(), rank.to_bytes(8, "big"), parent, prover, root])
    return hashlib.sha256(material).digest()[:HASH_SIZE]


def wall_clock_ms() -> int:
    """This machine's wall clock in ms since the epoch, as frames and the genesis record it."""
    return int(time.time() * 1000)
