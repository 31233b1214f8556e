"""Checks a frame alone: its place in the chain, body, proof of work, signature, certificate."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from p2pnode.chain import vdf
from p2pnode.chain.certs import CertificateChecker
from p2pnode.chain.crypto import frame_statement, verify
from p2pnode.chain.genesis import Genesis, frame_challenge
from p2pnode.chain.mempool import MAX_FRAME_MUTATION_BYTES, MAX_MUTATION_SIZE, mutation_bytes
from p2pnode.chain.types import CertKind, Frame, mutations_root

MAX_CLOCK_AHEAD_MS = 30_000
"""How far a frame's timestamp may run ahead of this peer's clock. Unbounded, one prover could
finalize a timestamp so large that no later frame could be later still."""

AHEAD_OF_CLOCK = "timestamp too far in the future"
"""The one problem that depends on this peer's clock: the same frame is valid a little later,
and a relay whose clock runs ahead of ours passed it on in good faith."""


MUTATION_REPEATED = "a mutation repeated in the frame"
"""A mutation is final at most once: no honest prover repeats one, within a frame or after
the frame that made it final (`ChainProviders` checks that against the store before voting)."""


class FrameChecker:
    """Validates frames against the genesis; a proof already verified is not verified again."""

    def __init__(
        self,
        genesis: Genesis,
        certificates: CertificateChecker | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.genesis = genesis
        self.certificates = certificates or CertificateChecker(genesis)
        self.clock = clock
        """Milliseconds since the epoch; None leaves timestamps unbounded (tests)."""
        self._proven: OrderedDict[bytes, bool] = OrderedDict()

    def problem(
        self, frame: Frame, parent: Frame | None, *, proof: bool = True, clock: bool = True
    ) -> str | None:
        """Why `frame` is not a valid proposal extending `parent` (None: it is valid).

        Without a parent at hand only what the frame proves by itself is checked. `proof=False`
        leaves out the proof of work, the one costly check (milliseconds): gossip is judged
        without it, and a peer checks the proof of the one proposal it votes for
        (`proof_problem`), or a certificate vouches for it. `clock=False` leaves out the check
        against this peer's clock: gossip asks `ahead_of_clock` apart, as its answer changes.
        """
        genesis = self.genesis
        if parent is not None and (frame.round != parent.round + 1 or frame.parent != parent.id):
            return "does not extend the final frame"
        if parent is not None and frame.timestamp <= parent.timestamp:
            return "timestamp not after its parent's"
        if clock and self.ahead_of_clock(frame):
            return AHEAD_OF_CLOCK
        if not genesis.is_prover(frame.prover):
            return "prover not in the prover set"
        if frame.difficulty != genesis.difficulty:
            return "wrong difficulty"
        if mutation_bytes(frame.mutations) > MAX_FRAME_MUTATION_BYTES or any(
            not m or len(m) > MAX_MUTATION_SIZE for m in frame.mutations
        ):
            return "mutations out of bounds"
        if len(set(frame.mutations)) < len(frame.mutations):
            return MUTATION_REPEATED
        if mutations_root(frame.mutations) != frame.root:
            return "mutations do not match their root"
        if not verify(frame.prover, genesis.network, frame_statement(frame), frame.signature):
            return "bad prover signature"
        if proof and not self._proof_holds(frame):
            return "bad proof of work"
        return None

    def ahead_of_clock(self, frame: Frame) -> bool:
        """Whether the frame's timestamp runs too far ahead of this peer's clock, for now."""
        return self.clock is not None and frame.timestamp > self.clock() + MAX_CLOCK_AHEAD_MS

    def final_problem(
        self, frame: Frame, parent: Frame | None, *, proof: bool = True
    ) -> str | None:
        """Why `frame` is not a final frame extending `parent`: as above, plus its commit."""
        if not self.certificates.valid(frame, CertKind.COMMIT):
            return "no valid commit certificate"
        return self.problem(frame, parent, proof=proof)

    async def proof_problem(self, frame: Frame) -> str | None:
        """The proof-of-work check alone, in a worker thread (it takes milliseconds)."""
        known = self._proven.get(frame.id)
        if known is None:
            challenge = frame_challenge(
                self.genesis, frame.round, frame.parent, frame.prover, frame.root
            )
            known = await vdf.verify_async(
                challenge, frame.difficulty, frame.output, frame.proof, self.genesis.vdf_bits
            )
            self._remember(frame.id, known)
        return None if known else "bad proof of work"

    def vouch(self, frame: Frame) -> None:
        """Take the proof of a frame this peer proved itself as checked: voting for its own
        proposal then costs no verification."""
        self._remember(frame.id, True)

    def _remember(self, frame_id: bytes, valid: bool) -> None:
        self._proven[frame_id] = valid
        if len(self._proven) > 1024:
            self._proven.popitem(last=False)

    def _proof_holds(self, frame: Frame) -> bool:
        known = self._proven.get(frame.id)
        if known is None:
            challenge = frame_challenge(
                self.genesis, frame.round, frame.parent, frame.prover, frame.root
            )
            known = vdf.verify(
                challenge, frame.difficulty, frame.output, frame.proof, self.genesis.vdf_bits
            )
            self._remember(frame.id, known)
        return known
