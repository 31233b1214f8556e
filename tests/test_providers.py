"""The real providers: proven frames, journaled votes, vote and commit certificates, finality."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from p2pnode.chain import vdf
from p2pnode.chain.certs import CertificateChecker
from p2pnode.chain.crypto import (
    Keypair,
    final_statement,
    frame_statement,
    liveness_statement,
    precommit_statement,
    sign,
    verify,
    vote_statement,
)
from p2pnode.chain.genesis import Genesis, leader_order
from p2pnode.chain.mempool import Admission, Mempool
from p2pnode.chain.messages import Confirmation, Liveness, Message, Proposal, VoteMsg
from p2pnode.chain.providers import ChainProviders, Precommits, Sent
from p2pnode.chain.storage import StorageError
from p2pnode.chain.types import (
    HASH_SIZE,
    CertKind,
    Collected,
    Frame,
    ProverId,
    Vote,
)
from p2pnode.chain.validation import FrameChecker
from p2pnode.consensus import (
    CommitVotingProvider,
    InvalidProposal,
    Lock,
    ProviderError,
    RoundRecord,
)
from p2pnode.peer.store import Store
from tests import chainkit
from tests.chainkit import DIFFICULTY, T0, FakeSync, Recorder

NETWORK = "providers-test"
NOW = T0 + 5_000
KEYS = chainkit.keypairs(11, 12, 13, 14)
(OUTSIDER,) = chainkit.keypairs(77)
GENESIS = chainkit.make_genesis(NETWORK, KEYS)
KEYPAIR_OF = {k.public: k for k in (*KEYS, OUTSIDER)}
ORDER = [KEYPAIR_OF[p.key] for p in leader_order(GENESIS, 1, {0: GENESIS.frame()}.get)]
"""The provers by priority at rank 1, highest first."""
ME = ORDER[3]
"""The prover under test: the lowest priority, so its own frame never wins by accident."""


class Peer:
    """One prover's providers over a real store."""

    def __init__(
        self,
        path: Path,
        keypair: Keypair,
        clock: Callable[[], int] = lambda: NOW,
        genesis: Genesis = GENESIS,
    ):
        self.store = Store(path, genesis)
        self.mempool = Mempool()
        self.publisher = Recorder()
        self.sync = FakeSync(genesis.frame())
        self.providers = ChainProviders(
            genesis, keypair, self.store, self.mempool, self.publisher, self.sync, clock
        )


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Peer]:
    made = Peer(tmp_path / "me.sqlite", ME)
    yield made
    made.store.close()


def proposal(keypair: Keypair, mutations: tuple[bytes, ...] = ()) -> Frame:
    """A valid frame at rank 1 by `keypair` (built by hand, as another prover would)."""
    return chainkit.proven(GENESIS, keypair, mutations, timestamp=T0 + 10)


X_MUTATIONS = (b"m1", b"m2")


def frame_x() -> Frame:
    """The top leader's proposal."""
    return proposal(ORDER[0], X_MUTATIONS)


def frame_y() -> Frame:
    """The second leader's proposal."""
    return proposal(ORDER[1])


def keyed(*frames: Frame) -> dict[str, Frame]:
    return {ProverId(f.prover).identity(): f for f in frames}


def vote_for(voter: Keypair, frame: Frame, attempt: int = 0) -> Vote:
    return chainkit.signed_vote(
        NETWORK, voter, frame.id, frame.round, attempt, proposer=frame.prover
    )


def ballot(*votes: Vote) -> dict[str, Vote]:
    return {ProverId(v.voter).identity(): v for v in votes}


def precommit(peer: Peer, sender: Keypair, frame: Frame, attempt: int) -> None:
    signature = sign(sender, NETWORK, precommit_statement(frame.round, attempt, frame.id))
    peer.providers.precommits.add(frame.round, attempt, sender.public, frame.id, signature)


def index(keypair: Keypair) -> int:
    found = GENESIS.index_of(keypair.public)
    assert found is not None
    return found


