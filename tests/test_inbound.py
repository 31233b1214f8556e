"""The verdict on gossip: real signed messages judged for a real (not running) engine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from p2pnode.chain import vdf
from p2pnode.chain.crypto import (
    Keypair,
    final_statement,
    liveness_statement,
    precommit_statement,
    sign,
    vote_statement,
)
from p2pnode.chain.mempool import (
    LOCAL,
    LOOKAHEAD,
    MAX_FRAME_MUTATION_BYTES,
    MAX_MUTATION_SIZE,
    Admission,
    Mempool,
)
from p2pnode.chain.messages import (
    Confirmation,
    Liveness,
    MessageKind,
    MutationMsg,
    Proposal,
    VoteMsg,
)
from p2pnode.chain.providers import ChainProviders
from p2pnode.chain.types import (
    HASH_SIZE,
    CertKind,
    Collected,
    Frame,
    ProverId,
    Vote,
    canonical,
    mutations_root,
)
from p2pnode.chain.validation import AHEAD_OF_CLOCK, MAX_CLOCK_AHEAD_MS, FrameChecker
from p2pnode.consensus import Receipt, StateMachine
from p2pnode.net import Topic, Verdict
from p2pnode.peer.inbound import PRECOMMITS_AHEAD, Inbound, verdict_of
from p2pnode.peer.store import Store
from p2pnode.wire.codec import VERSION, encode
from tests import chainkit
from tests.chainkit import DIFFICULTY, T0, FakeSync, Recorder

NETWORK = "inbound-test"
KEYS = chainkit.keypairs(21, 22, 23, 24)
ME, PROPOSER, VOTER, OTHER = KEYS
(OUTSIDER,) = chainkit.keypairs(88)
GENESIS = chainkit.make_genesis(NETWORK, KEYS)
KEYPAIR_OF = {k.public: k for k in (*KEYS, OUTSIDER)}


def peer(keypair: Keypair) -> str:
    return keypair.prover.identity()


@dataclass
class Setup:
    store: Store
    providers: ChainProviders
    machine: StateMachine[Frame, Vote, ProverId, Collected]
    inbound: Inbound

    def judge(self, topic: Topic, origin: Keypair | str, data: bytes) -> Verdict:
        return self.inbound.judge(topic, origin if isinstance(origin, str) else peer(origin), data)

    def nothing_reached_the_engine(self) -> None:
        view = self.machine.round_view()
        assert (view.live, view.proposals, view.votes, view.confirmations) == ((), {}, {}, {})
        assert self.providers.precommits.signatures == {}


def build(
    path: Path,
    tip: Callable[[], Frame] | None = None,
    ahead: Callable[[str, int], None] | None = None,
    relay: Callable[[Confirmation], None] | None = None,
    mempool: Mempool | None = None,
    clock: Callable[[], int] | None = None,
) -> Setup:
    store = Store(path, GENESIS)
    publisher, synchronizer = Recorder(), FakeSync(GENESIS.frame())  # the engine is not run
    pool = Mempool() if mempool is None else mempool
    providers = ChainProviders(
        GENESIS, ME, store, pool, publisher, synchronizer, lambda: T0 + 60_000
    )
    machine: StateMachine[Frame, Vote, ProverId, Collected] = StateMachine(
        ME.prover, store.tip(), True, GENESIS.quorum, providers, providers, providers, providers
    )
    inbound = Inbound(
        GENESIS,
        machine,
        FrameChecker(GENESIS, clock=clock),
        providers.precommits,
        providers.mempool,
        tip or store.tip,
        ahead=ahead,
        relay=relay,
    )
    return Setup(store, providers, machine, inbound)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    made = build(tmp_path / "store.sqlite")
    yield made
    made.machine.close()
    made.store.close()


# --- messages -------------------------------------------------------------------------------


def resigned(frame: Frame, keypair: Keypair) -> Frame:
    return chainkit.resigned(GENESIS, frame, keypair)


def proven(keypair: Keypair = PROPOSER) -> Frame:
    """A valid frame at rank 1 on the genesis frame."""
    return chainkit.proven(GENESIS, keypair, (b"m",), timestamp=T0 + 1)


def liveness(keypair: Keypair, rank: int = 1, *, signer: Keypair | None = None) -> bytes:
    root = mutations_root(())
    statement = liveness_statement(rank, keypair.public, root)
    return encode(Liveness(rank, keypair.public, root, sign(signer or keypair, NETWORK, statement)))


def vote(
    voter: Keypair,
    frame_id: bytes,
    rank: int = 1,
    attempt: int = 0,
    *,
    proposer: bytes = PROPOSER.public,
    signer: Keypair | None = None,
    network: str = NETWORK,
) -> Vote:
    return chainkit.signed_vote(
        network, voter, frame_id, rank, attempt, proposer=proposer, signer=signer
    )


def proposal(frame: Frame) -> bytes:
    return encode(Proposal(frame))


def votes_of(vote_: Vote) -> bytes:
    return encode(VoteMsg(vote_))


def certificate(
    frame: Frame, kind: CertKind, attempt: int, signers: tuple[Keypair, ...], *, as_: str = ""
) -> Frame:
    """`frame` with a certificate `signers` really signed (`as_` names another statement)."""
    statements = {
        "vote": vote_statement(frame.round, attempt, frame.id),
        "precommit": precommit_statement(frame.round, attempt, frame.id),
    }
    statement = statements[as_ or ("vote" if kind is CertKind.VOTES else "precommit")]
    return chainkit.certified(GENESIS, frame, kind, attempt, signers, statement)


def voted(frame: Frame | None = None, attempt: int = 0) -> Frame:
    """`frame` (the valid rank-1 frame) with a vote certificate of three provers."""
    return certificate(frame or proven(), CertKind.VOTES, attempt, (ME, PROPOSER, VOTER))


def confirmation(sender: Keypair, frame: Frame, *, statement: list[object] | None = None) -> bytes:
    certificate_ = frame.certificate
    assert certificate_ is not None
    signed = statement or precommit_statement(frame.round, certificate_.attempt, frame.id)
    return encode(Confirmation(frame, sender.public, sign(sender, NETWORK, signed)))


def confirmation_without_certificate(sender: Keypair) -> bytes:
    """The bytes a confirmation without a certificate would have (the encoder refuses it)."""
    frame = proven()
    body = [
        [*frame.fields(signed=True), None],
        sender.public,
        sign(sender, NETWORK, precommit_statement(1, 0, frame.id)),
    ]
    return canonical([VERSION, int(MessageKind.CONFIRMATION), body])


def synthetic(rank: int) -> Frame:
    """A well-formed frame at a rank whose parent is not known (never checked as a proposal)."""
    return Frame(
        rank,
        b"p" * HASH_SIZE,
        PROPOSER.public,
        T0 + rank,
        mutations_root(()),
        (),
        DIFFICULTY,
        b"o" * vdf.FORM_SIZE,
        b"q" * vdf.FORM_SIZE,
        b"s" * 64,
    )


# --- accepted -------------------------------------------------------------------------------


def test_a_valid_liveness_reaches_the_engine(setup: Setup) -> None:
    assert setup.judge(Topic.LIVENESS, VOTER, liveness(VOTER)) is Verdict.ACCEPT
    assert setup.judge(Topic.LIVENESS, OTHER, liveness(OTHER)) is Verdict.ACCEPT
    assert setup.machine.round_view().live == tuple(sorted((peer(VOTER), peer(OTHER))))
    assert setup.inbound.reasons == Counter()


def test_a_valid_proposal_reaches_the_engine(setup: Setup) -> None:
    assert setup.judge(Topic.PROPOSALS, PROPOSER, proposal(proven())) is Verdict.ACCEPT
    assert setup.machine.round_view().proposals == {peer(PROPOSER): proven().identity()}
    assert setup.inbound.reasons == Counter()


def test_a_valid_vote_reaches_the_engine(setup: Setup) -> None:
    cast = vote(VOTER, proven().id)
    assert setup.judge(Topic.VOTES, VOTER, votes_of(cast)) is Verdict.ACCEPT
    assert setup.machine.round_view().votes == {peer(VOTER): cast.identity()}
    assert setup.inbound.reasons == Counter()


def test_a_valid_confirmation_reaches_the_engine_and_records_the_precommit(setup: Setup) -> None:
    frame = voted()
    data = confirmation(OTHER, frame)
    assert setup.judge(Topic.CONFIRMATIONS, OTHER, data) is Verdict.ACCEPT
    view = setup.machine.round_view()
    assert view.confirmations == {0: (peer(OTHER),)}
    # The certified frame counts as its prover's proposal.
    assert view.proposals == {peer(PROPOSER): frame.identity()}
    signature = sign(OTHER, NETWORK, precommit_statement(1, 0, frame.id))
    assert setup.providers.precommits.of(1, 0, frame.id) == {OTHER.public: signature}
    assert setup.inbound.reasons == Counter()


def test_a_confirmation_of_a_later_attempt_is_recorded_under_its_attempt(setup: Setup) -> None:
    frame = voted(attempt=3)
    assert setup.judge(Topic.CONFIRMATIONS, VOTER, confirmation(VOTER, frame)) is Verdict.ACCEPT
    assert setup.machine.round_view().confirmations == {3: (peer(VOTER),)}
    assert set(setup.providers.precommits.of(1, 3, frame.id)) == {VOTER.public}
    assert setup.providers.precommits.of(1, 0, frame.id) == {}


def test_a_precommit_passed_on_by_another_peer_counts_for_its_signer(tmp_path: Path) -> None:
    """A peer passes on the newest certificate it knows in the precommit that carried it (its
    signers may be gone): the signature speaks for the signer, whoever relays it."""
    relayed: list[Confirmation] = []
    setup = build(tmp_path / "store.sqlite", relay=relayed.append)
    try:
        frame = voted()
        data = confirmation(OTHER, frame)
        assert setup.judge(Topic.CONFIRMATIONS, OUTSIDER, data) is Verdict.ACCEPT
        assert setup.machine.round_view().confirmations == {0: (peer(OTHER),)}
        assert set(setup.providers.precommits.of(1, 0, frame.id)) == {OTHER.public}
        assert [message.sender for message in relayed] == [OTHER.public]
        assert setup.inbound.reasons == Counter()
    finally:
        setup.store.close()


def test_a_second_different_precommit_is_evidence_not_a_reject(setup: Setup) -> None:
    """A prover that precommits two frames in one attempt equivocates; the peer relaying the
    second one saw it first and is not punished: ignored, counted against the signer."""
    first = voted()
    assert setup.judge(Topic.CONFIRMATIONS, VOTER, confirmation(VOTER, first)) is Verdict.ACCEPT
    other = voted(proven(OTHER))
    assert setup.judge(Topic.CONFIRMATIONS, VOTER, confirmation(VOTER, other)) is Verdict.IGNORE
    assert setup.inbound.reasons == Counter({(Topic.CONFIRMATIONS, "equivocating precommit"): 1})
    assert setup.inbound.equivocations == Counter({peer(VOTER): 1})
    assert setup.providers.precommits.of(1, 0, other.id) == {}


@pytest.mark.parametrize(("kind", "shown"), [(CertKind.COMMIT, 3), (CertKind.VOTES, 2)])
def test_a_certificate_of_a_later_rank_shows_its_sender_is_ahead(
    tmp_path: Path, kind: CertKind, shown: int
) -> None:
    """A commit of rank 3 shows its sender holds rank 3; a precommit there, rank 2: the sync
    asks such a peer first."""
    noted: list[tuple[str, int]] = []
    setup = build(tmp_path / "store.sqlite", ahead=lambda p, rank: noted.append((p, rank)))
    try:
        later = certificate(synthetic(3), kind, 0, (PROPOSER, VOTER, OTHER))
        statement = (final_statement if kind is CertKind.COMMIT else precommit_statement)(
            3, 0, later.id
        )
        data = confirmation(OTHER, later, statement=statement)
        assert setup.judge(Topic.CONFIRMATIONS, OTHER, data) is Verdict.ACCEPT
        assert noted == [(peer(OTHER), shown)]
    finally:
        setup.store.close()


def test_an_outsider_relaying_a_later_commit_is_not_taken_to_be_ahead(tmp_path: Path) -> None:
    """It would be asked first on every sync, and each ask it stalls costs the timeout: only a
    prover's claim counts (the commit itself still does)."""
    noted: list[tuple[str, int]] = []
    setup = build(tmp_path / "store.sqlite", ahead=lambda p, rank: noted.append((p, rank)))
    try:
        later = certificate(synthetic(3), CertKind.COMMIT, 0, (PROPOSER, VOTER, OTHER))
        data = confirmation(OUTSIDER, later, statement=final_statement(3, 0, later.id))
        assert setup.judge(Topic.CONFIRMATIONS, OUTSIDER, data) is Verdict.ACCEPT
        assert noted == []
    finally:
        setup.store.close()


