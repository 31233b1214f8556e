"""The engine's providers for real: frames proven with a VDF, signed votes and certificates."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from p2pnode.chain import certs
from p2pnode.chain.crypto import (
    Keypair,
    final_statement,
    frame_statement,
    liveness_statement,
    precommit_statement,
    sign,
    vote_statement,
)
from p2pnode.chain.genesis import Genesis, LeaderOrder, frame_challenge
from p2pnode.chain.mempool import Mempool, mutation_id
from p2pnode.chain.messages import Confirmation, Liveness, Message, Proposal, VoteMsg
from p2pnode.chain.storage import ChainStore, StorageError
from p2pnode.chain.types import CertKind, Collected, Frame, ProverId, Vote
from p2pnode.chain.validation import FrameChecker
from p2pnode.chain.vdf import prove_async
from p2pnode.consensus import InvalidProposal, ProviderError, RoundRecord
from p2pnode.consensus.rules import priority


class Publisher(Protocol):
    """Sends a message to every peer (gossip); returns once it is handed to the network."""

    async def publish(self, message: Message) -> None: ...


class Synchronizer(Protocol):
    async def synchronize(self, existing: Frame | None) -> Frame: ...


@dataclass
class Sent:
    """The latest messages of each kind this peer published, re-sent while a round stalls."""

    liveness: Liveness | None = None
    proposal: Proposal | None = None
    votes: tuple[VoteMsg, ...] = ()
    """The votes of the last two attempts this peer voted in: one that moved on to a later
    attempt still shows its vote to peers that missed it in the attempt they are in."""
    precommit: Confirmation | None = None
    relay: Confirmation | None = None
    """Another prover's precommit carrying the newest vote certificate this peer knows at the
    rank: passed on as received, so a certificate reaches every peer even if its signers
    are gone (a locked prover needs it to release its lock, an unlocked one to vote for it)."""
    commit: Confirmation | None = None
    """The commit of this peer's final tip: what a peer still deciding that rank needs."""

    def heard(self, message: Confirmation) -> None:
        """Keep `message` to pass on if its certificate is the newest known at its rank."""
        rank = message.frame.round
        known = [m for m in (self.relay, self.precommit) if m is not None and m.frame.round == rank]
        if all(_attempt(m) < _attempt(message) for m in known):
            self.relay = message

    def voted(self, message: VoteMsg) -> None:
        vote = message.vote
        kept = [
            m for m in self.votes if m.vote.round == vote.round and m.vote.attempt < vote.attempt
        ]
        self.votes = (*kept[-1:], message)

    def at(self, rank: int) -> list[Message]:
        """What to send again while deciding `rank` (the commit is of rank - 1)."""
        found: list[Message] = []
        if self.liveness is not None and self.liveness.rank == rank:
            found.append(self.liveness)
        if self.proposal is not None and self.proposal.frame.round == rank:
            found.append(self.proposal)
        found.extend(message for message in self.votes if message.vote.round == rank)
        if self.precommit is not None and self.precommit.frame.round == rank:
            found.append(self.precommit)
        if self.relay is not None and self.relay.frame.round == rank:
            found.append(self.relay)
        if self.commit is not None and self.commit.frame.round >= rank - 1:
            found.append(self.commit)
        return found


@dataclass
class Precommits:
    """Precommit signatures received with confirmations: (rank, attempt, sender) → signature."""

    signatures: dict[tuple[int, int, bytes], tuple[bytes, bytes]] = field(default_factory=dict)

    def add(self, rank: int, attempt: int, sender: bytes, frame_id: bytes, sig: bytes) -> bool:
        """Keep the first precommit per sender and attempt; False if this one contradicts it."""
        held = self.signatures.setdefault((rank, attempt, sender), (frame_id, sig))
        return held[0] == frame_id

    def of(self, rank: int, attempt: int, frame_id: bytes) -> dict[bytes, bytes]:
        return {
            sender: sig
            for (r, a, sender), (fid, sig) in self.signatures.items()
            if r == rank and a == attempt and fid == frame_id
        }

    def prune_through(self, rank: int) -> None:
        for key in [k for k in self.signatures if k[0] <= rank]:
            del self.signatures[key]