def certified(frame: Frame, kind: CertKind, attempt: int, signers: list[Keypair]) -> Frame:
    return chainkit.certified(GENESIS, frame, kind, attempt, signers)


# --- leader, proving, liveness ----------------------------------------------------------------


def test_the_providers_run_attempts(peer: Peer) -> None:
    assert isinstance(peer.providers, CommitVotingProvider)


async def test_prove_next_state_makes_a_frame_the_checker_accepts(peer: Peer) -> None:
    collected = Collected.of(1, (b"a", b"b"))
    frame = await peer.providers.prove_next_state(None, collected)
    assert frame.round == 1
    assert frame.parent == GENESIS.frame().id
    assert frame.prover == ME.public
    assert frame.timestamp == NOW
    assert frame.mutations == (b"a", b"b")
    assert frame.root == collected.root
    assert frame.difficulty == DIFFICULTY
    assert frame.certificate is None
    checker = FrameChecker(GENESIS)
    assert checker.problem(frame, GENESIS.frame()) is None
    # The next rank, on an explicit prior.
    following = await peer.providers.prove_next_state(frame, Collected.of(2, ()))
    assert (following.round, following.parent) == (2, frame.id)
    assert following.timestamp == NOW + 1  # after its parent's, whatever the clock says
    assert checker.problem(following, frame) is None


async def test_a_slow_clock_still_gives_a_timestamp_after_the_parent(tmp_path: Path) -> None:
    slow = Peer(tmp_path / "slow.sqlite", ME, clock=lambda: 0)
    try:
        frame = await slow.providers.prove_next_state(None, Collected.of(1, ()))
        assert frame.timestamp == T0 + 1
        assert FrameChecker(GENESIS).problem(frame, GENESIS.frame()) is None
    finally:
        slow.store.close()


async def test_leaders_collect_liveness_and_sync(peer: Peer) -> None:
    providers = peer.providers
    assert await providers.get_next_leaders(None) == [k.prover for k in ORDER]
    assert await providers.get_next_leaders(frame_x()) == leader_order(GENESIS, 2, peer.store.frame)
    for item in (b"one", b"two"):
        peer.mempool.add(item)
    collected = await providers.collect()
    assert collected == Collected.of(1, (b"one", b"two"))
    await providers.send_liveness(None, collected)
    (message,) = peer.publisher.messages
    assert isinstance(message, Liveness)
    assert (message.rank, message.prover, message.root) == (1, ME.public, collected.root)
    assert verify(
        ME.public, NETWORK, liveness_statement(1, ME.public, collected.root), message.signature
    )
    assert providers.sent.liveness == message
    assert await providers.synchronize(GENESIS.frame()) == GENESIS.frame()
    assert peer.sync.calls == [GENESIS.frame()]
    await providers.send_proposal(frame_y())
    assert peer.publisher.messages[-1] == Proposal(frame_y())
    assert providers.sent.proposal == Proposal(frame_y())


# --- votes ----------------------------------------------------------------------------------


async def test_the_vote_is_stored_before_it_is_published(peer: Peer) -> None:
    stored_when_published: list[Vote | None] = []

    def check(message: Message) -> None:
        assert isinstance(message, VoteMsg)
        stored_when_published.append(peer.store.vote(message.vote.round, message.vote.attempt))

    peer.publisher.check = check
    proposer, vote = await peer.providers.decide_and_send_vote(keyed(frame_y(), frame_x()))
    assert proposer == ORDER[0].prover
    assert vote == Vote(1, 0, frame_x().id, ORDER[0].public, ME.public, vote.signature)
    assert verify(ME.public, NETWORK, vote_statement(1, 0, frame_x().id), vote.signature)
    assert stored_when_published == [vote]
    stored = peer.store.vote(1, 0)
    assert stored is not None
    assert stored.signature == vote.signature
    assert peer.publisher.messages == [VoteMsg(vote)]
    assert peer.providers.sent.votes == (VoteMsg(vote),)