def test_a_commit_confirmation_is_accepted_without_a_precommit(setup: Setup) -> None:
    committed = certificate(proven(), CertKind.COMMIT, 2, (PROPOSER, VOTER, OTHER))
    data = confirmation(VOTER, committed, statement=final_statement(1, 2, committed.id))
    assert setup.judge(Topic.CONFIRMATIONS, VOTER, data) is Verdict.ACCEPT
    assert setup.machine.round_view().commits == (peer(VOTER),)
    assert setup.machine.round_view().confirmations == {}
    assert setup.providers.precommits.signatures == {}


def test_a_commit_relayed_by_a_follower_is_used(setup: Setup) -> None:
    """A commit certificate proves finality whoever sends it: a follower's relay counts."""
    committed = certificate(proven(), CertKind.COMMIT, 0, (PROPOSER, VOTER, OTHER))
    data = confirmation(OUTSIDER, committed, statement=final_statement(1, 0, committed.id))
    assert setup.judge(Topic.CONFIRMATIONS, OUTSIDER, data) is Verdict.ACCEPT
    assert setup.machine.round_view().commits == (peer(OUTSIDER),)


def test_a_certified_frame_replaces_another_proposal_of_its_prover(setup: Setup) -> None:
    other = resigned(replace(proven(), timestamp=T0 + 2), PROPOSER)  # same proof, another frame
    assert setup.judge(Topic.PROPOSALS, PROPOSER, proposal(other)) is Verdict.ACCEPT
    assert setup.machine.round_view().proposals == {peer(PROPOSER): other.identity()}
    assert setup.judge(Topic.CONFIRMATIONS, OTHER, confirmation(OTHER, voted())) is Verdict.ACCEPT
    assert setup.machine.round_view().proposals == {peer(PROPOSER): proven().identity()}


