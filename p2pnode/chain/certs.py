"""Quorum certificates: building them from signatures and checking them alone."""

from __future__ import annotations

from collections.abc import Mapping

from p2pnode.chain.crypto import precommit_statement, verify, vote_statement
from p2pnode.chain.genesis import Genesis
from p2pnode.chain.types import Certificate, CertKind, Frame


def statement_of(kind: CertKind, rank: int, attempt: int, frame_id: bytes) -> list[object]:
    """What each signer of a certificate of `kind` signed."""
    if kind is CertKind.VOTES:
        return vote_statement(rank, attempt, frame_id)
    return precommit_statement(rank, attempt, frame_id)


def build(
    genesis: Genesis, kind: CertKind, attempt: int, signatures: Mapping[bytes, bytes]
) -> Certificate:
    """A certificate from signatures keyed by signer public key (non-provers are left out)."""
    indexed = sorted(
        (index, signature)
        for key, signature in signatures.items()
        if (index := genesis.index_of(key)) is not None
    )
    return Certificate(kind, attempt, tuple(i for i, _ in indexed), tuple(s for _, s in indexed))


class CertificateChecker:
    """Checks certificates against the prover set, remembering the ones already checked."""

    def __init__(self, genesis: Genesis, cache_size: int = 4096) -> None:
        self._genesis = genesis
        self._valid: dict[tuple[bytes, int, int, tuple[int, ...], tuple[bytes, ...]], bool] = {}
        self._cache_size = cache_size

    def valid(self, frame: Frame, kind: CertKind | None = None) -> bool:
        """Whether `frame` carries a certificate (of `kind`, if given) a quorum really signed."""
        certificate = frame.certificate
        if certificate is None or (kind is not None and certificate.kind is not kind):
            return False
        # The signatures belong in the key: a forged copy of a certificate must not share the
        # verdict of the genuine one (either way round).
        key = (
            frame.id,
            int(certificate.kind),
            certificate.attempt,
            certificate.signers,
            certificate.signatures,
        )
        known = self._valid.get(key)
        if known is None:
            known = self._check(frame, certificate)
            if len(self._valid) >= self._cache_size:
                self._valid.clear()
            self._valid[key] = known
        return known

    def _check(self, frame: Frame, certificate: Certificate) -> bool:
        genesis = self._genesis
        signers = certificate.signers
        if len(signers) != len(certificate.signatures) or len(signers) < genesis.quorum:
            return False
        if list(signers) != sorted(set(signers)):
            return False
        # A negative index would name a prover from the end, so one prover could sign twice.
        if signers[0] < 0 or signers[-1] >= len(genesis.provers):
            return False
        statement = statement_of(certificate.kind, frame.round, certificate.attempt, frame.id)
        return all(
            verify(genesis.provers[index].key, genesis.network, statement, signature)
            for index, signature in zip(signers, certificate.signatures, strict=True)
        )