async def test_the_leader_priority_rotates_with_the_attempt(peer: Peer) -> None:
    proposals = keyed(frame_x(), frame_y())
    chosen = {}
    for attempt in (0, 1, 2, 4, 5):
        _, vote = await peer.providers.decide_and_send_vote(proposals, attempt)
        assert vote.attempt == attempt
        chosen[attempt] = vote.frame
    x, y = frame_x().id, frame_y().id
    # Attempt a puts ORDER[a % 4] first; with only X and Y at hand the first of them wins.
    assert chosen == {0: x, 1: y, 2: x, 4: x, 5: y}


async def test_a_second_request_returns_the_same_vote(peer: Peer) -> None:
    _, first = await peer.providers.decide_and_send_vote(keyed(frame_x(), frame_y()), 3)
    proposer, again = await peer.providers.decide_and_send_vote(keyed(frame_y()), 3)
    assert again == first
    assert again.signature == first.signature
    assert proposer == ORDER[0].prover
    assert peer.publisher.messages == [VoteMsg(first), VoteMsg(first)]


async def test_a_restarted_peer_keeps_its_vote(tmp_path: Path) -> None:
    before = Peer(tmp_path / "restart.sqlite", ME)
    _, first = await before.providers.decide_and_send_vote(keyed(frame_x()))
    before.store.close()
    after = Peer(tmp_path / "restart.sqlite", ME)
    try:
        _, again = await after.providers.decide_and_send_vote(keyed(frame_y()))
        assert again == first
    finally:
        after.store.close()


@pytest.mark.parametrize(
    "change",
    [
        {"parent": b"\x05" * HASH_SIZE},
        {"round": 2},
    ],
)
async def test_a_proposal_not_extending_the_tip_is_refused(
    peer: Peer, change: dict[str, object]
) -> None:
    stray = replace(frame_x(), **change)  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match="does not extend"):
        await peer.providers.decide_and_send_vote({ORDER[0].prover.identity(): stray})
    assert peer.store.vote(stray.round, 0) is None
    assert peer.publisher.messages == []
    assert peer.providers.sent.votes == ()


async def test_no_proposal_no_vote(peer: Peer) -> None:
    with pytest.raises(ProviderError, match="no proposal"):
        await peer.providers.decide_and_send_vote({})
    assert peer.publisher.messages == []


# --- vote certificates ----------------------------------------------------------------------


async def test_a_vote_quorum_needs_n_minus_f_votes_for_one_frame(peer: Peer) -> None:
    providers = peer.providers
    x, y = frame_x(), frame_y()
    proposals = keyed(x, y)
    two = [vote_for(k, x, 2) for k in ORDER[:2]]
    cases = [
        ballot(*two),
        ballot(*two, vote_for(ORDER[2], y, 2)),  # split
        ballot(*two, vote_for(OUTSIDER, x, 2)),  # a non-prover does not count
    ]
    for votes in cases:
        assert not await providers.is_quorum(votes)
        with pytest.raises(ProviderError, match="no certified frame"):
            await providers.finalize_votes(proposals, votes)
    votes = ballot(*two, vote_for(ORDER[3], x, 2), vote_for(OUTSIDER, x, 2))
    assert await providers.is_quorum(votes)
    frame, proposer = await providers.finalize_votes(proposals, votes)
    assert proposer == ORDER[0].prover
    assert frame == x
    certificate = frame.certificate
    assert certificate is not None
    assert certificate.kind is CertKind.VOTES
    assert certificate.attempt == 2
    assert certificate.signers == tuple(sorted(index(k) for k in (*ORDER[:2], ORDER[3])))
    assert CertificateChecker(GENESIS).valid(frame, CertKind.VOTES)
    everyone = ballot(*(vote_for(k, x, 2) for k in ORDER))
    full, _ = await providers.finalize_votes(proposals, everyone)
    assert full.certificate is not None
    assert full.certificate.signers == (0, 1, 2, 3)
    assert CertificateChecker(GENESIS).valid(full, CertKind.VOTES)