def test_mutations_are_accepted_once(setup: Setup) -> None:
    data = encode(MutationMsg((b"transfer 5",)))
    assert setup.judge(Topic.MUTATIONS, OUTSIDER, data) is Verdict.ACCEPT
    assert setup.judge(Topic.MUTATIONS, VOTER, data) is Verdict.IGNORE
    assert setup.judge(Topic.MUTATIONS, VOTER, encode(MutationMsg((b"",)))) is Verdict.IGNORE
    assert setup.providers.mempool.take() == (b"transfer 5",)
    assert setup.inbound.reasons == Counter()


def test_a_batch_is_passed_on_only_if_every_mutation_in_it_is_new(setup: Setup) -> None:
    """One new mutation among thousands known (final long ago, free to copy from the chain)
    had every peer look them all up and pass the batch on."""
    first = encode(MutationMsg((b"a", b"b")))
    assert setup.judge(Topic.MUTATIONS, OUTSIDER, first) is Verdict.ACCEPT
    assert setup.judge(Topic.MUTATIONS, VOTER, encode(MutationMsg((b"b", b"a")))) is Verdict.IGNORE
    riders = encode(MutationMsg((b"c", b"a", b"d")))
    assert setup.judge(Topic.MUTATIONS, VOTER, riders) is Verdict.IGNORE
    assert setup.providers.mempool.take() == (b"a", b"b", b"c"), "ended at the first known"
    assert setup.judge(Topic.MUTATIONS, VOTER, encode(MutationMsg((b"d",)))) is Verdict.ACCEPT
    assert setup.inbound.reasons == Counter()


