"""The Wesolowski VDF: proofs verify, anything else does not, and proving can be cancelled."""

from __future__ import annotations

import threading

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain import vdf
from p2pnode.chain.types import digest

CHALLENGE = digest(b"challenge one")
OTHER = digest(b"challenge two")
# Above 264 iterations the proof is a real group element (below, it is the identity: see
# test_short_proofs_are_the_identity_in_its_one_encoding).
ITERATIONS = 500

OUTPUT, PROOF = vdf.prove(CHALLENGE, ITERATIONS)
OTHER_OUTPUT, OTHER_PROOF = vdf.prove(OTHER, ITERATIONS)
IDENTITY = b"\x04" + bytes(vdf.FORM_SIZE - 1)


def test_a_proof_verifies_and_is_deterministic() -> None:
    assert len(OUTPUT) == len(PROOF) == vdf.FORM_SIZE
    assert vdf.verify(CHALLENGE, ITERATIONS, OUTPUT, PROOF)
    assert vdf.prove(CHALLENGE, ITERATIONS) == (OUTPUT, PROOF)


def test_wrong_output_proof_iterations_or_challenge_fail() -> None:
    assert not vdf.verify(CHALLENGE, ITERATIONS, OTHER_OUTPUT, PROOF)
    assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT, OTHER_PROOF)
    assert not vdf.verify(CHALLENGE, ITERATIONS, PROOF, OUTPUT)
    assert not vdf.verify(CHALLENGE, ITERATIONS - 1, OUTPUT, PROOF)
    assert not vdf.verify(CHALLENGE, ITERATIONS + 1, OUTPUT, PROOF)
    assert not vdf.verify(CHALLENGE, 2 * ITERATIONS, OUTPUT, PROOF)
    assert not vdf.verify(OTHER, ITERATIONS, OUTPUT, PROOF)


@given(data=st.data())
def test_every_single_byte_change_fails(data: st.DataObject) -> None:
    which = data.draw(st.sampled_from(["output", "proof"]))
    position = data.draw(st.integers(0, vdf.FORM_SIZE - 1))
    original = OUTPUT if which == "output" else PROOF
    value = data.draw(st.integers(0, 255).filter(lambda v: v != original[position]))
    changed = original[:position] + bytes([value]) + original[position + 1 :]
    output, proof = (changed, PROOF) if which == "output" else (OUTPUT, changed)
    assert not vdf.verify(CHALLENGE, ITERATIONS, output, proof)


def test_other_encodings_of_the_same_output_fail() -> None:
    # chiavdf's own verifier ignores part of the last byte of an output (of 255 variants here,
    # dozens pass it). Only the encoding chiavdf produces may verify here.
    for value in range(256):
        if value != OUTPUT[-1]:
            assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT[:-1] + bytes([value]), PROOF)


def test_short_proofs_are_the_identity_in_its_one_encoding() -> None:
    # Below 2**264 > 2**iterations the Wesolowski quotient is 0, so the proof is the identity,
    # which chiavdf decodes from its flag byte alone, whatever follows.
    output, proof = vdf.prove(CHALLENGE, 100)
    assert proof == IDENTITY
    assert vdf.verify(CHALLENGE, 100, output, proof)
    for padded in (IDENTITY[:-1] + b"\x01", b"\x05" + bytes(99), b"\x04" + b"\xff" * 99):
        assert not vdf.verify(CHALLENGE, 100, output, padded)


@given(
    challenge=st.one_of(st.sampled_from([CHALLENGE, OTHER]), st.binary(max_size=64)),
    iterations=st.one_of(
        st.sampled_from([ITERATIONS, 0, 1, 100]),
        st.integers(min_value=-(2**70), max_value=2**70),
    ),
    output=st.one_of(st.binary(min_size=100, max_size=100), st.binary(max_size=300)),
    proof=st.one_of(st.binary(min_size=100, max_size=100), st.binary(max_size=300)),
)
def test_garbage_is_invalid_never_an_error(
    challenge: bytes, iterations: int, output: bytes, proof: bytes
) -> None:
    assert not vdf.verify(challenge, iterations, output, proof)


@given(flags=st.integers(0, 255), rest=st.binary(min_size=99, max_size=99))
def test_random_forms_with_any_flags_are_invalid(flags: int, rest: bytes) -> None:
    form = bytes([flags]) + rest
    assert not vdf.verify(CHALLENGE, ITERATIONS, form, PROOF)
    assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT, form)


def test_mistyped_arguments_are_invalid() -> None:
    assert not vdf.verify(CHALLENGE, True, OUTPUT, PROOF)
    assert not vdf.verify(CHALLENGE, float(ITERATIONS), OUTPUT, PROOF)  # type: ignore[arg-type]
    assert not vdf.verify(CHALLENGE.hex(), ITERATIONS, OUTPUT, PROOF)  # type: ignore[arg-type]
    assert not vdf.verify(CHALLENGE, ITERATIONS, bytearray(OUTPUT), PROOF)  # type: ignore[arg-type]
    assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT.hex(), PROOF)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("challenge", "iterations", "error", "reason"),
    [
        (b"\x01", 10, ValueError, "32-byte hash"),  # a 1-byte challenge would hang chiavdf
        (bytes(31), 10, ValueError, "32-byte hash"),
        (bytes(33), 10, ValueError, "32-byte hash"),
        (CHALLENGE, 0, ValueError, r"must be in \[1, .*not 0"),
        (CHALLENGE, -1, ValueError, r"must be in \[1, .*not -1"),
        (CHALLENGE, 2**63, ValueError, r"must be in \[1, .*not 9223372036854775808"),
        (CHALLENGE, True, TypeError, "must be an int"),
    ],
)
def test_prove_refuses_bad_arguments(
    challenge: bytes, iterations: int, error: type, reason: str
) -> None:
    with pytest.raises(error, match=reason):
        vdf.prove(challenge, iterations)


def test_a_proof_holds_only_in_the_group_size_it_was_made_in() -> None:
    output, proof = vdf.prove(CHALLENGE, ITERATIONS, 512)
    assert (output, proof) != (OUTPUT, PROOF)
    assert vdf.verify(CHALLENGE, ITERATIONS, output, proof, 512)
    assert not vdf.verify(CHALLENGE, ITERATIONS, output, proof)
    assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT, PROOF, 512)
    assert not vdf.verify(CHALLENGE, ITERATIONS, OUTPUT, PROOF, 768)
    with pytest.raises(ValueError, match="bits"):
        vdf.prove(CHALLENGE, ITERATIONS, 768)


async def test_prove_async_matches_prove() -> None:
    assert await vdf.prove_async(CHALLENGE, ITERATIONS) == (OUTPUT, PROOF)
    assert await vdf.verify_async(CHALLENGE, ITERATIONS, OUTPUT, PROOF)
    assert not await vdf.verify_async(CHALLENGE, ITERATIONS, OTHER_OUTPUT, PROOF)


def _proving_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == vdf.PROVE_THREAD_NAME]


async def test_cancelling_prove_async_returns_at_once_and_stops_the_work() -> None:
    # Hours of work: only a cancellation that abandons the thread returns before the guard.
    with trio.fail_after(60), trio.move_on_after(0.2) as scope:
        await vdf.prove_async(CHALLENGE, 10**9)
    assert scope.cancelled_caught
    # The abandoned thread stops once its run file is gone (chiavdf polls it).
    assert await vdf.settle(timeout=30)
    assert not _proving_threads()