async def test_a_quorum_for_a_frame_not_at_hand_cannot_be_finalized(peer: Peer) -> None:
    votes = ballot(*(vote_for(k, frame_x()) for k in ORDER[:3]))
    assert await peer.providers.is_quorum(votes)
    with pytest.raises(ProviderError, match="no certified frame"):
        await peer.providers.finalize_votes(keyed(frame_y()), votes)


async def test_send_confirmation_signs_a_precommit(peer: Peer) -> None:
    providers = peer.providers
    voted = certified(frame_x(), CertKind.VOTES, 4, list(ORDER[:3]))
    await providers.send_confirmation(voted)
    (message,) = peer.publisher.messages
    assert isinstance(message, Confirmation)
    assert message.frame == voted
    assert message.frame.certificate == voted.certificate
    assert message.sender == ME.public
    assert verify(ME.public, NETWORK, precommit_statement(1, 4, voted.id), message.signature)
    assert providers.precommits.of(1, 4, voted.id) == {ME.public: message.signature}
    assert providers.sent.precommit == message
    assert providers.sent.commit is None
    assert peer.store.signed() == [("precommit", 1, 4, voted.id)]


async def test_a_confirmation_of_a_commit_signs_the_final_statement(peer: Peer) -> None:
    committed = certified(frame_x(), CertKind.COMMIT, 1, list(ORDER[:3]))
    await peer.providers.send_confirmation(committed)
    (message,) = peer.publisher.messages
    assert isinstance(message, Confirmation)
    assert verify(ME.public, NETWORK, final_statement(1, 1, committed.id), message.signature)
    assert not verify(
        ME.public, NETWORK, precommit_statement(1, 1, committed.id), message.signature
    )
    assert peer.providers.precommits.signatures == {}


async def test_a_confirmation_needs_a_certificate(peer: Peer) -> None:
    with pytest.raises(ProviderError, match="needs a certificate"):
        await peer.providers.send_confirmation(frame_x())
    assert peer.publisher.messages == []
    assert peer.providers.sent.precommit is None
    assert peer.providers.sent.commit is None


# --- commit certificates --------------------------------------------------------------------


async def test_a_commit_needs_n_minus_f_precommits(peer: Peer) -> None:
    providers = peer.providers
    voted = certified(frame_x(), CertKind.VOTES, 1, list(ORDER[:3]))
    confirmations = {ORDER[0].prover.identity(): voted}
    # Precommits that do not count: another attempt, another frame, a non-prover.
    for sender in ORDER[:3]:
        precommit(peer, sender, voted, 0)
    precommit(peer, ORDER[1], frame_y(), 1)
    precommit(peer, ORDER[0], voted, 1)
    precommit(peer, OUTSIDER, voted, 1)
    assert not await providers.is_commit(confirmations)
    with pytest.raises(ProviderError, match="no commit certificate"):
        await providers.finalize_commit(confirmations)
    precommit(peer, ORDER[2], voted, 1)
    assert not await providers.is_commit(confirmations)
    precommit(peer, ORDER[3], voted, 1)
    assert await providers.is_commit(confirmations)
    committed = await providers.finalize_commit(confirmations)
    assert committed == voted
    certificate = committed.certificate
    assert certificate is not None
    assert certificate.kind is CertKind.COMMIT
    assert certificate.attempt == 1
    assert certificate.signers == tuple(sorted(index(k) for k in (ORDER[0], ORDER[2], ORDER[3])))
    assert CertificateChecker(GENESIS).valid(committed, CertKind.COMMIT)
    assert FrameChecker(GENESIS).final_problem(committed, GENESIS.frame()) is None