def test_a_batch_that_repeats_a_mutation_is_rejected(setup: Setup) -> None:
    """No honest batcher repeats one; 12,000 copies of one mutation cost every peer 40-50 ms."""
    repeated = encode(MutationMsg((b"new",) + (b"copied",) * 1000))
    assert setup.judge(Topic.MUTATIONS, OUTSIDER, repeated) is Verdict.REJECT
    assert len(setup.providers.mempool) == 0


def test_a_flooding_origin_cannot_keep_others_out(tmp_path: Path) -> None:
    """Over its quota, a flooder's mutations are ignored, counted by reason, and not passed
    on; another origin's and a local submit still get in, even into a full pool."""
    setup = build(tmp_path / "flood.sqlite", mempool=Mempool(capacity=4, quota=2))
    try:
        flood = [encode(MutationMsg((f"flood {i}".encode(),))) for i in range(5)]
        verdicts = [setup.judge(Topic.MUTATIONS, OUTSIDER, data) for data in flood]
        assert verdicts == [Verdict.ACCEPT] * 2 + [Verdict.IGNORE] * 3
        assert setup.inbound.reasons == Counter(
            {(Topic.MUTATIONS, "origin over its mempool quota"): 3}
        )
        for n, sender in enumerate((VOTER, OTHER, PROPOSER)):  # the last finds the pool full
            data = encode(MutationMsg((f"honest {n}".encode(),)))
            assert setup.judge(Topic.MUTATIONS, sender, data) is Verdict.ACCEPT
        assert setup.providers.mempool.add(b"local", LOCAL) is Admission.ADDED
        assert setup.providers.mempool.take() == (b"local", b"honest 0", b"honest 1", b"honest 2")
        assert (
            setup.judge(Topic.MUTATIONS, VOTER, encode(MutationMsg((b"more",)))) is Verdict.IGNORE
        )
        assert setup.inbound.reasons[(Topic.MUTATIONS, "mempool full")] == 1
    finally:
        setup.machine.close()
        setup.store.close()


