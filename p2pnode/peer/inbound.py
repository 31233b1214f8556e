"""The verdict on each gossip message: decode, check, feed the engine; counted by reason."""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable

from p2pnode.chain.certs import CertificateChecker
from p2pnode.chain.crypto import (
    final_statement,
    liveness_statement,
    precommit_statement,
    verify,
    vote_statement,
)
from p2pnode.chain.genesis import Genesis
from p2pnode.chain.mempool import Admission, Mempool
from p2pnode.chain.messages import (
    Confirmation,
    Liveness,
    MessageKind,
    MutationMsg,
    Proposal,
    VoteMsg,
)
from p2pnode.chain.providers import Precommits
from p2pnode.chain.types import CertKind, Collected, Frame, ProverId, Vote, peer_id_text
from p2pnode.chain.validation import AHEAD_OF_CLOCK, FrameChecker
from p2pnode.consensus import EquivocationError, Limits, Receipt, StateMachine
from p2pnode.net import Topic, Verdict
from p2pnode.wire.codec import CodecError, decode

log = logging.getLogger(__name__)

Machine = StateMachine[Frame, Vote, ProverId, Collected]

KINDS = {
    Topic.LIVENESS: MessageKind.LIVENESS,
    Topic.PROPOSALS: MessageKind.PROPOSAL,
    Topic.VOTES: MessageKind.VOTE,
    Topic.CONFIRMATIONS: MessageKind.CONFIRMATION,
    Topic.MUTATIONS: MessageKind.MUTATION,
}


CROWDED = {
    Admission.OVER_QUOTA: "origin over its mempool quota",
    Admission.FULL: "mempool full",
    Admission.OVER_BUDGET: "strangers' share of the mempool spent",
}
"""Mutations the pool turned away for room, not for what they are: ignored, by reason."""


PRECOMMITS_AHEAD = Limits().ranks_ahead
"""Ranks beyond the tip whose precommit signatures are kept, as far as the engine keeps messages
by default: a prover stuck far behind kept three for every rank the others finalized."""


class RejectedError(Exception):
    """The message is invalid: drop it, count it, penalise its sender."""


def verdict_of(receipt: Receipt) -> Verdict:
    if receipt is Receipt.ACCEPTED:
        return Verdict.ACCEPT
    if receipt is Receipt.NOT_A_PROVER:
        return Verdict.REJECT
    return Verdict.IGNORE  # duplicate, stale, too far ahead, full: harmless, dropped quietly


