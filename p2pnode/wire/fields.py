"""The codec's field readers and writers: exact types and bounds, frames and certificates."""

from __future__ import annotations

from itertools import pairwise
from typing import NoReturn

from p2pnode.chain.genesis import MAX_PROVERS
from p2pnode.chain.mempool import MAX_MUTATION_SIZE, MAX_MUTATIONS_PER_FRAME
from p2pnode.chain.types import HASH_SIZE, KEY_SIZE, SIGNATURE_SIZE, Certificate, CertKind, Frame
from p2pnode.chain.vdf import FORM_SIZE

MAX_INT = 2**63 - 1
MAX_MUTATIONS = MAX_MUTATIONS_PER_FRAME
MAX_SIGNERS = MAX_PROVERS
MAX_TEXT = 256

FRAME_ARITY = 11
"""`Frame.fields(signed=True)` (ten fields) and the certificate or null."""


class CodecError(ValueError):
    """The bytes are not a valid message (or a message cannot be encoded)."""


def fail(message: str) -> NoReturn:
    raise CodecError(message)


# --- readers: each checks one decoded value and names it in the error ----------------------


def uint(value: object, what: str) -> int:
    # `type(...) is int` also refuses bools, which Python counts as ints.
    if type(value) is not int or not 0 <= value <= MAX_INT:
        fail(f"{what}: expected an integer in [0, 2**63)")
    return value


def _check_length(length: int, what: str, unit: str, exact: int | None, maximum: int) -> None:
    """Exactly `exact` items when given, else at most `maximum`."""
    if exact is not None and length != exact:
        fail(f"{what}: expected {exact} {unit}, got {length}")
    if exact is None and length > maximum:
        fail(f"{what}: {length} {unit} exceeds {maximum}")


def byte_string(value: object, what: str, *, size: int | None = None, max_size: int = 0) -> bytes:
    if type(value) is not bytes:
        fail(f"{what}: expected a byte string")
    _check_length(len(value), what, "bytes", size, max_size)
    return value


def text(value: object, what: str) -> str:
    if type(value) is not str:
        fail(f"{what}: expected a text string")
    if len(value) > MAX_TEXT:
        fail(f"{what}: {len(value)} characters exceeds {MAX_TEXT}")
    return value


def array(value: object, what: str, *, arity: int | None = None, max_len: int = 0) -> list[object]:
    if type(value) is not list:
        fail(f"{what}: expected an array")
    _check_length(len(value), what, "elements", arity, max_len)
    return value


def certificate(value: object, what: str) -> Certificate:
    kind, attempt, signers, signatures = array(value, what, arity=4)
    kind_number = uint(kind, f"{what}.kind")
    try:
        cert_kind = CertKind(kind_number)
    except ValueError:
        fail(f"{what}.kind: unknown certificate kind {kind_number}")
    indices = tuple(
        uint(index, f"{what}.signers")
        for index in array(signers, f"{what}.signers", max_len=MAX_SIGNERS)
    )
    sigs = tuple(
        byte_string(signature, f"{what}.signatures", size=SIGNATURE_SIZE)
        for signature in array(signatures, f"{what}.signatures", max_len=MAX_SIGNERS)
    )
    if not indices:
        fail(f"{what}: no signers")
    if len(indices) != len(sigs):
        fail(f"{what}: {len(indices)} signers but {len(sigs)} signatures")
    # One order per signer set, so one certificate has one encoding (and no signer counts twice).
    if any(a >= b for a, b in pairwise(indices)):
        fail(f"{what}.signers: not strictly ascending")
    return Certificate(cert_kind, uint(attempt, f"{what}.attempt"), indices, sigs)


def frame(value: object, what: str) -> Frame:
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
        cert,
    ) = array(value, what, arity=FRAME_ARITY)
    items = array(mutations, f"{what}.mutations", max_len=MAX_MUTATIONS)
    return Frame(
        round=uint(round_, f"{what}.round"),
        parent=byte_string(parent, f"{what}.parent", size=HASH_SIZE),
        prover=byte_string(prover, f"{what}.prover", size=KEY_SIZE),
        timestamp=uint(timestamp, f"{what}.timestamp"),
        root=byte_string(root, f"{what}.root", size=HASH_SIZE),
        mutations=tuple(
            byte_string(item, f"{what}.mutations", max_size=MAX_MUTATION_SIZE) for item in items
        ),
        difficulty=uint(difficulty, f"{what}.difficulty"),
        output=byte_string(output, f"{what}.output", size=FORM_SIZE),
        proof=byte_string(proof, f"{what}.proof", size=FORM_SIZE),
        signature=byte_string(signature, f"{what}.signature", size=SIGNATURE_SIZE),
        certificate=None if cert is None else certificate(cert, f"{what}.cert"),
    )


# --- writers: the plain values the readers above take back ----------------------------------


def certificate_value(cert: Certificate | None) -> object:
    if cert is None:
        return None
    return [int(cert.kind), cert.attempt, list(cert.signers), list(cert.signatures)]


def frame_value(value: Frame) -> list[object]:
    return [*value.fields(signed=True), certificate_value(value.certificate)]
