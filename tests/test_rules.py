"""Property tests of the vote rules (Tendermint locking over attempts) and the message book."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.consensus import EquivocationError, Limits, Lock, Receipt
from p2pnode.consensus.book import MessageBook, same_content
from p2pnode.consensus.rules import (
    Certified,
    catch_up_attempt,
    choose_vote,
    max_faults,
    priority,
    proves_first,
)


@dataclass(frozen=True)
class F:
    """A frame reduced to what the rules look at."""

    id: str
    round: int = 1

    def identity(self) -> str:
        return self.id

    def rank(self) -> int:
        return self.round

    def clone(self) -> F:
        return self


PROVERS = ["a", "b", "c", "d", "e", "f", "g"]
frame_ids = st.sampled_from(["x", "y", "z", "w"])
proposals_st = st.dictionaries(st.sampled_from(PROVERS), frame_ids.map(F), max_size=7)
attempts = st.integers(min_value=0, max_value=12)
locks = st.none() | st.builds(
    lambda a, p, i: Lock(a, p, F(i)), attempts, st.sampled_from(PROVERS), frame_ids
)
bests = st.none() | st.builds(Certified, attempts, frame_ids)
leader_orders = st.permutations(PROVERS).map(list)


@given(attempts, locks, bests, proposals_st, leader_orders, st.booleans())
def test_a_vote_is_for_the_lock_or_a_proposal_at_hand(
    attempt: int,
    lock: Lock[F] | None,
    best: Certified | None,
    proposals: dict[str, F],
    leaders: list[str],
    enough: bool,
) -> None:
    """Whatever the inputs, the choice is the locked frame or one of the proposals."""
    choice = choose_vote(attempt, lock, best, proposals, leaders, enough)
    if choice is None:
        return
    from_lock = lock is not None and choice.frame == lock.frame
    assert from_lock or proposals.get(choice.proposer) == choice.frame


@given(attempts, locks, bests, proposals_st, leader_orders, st.booleans())
def test_a_locked_prover_votes_its_lock_unless_a_newer_certificate_frees_it(
    attempt: int,
    lock: Lock[F] | None,
    best: Certified | None,
    proposals: dict[str, F],
    leaders: list[str],
    enough: bool,
) -> None:
    """Locked on X in attempt l, the vote is X unless a certificate from [l, attempt) says Y."""
    choice = choose_vote(attempt, lock, best, proposals, leaders, enough)
    if lock is None:
        return
    assert choice is not None, "a locked prover always has something to vote for"
    if choice.frame.identity() != lock.frame.identity():
        assert best is not None
        assert lock.attempt <= best.attempt < attempt
        assert choice.frame.identity() == best.frame_id


@given(attempts, proposals_st, leader_orders)
def test_an_unlocked_prover_follows_the_rotated_leader_order(
    attempt: int, proposals: dict[str, F], leaders: list[str]
) -> None:
    """Without lock or certificate, the vote goes to the first leader of the rotated order."""
    choice = choose_vote(attempt, None, None, proposals, leaders, True)
    expected = next((p for p in priority(leaders, attempt) if p in proposals), None)
    assert (choice.proposer if choice else None) == expected


@given(attempts, proposals_st, leader_orders)
def test_an_unlocked_prover_waits_for_enough_proposals(
    attempt: int, proposals: dict[str, F], leaders: list[str]
) -> None:
    """Without lock or certified frame at hand, a prover waits until enough proposals are in."""
    assert choose_vote(attempt, None, None, proposals, leaders, False) is None


@given(attempts, bests, proposals_st, leader_orders)
def test_an_unlocked_prover_prefers_a_certified_frame(
    attempt: int, best: Certified | None, proposals: dict[str, F], leaders: list[str]
) -> None:
    """A frame a quorum already voted for is the one most likely to gather a quorum again."""
    choice = choose_vote(attempt, None, best, proposals, leaders, True)
    at_hand = best is not None and any(f.identity() == best.frame_id for f in proposals.values())
    if at_hand:
        assert best is not None
        assert choice is not None
        assert choice.frame.identity() == best.frame_id


@given(st.lists(st.sampled_from(PROVERS), unique=True, min_size=1), attempts)
def test_priority_is_a_rotation(leaders: list[str], attempt: int) -> None:
    order = priority(leaders, attempt)
    assert sorted(order) == sorted(leaders)
    assert order[0] == leaders[attempt % len(leaders)]


@given(
    st.dictionaries(st.sampled_from([*PROVERS, "outsider"]), attempts),
    attempts,
    st.integers(min_value=1, max_value=7),
)
def test_catching_up_needs_f_plus_one_provers(
    reach: dict[str, int], current: int, provers_count: int
) -> None:
    """Moving to a later attempt needs f+1 listed provers there, so at least one honest one."""
    provers = PROVERS[:provers_count]
    moved = catch_up_attempt(current, reach, provers)
    assert moved >= current
    if moved > current:
        ahead = [s for s, a in reach.items() if s in provers and a >= moved]
        assert len(ahead) >= max_faults(provers_count) + 1


def test_max_faults() -> None:
    assert [max_faults(n) for n in (1, 3, 4, 6, 7, 10)] == [0, 0, 1, 1, 2, 3]


@dataclass(frozen=True)
class V:
    round: int
    voter: str
    target: str

    def identity(self) -> str:
        return self.voter  # like the original's mock: an identity that never differs

    def rank(self) -> int:
        return self.round

    def clone(self) -> V:
        return self


class Plain:
    """A vote type without value equality: content is compared attribute by attribute."""

    def __init__(self, target: str) -> None:
        self.target = target


def test_same_content_compares_values_not_identities() -> None:
    assert same_content(V(1, "a", "x"), V(1, "a", "x"))
    assert not same_content(V(1, "a", "x"), V(1, "a", "y"))
    assert same_content(Plain("x"), Plain("x"))
    assert not same_content(Plain("x"), Plain("y"))


@given(st.lists(st.tuples(st.integers(0, 12), attempts, st.sampled_from(PROVERS), frame_ids)))
def test_the_book_keeps_the_first_vote_and_reports_conflicts(
    messages: list[tuple[int, int, str, str]],
) -> None:
    """First vote per (rank, attempt, voter) is kept; a different second one is evidence."""
    book: MessageBook[F, V, F] = MessageBook(Limits(ranks_ahead=8, attempts_ahead=8))
    first: dict[tuple[int, int, str], V] = {}
    for rank, attempt, voter, target in messages:
        vote = V(rank, voter, target)
        key = (rank, attempt, voter)
        conflict: EquivocationError | None = None
        try:
            receipt = book.add_vote(rank, attempt, voter, vote)
        except EquivocationError as err:
            conflict = err
        if conflict is not None:
            assert conflict.first == first[key]
            assert conflict.second == vote
            assert conflict.first != conflict.second
            continue
        if rank > 7 or attempt > 8:  # window: floor -1 plus 8 ranks, attempts 0..8
            assert receipt in (Receipt.STALE, Receipt.TOO_FAR_AHEAD)
        elif key in first:
            assert receipt is Receipt.DUPLICATE
            assert first[key] == vote
        else:
            assert receipt is Receipt.ACCEPTED
            first[key] = vote
    for (rank, attempt, voter), vote in first.items():
        assert book.votes(rank, attempt)[voter] == vote


@given(st.integers(0, 30), st.lists(st.integers(0, 40), max_size=40))
def test_the_book_is_bounded_and_pruned(floor: int, ranks: list[int]) -> None:
    """Nothing at or below the finalized rank, nothing beyond the window, nothing kept after."""
    limits = Limits(ranks_ahead=4)
    book: MessageBook[F, V, F] = MessageBook(limits)
    book.prune_through(floor)
    for rank in ranks:
        book.add_proposal(rank, "a", F("x", rank))
    assert all(floor < r <= floor + 4 for r in book.ranks())
    book.prune_through(floor + 4)
    assert book.size() == 0


def test_the_book_caps_senders_per_rank() -> None:
    book: MessageBook[F, V, F] = MessageBook(Limits(senders_per_rank=2))
    receipts = [book.add_proposal(1, s, F(s)) for s in ("a", "b", "c")]
    assert receipts == [Receipt.ACCEPTED, Receipt.ACCEPTED, Receipt.FULL]


@pytest.mark.parametrize("attempt", [0, 1, 5])
def test_a_locked_prover_ignores_an_older_certificate(attempt: int) -> None:
    lock = Lock(attempt, "a", F("x"))
    choice = choose_vote(attempt + 3, lock, Certified(attempt - 1, "y"), {"b": F("y")}, ["b"], True)
    assert choice is not None
    assert choice.frame == F("x")


def test_a_commit_is_kept_whatever_its_attempt_and_beside_its_sender_s_precommit() -> None:
    """A confirmation that proves a rank final is not one more precommit: it is kept from a
    sender whose precommit is held, and far outside the window of attempts kept."""
    book: MessageBook[F, V, F] = MessageBook(Limits(attempts_ahead=2))
    book.prune_through(0)
    book.set_attempt(1, 9)
    assert book.add_confirmation(1, 0, "a", F("x")) is Receipt.STALE
    assert book.add_confirmation(1, 9, "a", F("x")) is Receipt.ACCEPTED
    assert book.add_commit(1, "a", F("x")) is Receipt.ACCEPTED
    assert book.add_commit(1, "a", F("x")) is Receipt.DUPLICATE
    assert book.commits(1) == {"a": F("x")}
    assert book.add_commit(0, "b", F("x", 0)) is Receipt.STALE
    book.prune_through(1)
    assert book.commits(1) == {}


def test_the_newest_certificate_is_remembered_whatever_its_attempt() -> None:
    book: MessageBook[F, V, F] = MessageBook(Limits(attempts_ahead=2))
    book.set_attempt(1, 12)
    book.note_certificate(1, 1, "y")
    book.note_certificate(1, 0, "x")  # older: the newer one stays
    assert book.certified(1) == (1, "y")
    book.note_certificate(1, 30, "z")  # beyond the window ahead, but a quorum voted there
    assert book.certified(1) == (30, "z")
    book.note_certificate(20, 0, "w")  # a rank beyond the window is not kept
    assert book.certified(20) is None


def test_a_discarded_proposal_is_refused_from_then_on() -> None:
    book: MessageBook[F, V, F] = MessageBook(Limits())
    assert book.add_proposal(1, "a", F("x")) is Receipt.ACCEPTED
    assert book.add_proposal(1, "b", F("y")) is Receipt.ACCEPTED
    book.discard_proposal(1, "a", "x")
    assert book.proposals(1) == {"b": F("y")}
    assert book.add_proposal(1, "a", F("x")) is Receipt.INVALID
    assert book.add_proposal(1, "c", F("x"), replace=True) is Receipt.INVALID
    book.discard_proposal(1, "b", "other")  # not the frame held: it stays
    assert book.proposals(1) == {"b": F("y")}


@given(st.integers(min_value=1, max_value=40).flatmap(lambda n: st.permutations(range(n))))
def test_exactly_the_first_f_plus_one_provers_prove_in_attempt_0(order: list[int]) -> None:
    """f+1 provers always include an honest one; none beyond them proves before attempt 1."""
    leaders = [f"p{i}" for i in order]
    proving = [p for p in leaders if proves_first(p, leaders)]
    assert proving == leaders[: max_faults(len(leaders)) + 1]
    assert not proves_first("stranger", leaders)