async def test_a_commit_certificate_received_is_a_commit(peer: Peer) -> None:
    committed = certified(frame_y(), CertKind.COMMIT, 6, list(ORDER[1:]))
    confirmations = {
        ORDER[0].prover.identity(): certified(frame_x(), CertKind.VOTES, 6, list(ORDER[:3])),
        ORDER[1].prover.identity(): committed,
    }
    assert await peer.providers.is_commit(confirmations)
    final = await peer.providers.finalize_commit(confirmations)
    assert final == committed
    assert final.certificate == committed.certificate


def test_precommits_keep_the_first_signature_per_sender() -> None:
    book = Precommits()
    book.add(3, 1, b"s" * 32, b"f" * 32, b"first")
    book.add(3, 1, b"s" * 32, b"g" * 32, b"second")
    book.add(4, 0, b"t" * 32, b"f" * 32, b"other")
    assert book.of(3, 1, b"f" * 32) == {b"s" * 32: b"first"}
    assert book.of(3, 1, b"g" * 32) == {}
    book.prune_through(3)
    assert book.signatures == {(4, 0, b"t" * 32): (b"f" * 32, b"other")}


# --- finality -------------------------------------------------------------------------------


async def test_on_finalized_stores_clears_and_keeps_the_confirmation(peer: Peer) -> None:
    providers = peer.providers
    for item in (*X_MUTATIONS, b"pending"):
        assert peer.mempool.add(item) is Admission.ADDED
    voted = certified(frame_x(), CertKind.VOTES, 2, list(ORDER[:3]))
    precommit(peer, ORDER[0], voted, 2)
    providers.precommits.add(2, 0, ORDER[1].public, b"n" * 32, b"next")
    committed = certified(frame_x(), CertKind.COMMIT, 2, list(ORDER[:3]))
    providers.on_finalized(committed)
    tip = peer.store.tip()
    assert tip == committed
    assert tip.certificate == committed.certificate
    assert len(peer.mempool) == 1
    assert peer.mempool.take() == (b"pending",)
    assert peer.mempool.add(b"m1") is Admission.DUPLICATE
    assert providers.precommits.signatures == {(2, 0, ORDER[1].public): (b"n" * 32, b"next")}
    resend = providers.sent.commit
    assert resend is not None
    assert resend.frame == committed
    assert resend.frame.certificate == committed.certificate
    assert resend.sender == ME.public
    assert verify(ME.public, NETWORK, final_statement(1, 2, committed.id), resend.signature)
    assert peer.publisher.messages == []  # kept for re-broadcast, not sent now
    providers.on_finalized(committed)  # again: nothing to append, no error
    assert peer.store.tip() == committed
    assert peer.store.frames(1, 10) == [committed]


def test_another_frame_final_at_a_stored_rank_is_an_error(peer: Peer) -> None:
    """A final frame is never dropped quietly: the error stops the engine."""
    committed = certified(frame_x(), CertKind.COMMIT, 0, list(ORDER[:3]))
    peer.providers.on_finalized(committed)
    other = certified(frame_y(), CertKind.COMMIT, 0, list(ORDER[:3]))
    with pytest.raises(StorageError, match="a different frame is final at rank 1"):
        peer.providers.on_finalized(other)
    # The store's own refusals are the chain's storage errors too.
    with pytest.raises(StorageError, match="does not extend the tip"):
        peer.store.append(other)
    assert peer.store.tip() == committed


# --- re-broadcast ---------------------------------------------------------------------------


def test_sent_at_returns_what_to_send_again_for_a_rank() -> None:
    x = frame_x()
    rank_two = replace(x, round=2)
    liveness = Liveness(2, ME.public, x.root, b"l" * 64)
    offered = Proposal(rank_two)
    vote = VoteMsg(vote_for(ME, rank_two))
    confirmation = Confirmation(
        certified(x, CertKind.COMMIT, 0, list(ORDER[:3])), ME.public, b"c" * 64
    )
    precommit = Confirmation(
        certified(rank_two, CertKind.VOTES, 0, list(ORDER[:3])), ME.public, b"p" * 64
    )
    sent = Sent(liveness, offered, (vote,), precommit, commit=confirmation)
    # The precommit of the rank being decided, and the commit of the rank before it.
    assert sent.at(2) == [liveness, offered, vote, precommit, confirmation]
    assert sent.at(1) == [confirmation]
    assert sent.at(3) == []
    assert Sent().at(1) == []
    assert Sent(commit=confirmation).at(0) == [confirmation]