class ChainProviders:
    """Sync, voting (with attempts), leader and liveness providers of one prover."""

    def __init__(
        self,
        genesis: Genesis,
        keypair: Keypair,
        store: ChainStore,
        mempool: Mempool,
        publisher: Publisher,
        synchronizer: Synchronizer,
        clock: Callable[[], int],
        checker: FrameChecker | None = None,
    ) -> None:
        self.genesis = genesis
        self.keypair = keypair
        self.store = store
        self.leaders = LeaderOrder(genesis, store.frame)
        self.mempool = mempool
        self.publisher = publisher
        self.synchronizer = synchronizer
        self.clock = clock
        self.checker = checker or FrameChecker(genesis)
        self.precommits = Precommits()
        self.sent = Sent()

    def restore(self, record: RoundRecord[Frame] | None) -> None:
        """After a restart, re-send what this peer stored instead of signing anything anew: the
        commit of its final tip, and its proposal, vote and precommit of the round it was in."""
        tip = self.store.tip()
        if tip.certificate is not None and tip.certificate.kind is CertKind.COMMIT:
            self.sent.commit = self._commit_message(tip)
        for vote in self.store.last_votes(tip.round + 1, 2):
            self.sent.voted(VoteMsg(vote))
        if record is None or record.rank != tip.round + 1:
            return
        if record.proposal is not None:
            self.sent.proposal = Proposal(record.proposal)
        if record.lock is not None:
            self.sent.precommit = self._precommit_message(record.lock.frame)

    @property
    def me(self) -> bytes:
        return self.keypair.public

    # -- sync and leader -----------------------------------------------------------------

    async def synchronize(self, existing: Frame | None) -> Frame:
        return await self.synchronizer.synchronize(existing)

    async def get_next_leaders(self, prior: Frame | None) -> list[ProverId]:
        rank = (prior if prior is not None else self.store.tip()).round + 1
        return self.leaders(rank)

    async def prove_next_state(self, prior: Frame | None, collected: Collected) -> Frame:
        parent = prior if prior is not None else self.store.tip()
        rank = parent.round + 1
        challenge = frame_challenge(self.genesis, rank, parent.id, self.me, collected.root)
        output, proof = await prove_async(challenge, self.genesis.difficulty, self.genesis.vdf_bits)
        unsigned = Frame(
            round=rank,
            parent=parent.id,
            prover=self.me,
            timestamp=max(self.clock(), parent.timestamp + 1),
            root=collected.root,
            mutations=collected.mutations,
            difficulty=self.genesis.difficulty,
            output=output,
            proof=proof,
            signature=b"",
        )
        signature = sign(self.keypair, self.genesis.network, frame_statement(unsigned))
        proven = replace(unsigned, signature=signature)
        self.checker.vouch(proven)
        return proven

    # -- liveness ------------------------------------------------------------------------

    async def collect(self) -> Collected:
        rank = self.store.tip().round + 1
        return Collected.of(rank, self.mempool.take())

    async def send_liveness(self, prior: Frame | None, collected: Collected) -> None:
        statement = liveness_statement(collected.round, self.me, collected.root)
        message = Liveness(
            collected.round,
            self.me,
            collected.root,
            sign(self.keypair, self.genesis.network, statement),
        )
        self.sent.liveness = message
        await self.publisher.publish(message)

    # -- voting --------------------------------------------------------------------------

    async def send_proposal(self, proposal: Frame) -> None:
        message = Proposal(proposal)
        self.sent.proposal = message
        await self.publisher.publish(message)

    async def decide_and_send_vote(
        self, proposals: Mapping[str, Frame], attempt: int = 0
    ) -> tuple[ProverId, Vote]:
        if not proposals:
            raise ProviderError("no proposal to vote for")
        rank = next(iter(proposals.values())).round
        vote = self.store.vote(rank, attempt)
        if vote is None:
            frame = self._choose(proposals, attempt)
            # Gossip is judged without the proof of work; the frame a vote vouches for is not.
            problem = await self.checker.proof_problem(frame) or self._final_problem(frame)
            if problem is not None:
                raise InvalidProposal(ProverId(frame.prover).identity(), frame.identity(), problem)
            statement = vote_statement(rank, attempt, frame.id)
            signature = sign(self.keypair, self.genesis.network, statement)
            vote = Vote(rank, attempt, frame.id, frame.prover, self.me, signature)
            self.store.save_vote(vote)  # durable before it is published
        message = VoteMsg(vote)
        self.sent.voted(message)
        await self.publisher.publish(message)
        return ProverId(vote.proposer), vote

    def _final_problem(self, frame: Frame) -> str | None:
        """Whether the frame holds a mutation an earlier frame made final. Every honest voter
        holds the same chain below it (a proposal it votes for extends its tip), so all answer
        alike."""
        if self.store.final_among([mutation_id(data) for data in frame.mutations]):
            return "holds a mutation final already"
        return None

    def _choose(self, proposals: Mapping[str, Frame], attempt: int) -> Frame:
        """The highest-priority proposal (the engine passes one when it runs attempts)."""
        tip = self.store.tip()
        order = [p.identity() for p in self.leaders(tip.round + 1)]
        rotated = priority(order, attempt)
        ranked = sorted(proposals, key=lambda p: rotated.index(p) if p in rotated else len(order))
        frame = proposals[ranked[0]]
        if frame.round != tip.round + 1 or frame.parent != tip.id:
            why = "does not extend this peer's final frame"
            raise InvalidProposal(ranked[0], frame.identity(), why)
        return frame.bare()

    def _certified(self, signers_by_frame: Mapping[bytes, set[bytes]]) -> bytes | None:
        for frame_id, signers in sorted(signers_by_frame.items()):
            if sum(self.genesis.is_prover(s) for s in signers) >= self.genesis.quorum:
                return frame_id
        return None

    async def is_quorum(self, proposal_votes: Mapping[str, Vote]) -> bool:
        return self._certified(_voters_by_frame(proposal_votes)) is not None

    async def finalize_votes(
        self, proposals: Mapping[str, Frame], proposal_votes: Mapping[str, Vote]
    ) -> tuple[Frame, ProverId]:
        frame_id = self._certified(_voters_by_frame(proposal_votes))
        frame = next((f for f in proposals.values() if f.id == frame_id), None)
        if frame_id is None or frame is None:
            raise ProviderError("no certified frame at hand")
        votes = [v for v in proposal_votes.values() if v.frame == frame_id]
        signatures = {v.voter: v.signature for v in votes}
        certificate = certs.build(self.genesis, CertKind.VOTES, votes[0].attempt, signatures)
        return frame.bare().with_certificate(certificate), ProverId(frame.prover)

    async def send_confirmation(self, finalized: Frame) -> None:
        certificate = finalized.certificate
        if certificate is None:
            raise ProviderError("a confirmation needs a certificate")
        if certificate.kind is CertKind.VOTES:
            # Durable before it is published, like a vote: the audit trail of what was signed.
            self.store.save_precommit(finalized.round, certificate.attempt, finalized.id)
            message = self._precommit_message(finalized)
            self.precommits.add(
                finalized.round, certificate.attempt, self.me, finalized.id, message.signature
            )
            self.sent.precommit = message
        else:
            message = self._commit_message(finalized)
            self.sent.commit = message
        await self.publisher.publish(message)

    def _precommit_message(self, frame: Frame) -> Confirmation:
        assert frame.certificate is not None
        statement = precommit_statement(frame.round, frame.certificate.attempt, frame.id)
        return Confirmation(frame, self.me, sign(self.keypair, self.genesis.network, statement))

    def _commit_message(self, frame: Frame) -> Confirmation:
        assert frame.certificate is not None
        statement = final_statement(frame.round, frame.certificate.attempt, frame.id)
        return Confirmation(frame, self.me, sign(self.keypair, self.genesis.network, statement))

    async def is_commit(self, confirmations: Mapping[str, Frame]) -> bool:
        return self._commit_of(confirmations) is not None

    def _commit_of(self, confirmations: Mapping[str, Frame]) -> Frame | None:
        for frame in confirmations.values():
            if frame.certificate is not None and frame.certificate.kind is CertKind.COMMIT:
                return frame
        for frame in confirmations.values():
            certificate = frame.certificate
            if certificate is None:
                continue
            signatures = self.precommits.of(frame.round, certificate.attempt, frame.id)
            if sum(self.genesis.is_prover(s) for s in signatures) >= self.genesis.quorum:
                commit = certs.build(self.genesis, CertKind.COMMIT, certificate.attempt, signatures)
                return frame.bare().with_certificate(commit)
        return None

    async def finalize_commit(self, confirmations: Mapping[str, Frame]) -> Frame:
        committed = self._commit_of(confirmations)
        if committed is None:
            raise ProviderError("no commit certificate")
        return committed

    # -- finality ------------------------------------------------------------------------

    def on_finalized(self, state: Frame) -> None:
        """Keep the final frame; it becomes the confirmation re-sent to peers that lag.

        A frame sync already stored must be the one stored; anything else raises StorageError,
        which stops the engine: a final frame is never dropped quietly.
        """
        if state.round > self.store.tip().round:
            self.store.append(state)
        elif (held := self.store.frame(state.round)) is None or held.id != state.id:
            raise StorageError(f"a different frame is final at rank {state.round} in the store")
        self.mempool.finalized(state.mutations)
        self.precommits.prune_through(state.round)
        if state.certificate is not None and state.certificate.kind is CertKind.COMMIT:
            self.sent.commit = self._commit_message(state)


def _attempt(message: Confirmation) -> int:
    certificate = message.frame.certificate
    return -1 if certificate is None else certificate.attempt


def _voters_by_frame(votes: Mapping[str, Vote]) -> dict[bytes, set[bytes]]:
    by_frame: dict[bytes, set[bytes]] = {}
    for vote in votes.values():
        by_frame.setdefault(vote.frame, set()).add(vote.voter)
    return by_frame
