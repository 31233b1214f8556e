"""The leader order rule: a rotation by rank, and a place lost by failing a rank it leads."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.consensus.leaders import PROBATION, leader_order, memory, rotation

provers = st.integers(min_value=1, max_value=7).map(lambda n: [f"p{i}" for i in range(n)])
several = provers.filter(lambda b: len(b) >= 2)


def play(base: list[str], ranks: int, fails: set[str]) -> tuple[dict[int, str], list[str]]:
    """Who wins ranks 1..ranks, and who led each, when the top prover wins unless it is in
    `fails`, in which case the next prover that does not fail wins."""
    winners: dict[int, str] = {}
    tops: list[str] = []
    for rank in range(1, ranks + 1):
        order = leader_order(base, rank, winners.get)
        tops.append(order[0])
        winners[rank] = next((p for p in order if p not in fails), order[-1])
    return winners, tops


@given(provers, st.integers(min_value=1, max_value=200))
def test_when_every_top_prover_wins_the_order_is_the_rotation(base: list[str], rank: int) -> None:
    winners, _ = play(base, rank, set())
    assert leader_order(base, rank, winners.get) == rotation(base, rank)
    window = [winners[r] for r in range(max(1, rank - len(base) + 1), rank + 1)]
    assert len(set(window)) == len(window)  # each prover leads once every n ranks


@settings(max_examples=30)
@given(several, st.data())
def test_failing_provers_lead_only_their_probation_turns(
    base: list[str], data: st.DataObject
) -> None:
    # Neighbours in the rotation too: one leads the other's turns once it lost its place, and
    # is judged by them like by its own.
    fails = set(data.draw(st.lists(st.sampled_from(base), min_size=1, max_size=len(base) - 1)))
    ranks = len(base) * PROBATION * 4
    winners, tops = play(base, ranks, fails)
    led = sum(top in fails for top in tops)
    assert led <= len(fails) * (4 + 2)
    assert not fails & set(winners.values())


@settings(max_examples=30)
@given(several, st.data())
def test_an_honest_prover_that_missed_one_turn_is_back_within_probation_turns(
    base: list[str], data: st.DataObject
) -> None:
    n = len(base)
    missed = data.draw(st.sampled_from(base))
    turn = base.index(missed) + n * data.draw(st.integers(min_value=1, max_value=PROBATION))
    winners, _ = play(base, turn - 1, set())
    order = leader_order(base, turn, winners.get)
    winners[turn] = order[1]  # a fault: the next prover won its turn
    for rank in range(turn + 1, turn + n * (PROBATION + 1) + 1):
        order = leader_order(base, rank, winners.get)
        winners[rank] = order[0]
        if rank % n == base.index(missed) and order[0] == missed:
            return
    raise AssertionError(f"{missed} never led again")


@given(several, st.integers(min_value=1, max_value=300), st.data())
def test_the_order_depends_on_the_recent_winners_only(
    base: list[str], rank: int, data: st.DataObject
) -> None:
    winners = {r: data.draw(st.sampled_from(base)) for r in range(1, rank)}
    recent = {r: p for r, p in winners.items() if r >= rank - memory(len(base))}
    assert leader_order(base, rank, winners.get) == leader_order(base, rank, recent.get)