def test_the_votes_of_the_last_two_attempts_are_sent_again() -> None:
    """A prover that moved on to a later attempt still shows its vote of the attempt before,
    for peers that missed it there and cannot end that attempt without it."""
    rank_two = replace(frame_x(), round=2)
    votes = [VoteMsg(vote_for(ME, rank_two, attempt)) for attempt in range(3)]
    sent = Sent()
    for vote in votes:
        sent.voted(vote)
    assert sent.at(2) == votes[1:]
    sent.voted(VoteMsg(vote_for(ME, replace(frame_x(), round=3))))  # a new rank: a new start
    assert sent.at(2) == []


def test_the_newest_certificate_heard_is_passed_on() -> None:
    """A precommit of another prover is kept to pass on while its certificate is the newest
    this peer knows at the rank, own precommit included."""
    rank_two = replace(frame_x(), round=2)

    def precommit_at(attempt: int, signer: Keypair, frame: Frame = rank_two) -> Confirmation:
        certificate = certified(frame, CertKind.VOTES, attempt, list(ORDER[:3]))
        return Confirmation(certificate, signer.public, b"p" * 64)

    sent = Sent(precommit=precommit_at(1, ME))
    kept: list[Confirmation | None] = []
    for heard in (
        precommit_at(1, ORDER[0]),  # no newer than our own
        precommit_at(3, ORDER[0]),
        precommit_at(2, ORDER[1]),  # older than the one kept
        precommit_at(0, ORDER[1], replace(frame_x(), round=3)),  # the next rank
    ):
        sent.heard(heard)
        kept.append(sent.relay)
    newest = precommit_at(3, ORDER[0])
    assert kept == [None, newest, newest, precommit_at(0, ORDER[1], replace(frame_x(), round=3))]
    assert Sent(precommit=precommit_at(1, ME), relay=newest).at(2) == [
        precommit_at(1, ME),
        newest,
    ]


async def test_a_proposal_holding_a_mutation_final_already_gets_no_vote(peer: Peer) -> None:
    """A mutation is final at most once: a Byzantine leader repeating one final at an earlier
    rank got it finalized again."""
    first = chainkit.certified(GENESIS, frame_x(), CertKind.COMMIT, 0, ORDER[:3])
    peer.store.append(first)
    again = chainkit.proven(
        GENESIS, ORDER[1], (b"new", X_MUTATIONS[1]), timestamp=T0 + 20, parent=first
    )
    with pytest.raises(InvalidProposal, match="holds a mutation final already"):
        await peer.providers.decide_and_send_vote(keyed(again))
    assert peer.store.vote(2, 0) is None
    fresh = chainkit.proven(GENESIS, ORDER[1], (b"new",), timestamp=T0 + 20, parent=first)
    await peer.providers.decide_and_send_vote(keyed(fresh))
    assert peer.store.vote(2, 0) is not None


async def test_a_proposal_with_a_bad_proof_gets_no_vote(peer: Peer) -> None:
    """Gossip is judged without the proof of work; the one proposal a peer votes for is
    checked, and a bad proof gets no vote (and no stored vote)."""
    good = frame_x()
    forged = replace(good, output=bytes(reversed(good.output)))
    forged = replace(forged, signature=sign(ORDER[0], NETWORK, frame_statement(forged)))
    with pytest.raises(InvalidProposal, match="bad proof of work") as raised:
        await peer.providers.decide_and_send_vote(keyed(forged))
    # A verdict on that proposal, for the engine to drop it and vote for another.
    assert (raised.value.proposer, raised.value.frame_id) == (
        ProverId(ORDER[0].public).identity(),
        forged.identity(),
    )
    assert peer.store.vote(1, 0) is None
    assert peer.publisher.messages == []


