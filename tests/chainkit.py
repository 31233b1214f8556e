"""Signed chain records for tests: keypairs, a genesis, proven frames, votes and certificates."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace

from p2pnode.chain import vdf
from p2pnode.chain.crypto import (
    Keypair,
    frame_statement,
    precommit_statement,
    sign,
    vote_statement,
)
from p2pnode.chain.genesis import Genesis, frame_challenge
from p2pnode.chain.messages import Message
from p2pnode.chain.types import Certificate, CertKind, Frame, Vote, mutations_root

DIFFICULTY = 100
"""Small, so that proving a frame takes milliseconds."""
T0 = 1_700_000_000_000
"""The genesis timestamp (ms)."""


def keypairs(*seeds: int) -> tuple[Keypair, ...]:
    """One keypair per seed byte, the same in every run."""
    return tuple(Keypair.from_seed(bytes([seed]) * 32) for seed in seeds)


def make_genesis(network: str, provers: Sequence[Keypair]) -> Genesis:
    return Genesis.create(network, [k.prover for k in provers], DIFFICULTY, T0)


def resigned(genesis: Genesis, frame: Frame, keypair: Keypair) -> Frame:
    """`frame` signed (again) by `keypair`."""
    return replace(frame, signature=sign(keypair, genesis.network, frame_statement(frame)))


@functools.cache
def proven(
    genesis: Genesis,
    keypair: Keypair,
    mutations: tuple[bytes, ...] = (),
    *,
    timestamp: int,
    parent: Frame | None = None,
) -> Frame:
    """A valid frame by `keypair` on `parent` (by default the genesis frame), built as a
    prover would."""
    parent = parent or genesis.frame()
    rank, root = parent.round + 1, mutations_root(mutations)
    challenge = frame_challenge(genesis, rank, parent.id, keypair.public, root)
    output, proof = vdf.prove(challenge, genesis.difficulty, genesis.vdf_bits)
    difficulty = genesis.difficulty
    unsigned = Frame(
        rank, parent.id, keypair.public, timestamp, root, mutations, difficulty, output, proof, b""
    )
    return resigned(genesis, unsigned, keypair)


def signed_vote(
    network: str,
    voter: Keypair,
    frame_id: bytes,
    rank: int,
    attempt: int,
    *,
    proposer: bytes,
    signer: Keypair | None = None,
) -> Vote:
    """`voter`'s vote for `frame_id`, signed by `signer` (the voter unless given)."""
    signature = sign(signer or voter, network, vote_statement(rank, attempt, frame_id))
    return Vote(rank, attempt, frame_id, proposer, voter.public, signature)


def certified(
    genesis: Genesis,
    frame: Frame,
    kind: CertKind,
    attempt: int,
    signers: Sequence[Keypair],
    statement: list[object] | None = None,
) -> Frame:
    """`frame` with a certificate `signers` really signed: their votes for a vote certificate,
    their precommits for a commit certificate, or `statement` when given."""
    if statement is None:
        sign_statement = vote_statement if kind is CertKind.VOTES else precommit_statement
        statement = sign_statement(frame.round, attempt, frame.id)
    pairs = []
    for keypair in signers:
        index = genesis.index_of(keypair.public)
        assert index is not None, "a signer of a certificate is a prover"
        pairs.append((index, sign(keypair, genesis.network, statement)))
    pairs.sort()
    return frame.with_certificate(
        Certificate(kind, attempt, tuple(i for i, _ in pairs), tuple(s for _, s in pairs))
    )


class Recorder:
    """A publisher that keeps what it is handed, after an optional check."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.check: Callable[[Message], None] | None = None

    async def publish(self, message: Message) -> None:
        if self.check is not None:
            self.check(message)
        self.messages.append(message)


class FakeSync:
    """A synchronizer that reports `result` as the new tip and remembers each call."""

    def __init__(self, result: Frame) -> None:
        self.result = result
        self.calls: list[Frame | None] = []

    async def synchronize(self, existing: Frame | None) -> Frame:
        self.calls.append(existing)
        return self.result
