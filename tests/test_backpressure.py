"""Whose full outbound queue a publish waits for: `net/backpressure.py`."""

from __future__ import annotations

from p2pnode.net.backpressure import FORGET_AFTER, Backpressure

FULL, EMPTY = 16, 0


def test_a_full_queue_is_waited_for_until_given_up() -> None:
    wait = Backpressure(threshold=FULL)
    assert wait.full({"a": FULL, "b": FULL - 1}, now=0.0) == ["a"]
    wait.give_up(["a"], now=2.0)
    assert wait.full({"a": FULL}, now=2.0) == []


def test_one_given_up_on_is_not_waited_for_again_until_it_stayed_drained() -> None:
    """A Byzantine prover letting its queue fill and drain in turn held every publish 2 s at
    each fill: given up on, it was waited for again as soon as its queue drained."""
    wait = Backpressure(threshold=FULL)
    wait.give_up(["a"], now=0.0)
    now = 0.0
    for _ in range(10):  # drained and full again, every 5 s
        now += 2.5
        assert wait.full({"a": EMPTY}, now) == []
        now += 2.5
        assert wait.full({"a": FULL}, now) == [], "not waited for again"
    assert wait.full({"a": EMPTY}, now + FORGET_AFTER - 0.1) == []
    assert wait.full({"a": FULL}, now + FORGET_AFTER) == ["a"], "drained long enough: forgotten"