def test_an_oversized_mutation_is_rejected(setup: Setup) -> None:
    too_large = canonical([VERSION, int(MessageKind.MUTATION), [b"x" * (MAX_MUTATION_SIZE + 1)]])
    assert setup.judge(Topic.MUTATIONS, VOTER, too_large) is Verdict.REJECT
    assert setup.inbound.reasons == Counter({(Topic.MUTATIONS, "undecodable"): 1})
    assert len(setup.providers.mempool) == 0


def test_the_peers_topic_is_accepted(setup: Setup) -> None:
    for data in (b"", b"\x00 anything", canonical(["peer", ["/ip4/127.0.0.1/tcp/1"]])):
        assert setup.judge(Topic.PEERS, OUTSIDER, data) is Verdict.ACCEPT
    assert setup.inbound.reasons == Counter()
    setup.nothing_reached_the_engine()


# --- rejected -------------------------------------------------------------------------------


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _flipped(cast: Vote) -> Vote:
    return replace(cast, signature=_flip(cast.signature))


REJECTED: dict[str, Callable[[], tuple[Topic, Keypair, bytes, str]]] = {
    "garbage": lambda: (Topic.VOTES, VOTER, b"\x00garbage", "undecodable"),
    "truncated": lambda: (Topic.VOTES, VOTER, votes_of(vote(VOTER, b"f" * 32))[:-1], "undecodable"),
    "vote on the liveness topic": lambda: (
        Topic.LIVENESS,
        VOTER,
        votes_of(vote(VOTER, b"f" * 32)),
        "undecodable",
    ),
    "confirmation without a certificate": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation_without_certificate(OTHER),
        "undecodable",
    ),
    "liveness from another origin": lambda: (
        Topic.LIVENESS,
        OTHER,
        liveness(VOTER),
        "signer is not the sender",
    ),
    "proposal from another origin": lambda: (
        Topic.PROPOSALS,
        VOTER,
        proposal(proven()),
        "signer is not the sender",
    ),
    "vote from another origin": lambda: (
        Topic.VOTES,
        OTHER,
        votes_of(vote(VOTER, proven().id)),
        "signer is not the sender",
    ),
    "liveness of a non-prover": lambda: (
        Topic.LIVENESS,
        OUTSIDER,
        liveness(OUTSIDER),
        "not a prover",
    ),
    "proposal of a non-prover": lambda: (
        Topic.PROPOSALS,
        OUTSIDER,
        proposal(resigned(replace(proven(), prover=OUTSIDER.public), OUTSIDER)),
        "not a prover",
    ),
    "vote of a non-prover": lambda: (
        Topic.VOTES,
        OUTSIDER,
        votes_of(vote(OUTSIDER, proven().id)),
        "not a prover",
    ),
    "confirmation of a non-prover": lambda: (
        Topic.CONFIRMATIONS,
        OUTSIDER,
        confirmation(OUTSIDER, voted()),
        "not a prover",
    ),
    "liveness signed by another key": lambda: (
        Topic.LIVENESS,
        VOTER,
        liveness(VOTER, signer=OTHER),
        "bad signature",
    ),
    "liveness signature of another rank": lambda: (
        Topic.LIVENESS,
        VOTER,
        encode(
            Liveness(
                1,
                VOTER.public,
                mutations_root(()),
                sign(VOTER, NETWORK, liveness_statement(2, VOTER.public, mutations_root(()))),
            )
        ),
        "bad signature",
    ),
    "vote signed by another key": lambda: (
        Topic.VOTES,
        VOTER,
        votes_of(vote(VOTER, proven().id, signer=OTHER)),
        "bad signature",
    ),
    "vote signed in another network": lambda: (
        Topic.VOTES,
        VOTER,
        votes_of(vote(VOTER, proven().id, network="other-net")),
        "bad signature",
    ),
    "vote with a flipped signature": lambda: (
        Topic.VOTES,
        VOTER,
        votes_of(_flipped(vote(VOTER, proven().id))),
        "bad signature",
    ),
    "confirmation signed as a vote": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation(OTHER, voted(), statement=vote_statement(1, 0, proven().id)),
        "bad signature",
    ),
    "vote for a non-prover's frame": lambda: (
        Topic.VOTES,
        VOTER,
        votes_of(vote(VOTER, proven().id, proposer=OUTSIDER.public)),
        "vote for a non-prover's frame",
    ),
    "proposal on another parent": lambda: (
        Topic.PROPOSALS,
        PROPOSER,
        proposal(resigned(replace(proven(), parent=b"\x07" * HASH_SIZE), PROPOSER)),
        "does not extend the final frame",
    ),
    "proposal with a bad signature": lambda: (
        Topic.PROPOSALS,
        PROPOSER,
        proposal(resigned(proven(), VOTER)),
        "bad prover signature",
    ),
    "confirmation with too few signers": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation(OTHER, certificate(proven(), CertKind.VOTES, 0, (ME, VOTER))),
        "invalid certificate",
    ),
    "confirmation with a forged certificate": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation(
            OTHER,
            certificate(proven(), CertKind.VOTES, 0, (ME, VOTER, OTHER), as_="precommit"),
        ),
        "invalid certificate",
    ),
    "confirmation with a votes certificate called a commit": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation(
            OTHER,
            certificate(proven(), CertKind.COMMIT, 0, (ME, VOTER, OTHER), as_="vote"),
            statement=final_statement(1, 0, proven().id),
        ),
        "invalid certificate",
    ),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_invalid_messages_are_rejected_with_their_reason(setup: Setup, name: str) -> None:
    topic, origin, data, reason = REJECTED[name]()
    assert setup.judge(topic, origin, data) is Verdict.REJECT
    assert setup.inbound.reasons == Counter({(topic, reason): 1})
    assert setup.inbound.equivocations == Counter()
    setup.nothing_reached_the_engine()
    assert setup.judge(topic, origin, data) is Verdict.REJECT  # every time, counted each time
    assert setup.inbound.reasons == Counter({(topic, reason): 2})