async def test_a_restarted_prover_re_sends_what_it_stored(tmp_path: Path) -> None:
    """After a restart the providers re-send, never re-sign: the commit of the final tip, and
    the proposal, vote and precommit of the round the peer was in."""
    first = Peer(tmp_path / "me.sqlite", ME)
    committed = certified(frame_x(), CertKind.COMMIT, 0, list(ORDER[:3]))
    first.providers.on_finalized(committed)
    own = replace(proposal(ME), round=2, parent=committed.id)
    voted = [vote_for(ME, own, attempt) for attempt in (0, 1, 2)]
    for vote in voted:
        first.store.save_vote(vote)
    locked = certified(own, CertKind.VOTES, 1, list(ORDER[:3]))
    await first.providers.send_confirmation(locked)
    sent = first.providers.sent
    first.store.close()

    again = Peer(tmp_path / "me.sqlite", ME)
    try:
        assert again.providers.sent.at(2) == []  # nothing until the journal is read
        again.providers.restore(RoundRecord(2, 1, True, Lock(1, "x", locked), own))
        restored = again.providers.sent
        assert restored.commit == sent.commit
        assert restored.votes == (VoteMsg(voted[1]), VoteMsg(voted[2]))
        assert restored.proposal == Proposal(own)
        assert restored.precommit == sent.precommit
        assert again.publisher.messages == []  # re-sent by the re-broadcast, not now
    finally:
        again.store.close()


async def test_inbound_gossip_leaves_the_proof_to_the_vote() -> None:
    """FrameChecker without the proof accepts what only the proof would refuse."""
    checker = FrameChecker(GENESIS)
    good = frame_x()
    forged = replace(good, output=bytes(reversed(good.output)))
    forged = replace(forged, signature=sign(ORDER[0], NETWORK, frame_statement(forged)))
    assert checker.problem(forged, GENESIS.frame(), proof=False) is None
    assert checker.problem(forged, GENESIS.frame()) == "bad proof of work"
    assert await checker.proof_problem(forged) == "bad proof of work"
    assert await checker.proof_problem(good) is None


async def test_proofs_are_made_and_checked_in_the_genesis_group_size(tmp_path: Path) -> None:
    small = replace(GENESIS, vdf_bits=512)
    prover = Peer(tmp_path / "small.sqlite", ME, genesis=small)
    try:
        made = await prover.providers.prove_next_state(None, Collected.of(1, ()))
    finally:
        prover.store.close()
    assert await FrameChecker(small).proof_problem(made) is None
    assert await FrameChecker(GENESIS).proof_problem(made) == "bad proof of work"
    made_small = chainkit.proven(small, ORDER[0], X_MUTATIONS, timestamp=T0 + 10)
    assert await FrameChecker(small).proof_problem(made_small) is None
    assert await FrameChecker(small).proof_problem(frame_x()) == "bad proof of work"
    assert await FrameChecker(GENESIS).proof_problem(made_small) == "bad proof of work"


async def test_a_prover_voting_for_its_own_proposal_does_not_verify_its_proof(
    peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = await peer.providers.prove_next_state(None, Collected.of(1, ()))
    checked: list[bytes] = []

    async def verify(challenge: bytes, *args: object) -> bool:
        checked.append(challenge)
        return True

    monkeypatch.setattr(vdf, "verify_async", verify)
    _, vote = await peer.providers.decide_and_send_vote({ProverId(ME.public).identity(): own})
    assert vote.frame == own.id
    assert checked == []
    other = proposal(ORDER[0])
    await peer.providers.decide_and_send_vote({ProverId(ORDER[0].public).identity(): other}, 1)
    assert len(checked) == 1  # another prover's proof is checked
