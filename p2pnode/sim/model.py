"""The simulator's reference types: hash-chained frames, votes, certificates and leader order."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from p2pnode.consensus import leaders
from p2pnode.consensus.rules import max_faults


class Named(Protocol):
    def identity(self) -> str: ...


def digest(*parts: object) -> str:
    text = "\x1f".join(str(part) for part in parts)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer identity (the simulator's PeerIDT)."""

    name: str

    def identity(self) -> str:
        return self.name

    def rank(self) -> int:
        return 0

    def clone(self) -> Peer:
        return self


@dataclass(frozen=True, slots=True)
class Collected:
    """Mutations a prover collected for a rank."""

    round: int
    mutations: tuple[str, ...] = ()

    def identity(self) -> str:
        return digest("collected", self.round, *self.mutations)

    def rank(self) -> int:
        return self.round

    def clone(self) -> Collected:
        return self


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame extending its parent; it may carry a certificate (attempt and signers).

    Its identity is the hash of its body only, so a frame with or without a certificate is the
    same frame. `final` marks a commit certificate; otherwise a certificate is a vote quorum.
    """

    round: int
    parent: str
    prover: str
    payload: str
    stamp: float = 0.0
    """When the prover proved it, by the prover's clock (virtual seconds)."""
    proof: bool = True
    """Whether its proof of work holds (checked only by a peer about to vote for it)."""
    cert_attempt: int = -1
    signers: frozenset[str] = frozenset()
    final: bool = False
    _id: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        body = (self.round, self.parent, self.prover, self.payload, self.stamp, self.proof)
        object.__setattr__(self, "_id", digest(*body))

    def identity(self) -> str:
        return self._id

    def rank(self) -> int:
        return self.round

    def clone(self) -> Frame:
        return self

    @property
    def attempt(self) -> int:
        return max(self.cert_attempt, 0)

    def body(self) -> Frame:
        return replace(self, cert_attempt=-1, signers=frozenset(), final=False)

    def certified(self, attempt: int, signers: Iterable[str], *, final: bool) -> Frame:
        return replace(self, cert_attempt=attempt, signers=frozenset(signers), final=final)


GENESIS = Frame(0, "", "genesis", "genesis")


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a confirmation message carries: a frame with its certificate and who signed it.

    With a vote certificate it is `signer`'s precommit (it counts only if `signer` signed the
    precommit statement); with a commit certificate it proves the frame final, whoever relays it.
    """

    frame: Frame
    signer: str


@dataclass(frozen=True, slots=True)
class Vote:
    """A prover's vote for a frame in one attempt of a rank."""

    round: int
    attempt: int
    frame_id: str
    proposer: str
    voter: str

    def identity(self) -> str:
        return digest("vote", self.round, self.attempt, self.frame_id, self.voter)

    def rank(self) -> int:
        return self.round

    def clone(self) -> Vote:
        return self


def quorum(provers: int) -> int:
    """Votes needed for a certificate: n - f (2f+1 when n = 3f+1)."""
    return provers - max_faults(provers)


def leader_order(provers: Sequence[str], rank: int, chain: Mapping[int, Named]) -> list[str]:
    """The provers of `rank`, highest priority first: the engine's rule (a rotation by rank of
    the sorted prover set, minus the places lost), with the winners read from `chain`."""
    return leaders.leader_order(sorted(provers), rank, lambda r: _prover_of(chain.get(r)))


def _prover_of(frame: Named | None) -> str | None:
    return None if frame is None else getattr(frame, "prover", None)