def test_a_confirmation_of_a_frame_not_extending_the_tip_is_rejected(setup: Setup) -> None:
    stray = voted(synthetic(1))  # a real vote certificate, for a frame on another parent
    assert setup.judge(Topic.CONFIRMATIONS, OTHER, confirmation(OTHER, stray)) is Verdict.REJECT
    assert setup.inbound.reasons == Counter(
        {(Topic.CONFIRMATIONS, "does not extend the final frame"): 1}
    )
    view = setup.machine.round_view()
    assert (view.proposals, view.confirmations) == ({}, {})


@dataclass
class Clock:
    now: int

    def __call__(self) -> int:
        return self.now


def test_a_frame_ahead_of_the_clock_is_ignored_until_the_clock_catches_up(
    tmp_path: Path,
) -> None:
    """Ignored, not rejected: the relay of a frame its own clock found in time is not punished,
    and the same bytes sent again are judged afresh once this peer's clock has caught up."""
    clock = Clock(proven().timestamp - MAX_CLOCK_AHEAD_MS - 1)  # one millisecond too early
    setup = build(tmp_path / "early.sqlite", clock=clock)
    try:
        early = [
            (Topic.PROPOSALS, PROPOSER, proposal(proven())),
            (Topic.CONFIRMATIONS, OTHER, confirmation(OTHER, voted())),
        ]
        for topic, origin, data in early:
            assert setup.judge(topic, origin, data) is Verdict.IGNORE
        assert setup.inbound.reasons == Counter({(t, AHEAD_OF_CLOCK): 1 for t, _, _ in early})
        view = setup.machine.round_view()
        assert (view.proposals, view.confirmations) == ({}, {})
        # Early and also forged is still rejected: what does not depend on the clock comes first.
        forged = proposal(resigned(proven(), VOTER))
        assert setup.judge(Topic.PROPOSALS, PROPOSER, forged) is Verdict.REJECT
        clock.now += 1
        for topic, origin, data in early:
            assert setup.judge(topic, origin, data) is Verdict.ACCEPT
        view = setup.machine.round_view()
        assert view.proposals == {peer(PROPOSER): proven().identity()}
        assert view.confirmations == {0: (peer(OTHER),)}
    finally:
        setup.machine.close()
        setup.store.close()


