"""The leader order rule: a rotation by rank, and a place lost by failing a turn at the top."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from p2pnode.consensus.leaders import PROBATION, leader_order, rotation

provers = st.integers(min_value=1, max_value=10).map(lambda n: [f"p{i}" for i in range(n)])


def play(base: list[str], ranks: int, fails: set[str]) -> dict[int, str]:
    """Who wins ranks 1..ranks when the top prover wins unless it is in `fails`, in which case
    the next prover that does not fail wins."""
    winners: dict[int, str] = {}
    for rank in range(1, ranks + 1):
        order = leader_order(base, rank, winners.get)
        winners[rank] = next((p for p in order if p not in fails), order[-1])
    return winners


@given(provers, st.integers(min_value=1, max_value=200))
def test_when_every_top_prover_wins_the_order_is_the_rotation(base: list[str], rank: int) -> None:
    winners = play(base, rank, set())
    assert leader_order(base, rank, winners.get) == rotation(base, rank)
    window = [winners[r] for r in range(max(1, rank - len(base) + 1), rank + 1)]
    assert len(set(window)) == len(window)  # each prover leads once every n ranks


@given(provers.filter(lambda b: len(b) >= 2), st.data())
def test_a_prover_that_always_fails_leads_one_of_probation_turns(
    base: list[str], data: st.DataObject
) -> None:
    failing = data.draw(st.sampled_from(base))
    ranks = len(base) * PROBATION * 4
    tops = [leader_order(base, r, play(base, r - 1, {failing}).get)[0] for r in range(1, ranks)]
    assert tops.count(failing) <= 4 + 1
    assert failing not in play(base, ranks, {failing}).values()


@given(provers.filter(lambda b: len(b) >= 2), st.data())
def test_an_honest_prover_that_missed_one_turn_is_back_within_probation_turns(
    base: list[str], data: st.DataObject
) -> None:
    n = len(base)
    missed = data.draw(st.sampled_from(base))
    turn = base.index(missed) + n * data.draw(st.integers(min_value=1, max_value=PROBATION))
    winners = play(base, turn - 1, set())
    order = leader_order(base, turn, winners.get)
    winners[turn] = order[1]  # a fault: the next prover won its turn
    for rank in range(turn + 1, turn + n * (PROBATION + 1) + 1):
        order = leader_order(base, rank, winners.get)
        winners[rank] = order[0]
        if rank % n == base.index(missed) and order[0] == missed:
            return
    raise AssertionError(f"{missed} never led again")
