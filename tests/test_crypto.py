"""Ed25519 keys, domain-separated statements and key files."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain import crypto
from p2pnode.chain.crypto import Keypair
from p2pnode.chain.types import Frame, ProverId, Vote, canonical

# RFC 8032, section 7.1, test 1: the public key of this seed.
RFC_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")

KEYS = [Keypair.from_seed(bytes([i]) * 32) for i in range(1, 4)]
NETWORK = "testnet"

ranks = st.integers(min_value=0, max_value=2**63 - 1)
hashes = st.binary(min_size=32, max_size=32)


def frame() -> Frame:
    return Frame(
        round=7,
        parent=b"p" * 32,
        prover=KEYS[0].public,
        timestamp=1_700_000_000_000,
        root=b"r" * 32,
        mutations=(b"m1", b"m2"),
        difficulty=1000,
        output=b"o" * 100,
        proof=b"q" * 100,
        signature=b"s" * 64,
    )


def test_seed_derives_the_rfc_8032_public_key() -> None:
    keypair = Keypair.from_seed(RFC_SEED)
    assert keypair.public == RFC_PUBLIC
    assert keypair.prover == ProverId(RFC_PUBLIC)
    assert keypair.prover.identity().startswith("12D3KooW")


def test_generate_makes_distinct_keys_and_repr_hides_the_seed() -> None:
    first, second = Keypair.generate(), Keypair.generate()
    assert first != second
    assert len(first.seed) == 32
    assert len(first.public) == 32
    assert first.seed.hex() not in repr(first)
    assert repr(first.seed) not in repr(first)


def test_keypair_refuses_bad_seeds_and_foreign_public_keys() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Keypair.from_seed(b"\x01" * 31)
    with pytest.raises(ValueError, match="does not belong"):
        Keypair(KEYS[0].seed, KEYS[1].public)
    assert Keypair(KEYS[0].seed, KEYS[0].public) == KEYS[0]


@given(rank=ranks, attempt=ranks, frame_id=hashes)
def test_statements_sign_and_verify(rank: int, attempt: int, frame_id: bytes) -> None:
    for statement in (
        crypto.vote_statement(rank, attempt, frame_id),
        crypto.precommit_statement(rank, attempt, frame_id),
        crypto.final_statement(rank, attempt, frame_id),
        crypto.liveness_statement(rank, KEYS[0].public, frame_id),
    ):
        signature = crypto.sign(KEYS[0], NETWORK, statement)
        assert len(signature) == 64
        assert crypto.verify(KEYS[0].public, NETWORK, statement, signature)
        assert not crypto.verify(KEYS[1].public, NETWORK, statement, signature)


@given(rank=ranks, attempt=ranks, frame_id=hashes)
def test_statement_kinds_do_not_stand_in_for_each_other(
    rank: int, attempt: int, frame_id: bytes
) -> None:
    statements = [
        crypto.vote_statement(rank, attempt, frame_id),
        crypto.precommit_statement(rank, attempt, frame_id),
        crypto.final_statement(rank, attempt, frame_id),
    ]
    for signed in statements:
        signature = crypto.sign(KEYS[0], NETWORK, signed)
        for other in statements:
            assert crypto.verify(KEYS[0].public, NETWORK, other, signature) == (other == signed)


@given(one=st.text(max_size=20), other=st.text(max_size=20), frame_id=hashes)
def test_a_vote_signed_for_one_network_fails_under_another(
    one: str, other: str, frame_id: bytes
) -> None:
    statement = crypto.vote_statement(3, 1, frame_id)
    signature = crypto.sign(KEYS[0], one, statement)
    assert crypto.verify(KEYS[0].public, other, statement, signature) == (one == other)


def test_the_vote_statement_is_the_votes_own() -> None:
    vote = Vote(5, 2, b"f" * 32, KEYS[0].public, KEYS[1].public, b"")
    assert crypto.vote_statement(5, 2, b"f" * 32) == vote.statement()


def test_the_frame_statement_covers_every_field_but_the_signature() -> None:
    signed = frame()
    statement = crypto.frame_statement(signed)
    assert statement == ["frame", *signed.fields(signed=False)]
    signature = crypto.sign(KEYS[0], NETWORK, statement)
    resigned = replace(signed, signature=signature)
    assert crypto.verify(KEYS[0].public, NETWORK, crypto.frame_statement(resigned), signature)
    changed = replace(resigned, timestamp=signed.timestamp + 1)
    assert not crypto.verify(KEYS[0].public, NETWORK, crypto.frame_statement(changed), signature)


def test_signatures_are_domain_separated() -> None:
    statement = crypto.vote_statement(1, 0, b"f" * 32)
    bare = nacl.signing.SigningKey(KEYS[0].seed).sign(canonical(statement)).signature
    assert not crypto.verify(KEYS[0].public, NETWORK, statement, bare)
    wrapped = canonical(["p2pnode/1", NETWORK, *statement])
    expected = nacl.signing.SigningKey(KEYS[0].seed).sign(wrapped).signature
    assert crypto.sign(KEYS[0], NETWORK, statement) == expected


@given(data=st.data())
def test_mutated_signatures_fail(data: st.DataObject) -> None:
    statement = crypto.vote_statement(9, 0, b"\x07" * 32)
    signature = crypto.sign(KEYS[2], NETWORK, statement)
    position = data.draw(st.integers(0, len(signature) - 1))
    bit = data.draw(st.integers(0, 7))
    forged = bytearray(signature)
    forged[position] ^= 1 << bit
    assert not crypto.verify(KEYS[2].public, NETWORK, statement, bytes(forged))


@given(public=st.binary(max_size=80), signature=st.binary(max_size=80))
def test_garbage_keys_and_signatures_are_invalid_not_errors(
    public: bytes, signature: bytes
) -> None:
    statement = crypto.vote_statement(1, 0, b"f" * 32)
    assert not crypto.verify(public, NETWORK, statement, signature)


def test_weak_and_mistyped_inputs_are_invalid() -> None:
    statement = crypto.vote_statement(1, 0, b"f" * 32)
    signature = crypto.sign(KEYS[0], NETWORK, statement)
    identity_point = b"\x01" + bytes(31)  # a small-order key that "verifies" forged signatures
    assert not crypto.verify(identity_point, NETWORK, statement, b"\x01" + bytes(63))
    assert not crypto.verify(bytes(32), NETWORK, statement, bytes(64))
    assert not crypto.verify(bytearray(KEYS[0].public), NETWORK, statement, signature)  # type: ignore[arg-type]
    assert not crypto.verify(KEYS[0].public, NETWORK, statement, signature.hex())  # type: ignore[arg-type]


def test_key_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    previous = os.umask(0)  # even a permissive umask yields an owner-only file
    try:
        crypto.save_keypair(path, KEYS[0])
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == KEYS[0].seed.hex() + "\n"
    assert crypto.load_keypair(path) == KEYS[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    crypto.save_keypair(str(path), KEYS[0])
    with pytest.raises(FileExistsError):
        crypto.save_keypair(path, KEYS[1])
    assert crypto.load_keypair(path) == KEYS[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["node.key"]


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"abc\n",
        b"zz" * 32,
        b"00" * 31,
        b"00" * 33,
        b"\xff" * 64,
        b"0 " * 32,
        ("é" * 64).encode(),
    ],
)
def test_load_rejects_bad_content_clearly(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="key file"):
        crypto.load_keypair(path)


def test_load_accepts_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "spaced.key"
    path.write_text("  " + KEYS[1].seed.hex().upper() + "\r\n\n")
    assert crypto.load_keypair(path) == KEYS[1]