def test_an_equivocating_vote_is_evidence_not_a_penalty(setup: Setup) -> None:
    """The second, different vote is not counted and is kept as evidence against its voter;
    it is ignored rather than rejected, so the peers that relayed it in good faith (having
    seen it first) are not penalised."""
    first = vote(VOTER, proven().id)
    second = vote(VOTER, b"\x09" * HASH_SIZE)
    assert setup.judge(Topic.VOTES, VOTER, votes_of(first)) is Verdict.ACCEPT
    assert setup.judge(Topic.VOTES, VOTER, votes_of(second)) is Verdict.IGNORE
    assert setup.inbound.reasons == Counter({(Topic.VOTES, "equivocating vote"): 1})
    assert setup.inbound.equivocations == Counter({peer(VOTER): 1})
    view = setup.machine.round_view()
    assert view.equivocators == (peer(VOTER),)
    assert view.votes == {peer(VOTER): first.identity()}  # the first vote stands
    # The same first vote again is a duplicate, not an equivocation; another attempt is fine.
    assert setup.judge(Topic.VOTES, VOTER, votes_of(first)) is Verdict.IGNORE
    assert setup.judge(Topic.VOTES, VOTER, votes_of(vote(VOTER, b"\x09" * 32, attempt=1))) is (
        Verdict.ACCEPT
    )
    assert setup.inbound.equivocations == Counter({peer(VOTER): 1})


def test_receipts_map_to_verdicts() -> None:
    assert {receipt: verdict_of(receipt) for receipt in Receipt} == {
        Receipt.ACCEPTED: Verdict.ACCEPT,
        Receipt.DUPLICATE: Verdict.IGNORE,
        Receipt.STALE: Verdict.IGNORE,
        Receipt.TOO_FAR_AHEAD: Verdict.IGNORE,
        Receipt.NOT_A_PROVER: Verdict.REJECT,
        Receipt.FULL: Verdict.IGNORE,
        Receipt.CLOSED: Verdict.IGNORE,
        Receipt.INVALID: Verdict.IGNORE,
    }


# --- ignored --------------------------------------------------------------------------------


IGNORED: dict[str, Callable[[], tuple[Topic, Keypair, bytes]]] = {
    "stale liveness": lambda: (Topic.LIVENESS, VOTER, liveness(VOTER, 0)),
    "far-future liveness": lambda: (Topic.LIVENESS, VOTER, liveness(VOTER, 9)),
    "stale vote": lambda: (Topic.VOTES, VOTER, votes_of(vote(VOTER, proven().id, 0))),
    "far-future vote": lambda: (Topic.VOTES, VOTER, votes_of(vote(VOTER, proven().id, 9))),
    "far-future attempt": lambda: (
        Topic.VOTES,
        VOTER,
        votes_of(vote(VOTER, proven().id, 1, 9)),
    ),
    "proposal for a later rank": lambda: (Topic.PROPOSALS, PROPOSER, proposal(synthetic(2))),
    "proposal for the final rank": lambda: (Topic.PROPOSALS, PROPOSER, proposal(synthetic(0))),
    "far-future confirmation": lambda: (
        Topic.CONFIRMATIONS,
        OTHER,
        confirmation(OTHER, voted(synthetic(20))),
    ),
}


@pytest.mark.parametrize("name", sorted(IGNORED))
def test_stale_and_far_future_messages_are_ignored(setup: Setup, name: str) -> None:
    topic, origin, data = IGNORED[name]()
    assert setup.judge(topic, origin, data) is Verdict.IGNORE
    assert setup.inbound.reasons == Counter()
    view = setup.machine.round_view()
    assert (view.live, view.proposals, view.votes, view.confirmations) == ((), {}, {}, {})


def test_the_window_ends_exactly_at_its_bounds(setup: Setup) -> None:
    assert setup.judge(Topic.LIVENESS, VOTER, liveness(VOTER, 8)) is Verdict.ACCEPT
    assert setup.judge(Topic.VOTES, VOTER, votes_of(vote(VOTER, b"f" * 32, 8))) is Verdict.ACCEPT
    last_attempt = votes_of(vote(VOTER, b"f" * 32, 1, 8))
    assert setup.judge(Topic.VOTES, VOTER, last_attempt) is Verdict.ACCEPT
    assert setup.inbound.reasons == Counter()


