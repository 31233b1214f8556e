"""The messages peers exchange, as plain records; `p2pnode.wire.codec` puts them on the wire."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from p2pnode.chain.types import Frame, Vote


class MessageKind(enum.IntEnum):
    """Each record's kind, as numbered in the envelope on the wire."""

    LIVENESS = 1
    PROPOSAL = 2
    VOTE = 3
    CONFIRMATION = 4
    MUTATION = 5
    SYNC_REQUEST = 6
    SYNC_RESPONSE = 7
    # 8 and 10 are reserved: a number once used on the wire is never given to another kind.
    PEERS = 9


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
    """A batch of mutations submitted to one peer, gossiped together."""

    KIND: ClassVar[MessageKind] = MessageKind.MUTATION
    mutations: tuple[bytes, ...]


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
class Peers:
    """A peer announces the multiaddrs it can be dialled at."""

    KIND: ClassVar[MessageKind] = MessageKind.PEERS
    peer_id: str
    addrs: tuple[str, ...]


Message: TypeAlias = (
    Liveness | Proposal | VoteMsg | Confirmation | MutationMsg | SyncRequest | SyncResponse | Peers
)