class Inbound:
    """Judges gossip for one peer: what is valid reaches the engine, the rest is counted."""

    def __init__(
        self,
        genesis: Genesis,
        machine: Machine,
        checker: FrameChecker,
        precommits: Precommits,
        mempool: Mempool,
        tip: Callable[[], Frame],
        clock: Callable[[], int] | None = None,
        ahead: Callable[[str, int], None] | None = None,
        relay: Callable[[Confirmation], None] | None = None,
        live: Callable[[Liveness], None] | None = None,
    ) -> None:
        self.genesis = genesis
        self.provers = frozenset(prover.identity() for prover in genesis.provers)
        """The provers' peer ids."""
        self.machine = machine
        self.checker = checker
        self.certificates: CertificateChecker = checker.certificates
        self.precommits = precommits
        self.mempool = mempool
        self.tip = tip
        self.clock = clock
        self.ahead = ahead
        """Told of a peer that proved, with a certificate, how far it has come: sync asks it."""
        self.relay = relay
        """Told of each valid precommit of the rank being decided, to pass on the newest."""
        self.live = live
        """Told of each liveness announcement the engine took."""
        self.hop_delays: deque[int] = deque(maxlen=256)
        """Milliseconds from a proposal's timestamp to its arrival: one gossip hop, as both
        clocks are the same machine's in a local testnet."""
        self.best_rank = 0
        """The highest rank some peer showed it holds as final (from valid messages)."""
        self.reasons: Counter[tuple[Topic, str]] = Counter()
        self.equivocations: Counter[str] = Counter()

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        if topic is Topic.PEERS:
            return Verdict.ACCEPT  # the network checked the record: well formed, signed by its peer
        kind = KINDS.get(topic)
        if kind is None:
            return Verdict.IGNORE
        try:
            message = decode(data, expected=kind)
            verdict = self._dispatch(message, origin)
        except CodecError:
            return self._reject(topic, origin, "undecodable")
        except RejectedError as why:
            return self._reject(topic, origin, str(why))
        except EquivocationError as err:
            # Evidence against the voter, not against whoever relayed the vote to us (peers
            # that saw the other vote first relay this one in good faith): ignored, counted.
            self.equivocations[err.voter] += 1
            self.reasons[(topic, "equivocating vote")] += 1
            return Verdict.IGNORE
        return verdict

    def _reject(self, topic: Topic, origin: str, reason: str) -> Verdict:
        self.reasons[(topic, reason)] += 1
        log.debug("rejected %s from %s: %s", topic.name.lower(), origin, reason)
        return Verdict.REJECT

    def _ignore(self, topic: Topic, origin: str, reason: str) -> Verdict:
        """Dropped and counted by reason, but not held against the sender or its forwarder."""
        self.reasons[(topic, reason)] += 1
        log.debug("ignored %s from %s: %s", topic.name.lower(), origin, reason)
        return Verdict.IGNORE

    def _dispatch(self, message: object, origin: str) -> Verdict:
        match message:
            case Liveness():
                return self._liveness(message, origin)
            case Proposal():
                return self._proposal(message.frame, origin)
            case VoteMsg():
                return self._vote(message.vote, origin)
            case Confirmation():
                return self._confirmation(message, origin)
            case MutationMsg():
                return self._mutation(message, origin)
        raise RejectedError("unexpected message kind")

    def _mutation(self, message: MutationMsg, origin: str) -> Verdict:
        """A batch is passed on if every one of its mutations was new here: a 60 KiB batch of
        which one mutation fit would be relayed whole to every peer, and one new mutation
        among thousands final long ago had every peer look them all up. The first one refused
        ends it: the rest would meet the same refusal, each at some cost; the first one known
        too (an honest batch holds its author's new submits, unless a client gave one to two
        peers). A batch that repeats a mutation is rejected: no honest batcher makes one
        (12,000 copies of one mutation cost each peer 40-50 ms)."""
        if len(set(message.mutations)) < len(message.mutations):
            raise RejectedError("a mutation repeated in its batch")
        added, crowded = False, None
        for admitted in self.mempool.add_many(message.mutations, origin):
            if admitted is not Admission.ADDED:
                added = False
                crowded = CROWDED.get(admitted)
                break
            added = True
        if crowded is not None:  # what a flooder meets: counted, to be seen in the status
            return self._ignore(Topic.MUTATIONS, origin, crowded)
        return Verdict.ACCEPT if added else Verdict.IGNORE

    def _sender(self, key: bytes, origin: str) -> ProverId:
        """The message's signer must be its author on the network, and a prover."""
        if peer_id_text(key) != origin:
            raise RejectedError("signer is not the sender")
        if not self.genesis.is_prover(key):
            raise RejectedError("not a prover")
        return ProverId(key)

    def _signed(self, key: bytes, statement: list[object], signature: bytes) -> None:
        if not verify(key, self.genesis.network, statement, signature):
            raise RejectedError("bad signature")

    def _liveness(self, message: Liveness, origin: str) -> Verdict:
        prover = self._sender(message.prover, origin)
        self._signed(
            message.prover,
            liveness_statement(message.rank, message.prover, message.root),
            message.signature,
        )
        collected = Collected(message.rank, message.root)
        verdict = verdict_of(self.machine.receive_liveness_check(prover, collected))
        if verdict is Verdict.ACCEPT:  # in the engine's window: not a far-future claim
            self.best_rank = max(self.best_rank, message.rank - 1)
            if self.live is not None:
                self.live(message)
        return verdict

    def _proposal(self, frame: Frame, origin: str) -> Verdict:
        prover = self._sender(frame.prover, origin)
        tip = self.tip()
        if frame.round != tip.round + 1:
            return Verdict.IGNORE  # not the rank being decided: its parent cannot be checked
        # The proof is checked when voting for it. A frame ahead of our clock is ignored, not
        # rejected: a relay whose clock runs ahead passed it on in good faith, and a copy sent
        # again once our clock caught up is judged afresh (IGNORE is not cached as seen).
        problem = self.checker.problem(frame, tip, proof=False, clock=False)
        if problem is not None:
            raise RejectedError(problem)
        if self.checker.ahead_of_clock(frame):
            return self._ignore(Topic.PROPOSALS, origin, AHEAD_OF_CLOCK)
        verdict = verdict_of(self.machine.receive_proposal(prover, frame))
        if verdict is Verdict.ACCEPT and self.clock is not None:
            self.hop_delays.append(self.clock() - frame.timestamp)
        return verdict

    def _vote(self, vote: Vote, origin: str) -> Verdict:
        voter = self._sender(vote.voter, origin)
        if not self.genesis.is_prover(vote.proposer):
            raise RejectedError("vote for a non-prover's frame")
        self._signed(
            vote.voter, vote_statement(vote.round, vote.attempt, vote.frame), vote.signature
        )
        return verdict_of(self.machine.receive_vote(ProverId(vote.proposer), voter, vote))

    def _confirmation(self, message: Confirmation, origin: str) -> Verdict:
        """A confirmation speaks for its signer, whoever relays it: a peer passes on the newest
        certificate it knows, in the very message that carried it to it."""
        frame, certificate = message.frame, message.frame.certificate
        if certificate is None:
            raise RejectedError("confirmation without a certificate")
        if not self.certificates.valid(frame, certificate.kind):
            raise RejectedError("invalid certificate")
        sender = ProverId(message.sender)
        tip = self.tip()
        if certificate.kind is CertKind.COMMIT:
            statement = final_statement(frame.round, certificate.attempt, frame.id)
            self._signed(message.sender, statement, message.signature)
        if certificate.kind is CertKind.VOTES:
            if not self.genesis.is_prover(message.sender):
                raise RejectedError("not a prover")
            statement = precommit_statement(frame.round, certificate.attempt, frame.id)
            self._signed(message.sender, statement, message.signature)
            if frame.round <= tip.round + PRECOMMITS_AHEAD and not self.precommits.add(
                frame.round, certificate.attempt, message.sender, frame.id, message.signature
            ):
                # Evidence against the signer, relayed in good faith: ignored, counted.
                self.equivocations[ProverId(message.sender).identity()] += 1
                self.reasons[(Topic.CONFIRMATIONS, "equivocating precommit")] += 1
                return Verdict.IGNORE
        if self.ahead is not None and frame.round > tip.round and origin in self.provers:
            # Only a prover's claim: a stranger that relays a genuine certificate first would
            # be asked first on every sync, and each ask it stalls costs the sync timeout.
            commit = certificate.kind is CertKind.COMMIT
            self.ahead(origin, frame.round if commit else frame.round - 1)
        if frame.round == tip.round + 1:
            # The certificate vouches for the proof; the clock is asked apart, as for a proposal.
            problem = self.checker.problem(frame, tip, proof=False, clock=False)
            if problem is not None:
                raise RejectedError(problem)
            if self.checker.ahead_of_clock(frame):
                return self._ignore(Topic.CONFIRMATIONS, origin, AHEAD_OF_CLOCK)
            # Kept by frame id, beside any other frame this prover sent us.
            self.machine.receive_certified(
                ProverId(frame.prover), frame.bare(), certificate.attempt
            )
            if certificate.kind is CertKind.VOTES and self.relay is not None:
                self.relay(message)
        elif frame.round <= tip.round:
            return Verdict.IGNORE
        commit = certificate.kind is CertKind.COMMIT
        return verdict_of(self.machine.receive_confirmation(sender, frame, commit=commit))