def test_duplicates_are_ignored(setup: Setup) -> None:
    messages = [
        (Topic.LIVENESS, VOTER, liveness(VOTER)),
        (Topic.PROPOSALS, PROPOSER, proposal(proven())),
        (Topic.VOTES, VOTER, votes_of(vote(VOTER, proven().id))),
        (Topic.CONFIRMATIONS, OTHER, confirmation(OTHER, voted())),
    ]
    for topic, origin, data in messages:
        assert setup.judge(topic, origin, data) is Verdict.ACCEPT
    view = setup.machine.round_view()
    for topic, origin, data in messages:
        assert setup.judge(topic, origin, data) is Verdict.IGNORE
    assert setup.machine.round_view() == view
    # A second liveness of the same prover and rank, with another root, is a duplicate too.
    root = mutations_root((b"other",))
    again = Liveness(
        1, VOTER.public, root, sign(VOTER, NETWORK, liveness_statement(1, VOTER.public, root))
    )
    assert setup.judge(Topic.LIVENESS, VOTER, encode(again)) is Verdict.IGNORE
    assert setup.inbound.reasons == Counter()


def test_a_confirmation_of_a_final_rank_is_ignored(tmp_path: Path) -> None:
    setup = build(tmp_path / "ahead.sqlite", tip=proven)  # this peer holds rank 1 as final
    try:
        data = confirmation(OTHER, voted())
        assert setup.judge(Topic.CONFIRMATIONS, OTHER, data) is Verdict.IGNORE
        assert setup.judge(Topic.PROPOSALS, PROPOSER, proposal(proven())) is Verdict.IGNORE
        assert setup.inbound.reasons == Counter()
        view = setup.machine.round_view()
        assert (view.proposals, view.confirmations) == ({}, {})
    finally:
        setup.machine.close()
        setup.store.close()


def test_a_batch_costs_no_more_than_its_sender_s_quota(tmp_path: Path) -> None:
    """One gossip message may hold some 12,000 tiny mutations, each new one costing a lookup in
    the store. An origin over its quota stops costing anything: the rest of its batch is not
    looked at beyond one lookahead, and a later batch of it is refused at its first mutation."""
    looked_up: list[list[bytes]] = []

    def final_among(keys: Sequence[bytes]) -> set[bytes]:
        looked_up.append(list(keys))
        return set()

    setup = build(tmp_path / "batch.sqlite", mempool=Mempool(quota=3, final_among=final_among))
    try:
        flood = tuple(i.to_bytes(2, "big") for i in range(MAX_FRAME_MUTATION_BYTES // 5))
        # Three fit; the batch is not passed on whole for them (nor judged whole).
        assert setup.judge(Topic.MUTATIONS, OUTSIDER, encode(MutationMsg(flood))) is Verdict.IGNORE
        assert [len(keys) for keys in looked_up] == [LOOKAHEAD]
        assert len(setup.providers.mempool) == 3
        again = encode(MutationMsg(flood[3:]))
        assert setup.judge(Topic.MUTATIONS, OUTSIDER, again) is Verdict.IGNORE
        assert [len(keys) for keys in looked_up] == [LOOKAHEAD]
        assert setup.inbound.reasons == Counter(
            {(Topic.MUTATIONS, "origin over its mempool quota"): 2}
        )
    finally:
        setup.machine.close()
        setup.store.close()


def test_precommits_far_beyond_the_tip_are_not_kept(setup: Setup) -> None:
    """Each precommit of a later rank is signed by a prover; a peer stuck far behind kept
    three per rank the others finalized until it synced. Beyond the engine's window, the
    certificate makes the peer sync, and the signature is not kept."""
    near = certificate(synthetic(PRECOMMITS_AHEAD), CertKind.VOTES, 0, (ME, PROPOSER, VOTER))
    far = certificate(synthetic(PRECOMMITS_AHEAD + 1), CertKind.VOTES, 0, (ME, PROPOSER, VOTER))
    for frame in (near, far):
        verdict = setup.judge(Topic.CONFIRMATIONS, OTHER, confirmation(OTHER, frame))
        assert verdict is not Verdict.REJECT, setup.inbound.reasons
    kept = {rank for rank, _, _ in setup.providers.precommits.signatures}
    assert kept == {PRECOMMITS_AHEAD}
