"""The re-send schedule of a stalled prover."""

from __future__ import annotations

from p2pnode.peer.resend import MAX_STRETCH, ResendClock


def test_fast_rounds_keep_the_configured_period_from_the_last_progress() -> None:
    clock = ResendClock(2.0, now=100.0)
    assert clock.due() == 102.0
    for final_at in (100.3, 100.6, 100.9):
        clock.progressed(final_at)
    assert clock.period() == 2.0
    assert clock.due() == 102.9


def test_a_round_slower_than_the_period_is_not_taken_for_a_stall() -> None:
    """Rounds of 1.8 s: a 2 s period would re-send in many rounds."""
    clock = ResendClock(2.0, now=0.0)
    for rank in range(1, 6):
        clock.progressed(1.8 * rank)
    assert clock.period() == 3.6
    assert clock.due() == 1.8 * 5 + 3.6


def test_one_long_stall_does_not_stretch_the_period() -> None:
    clock = ResendClock(2.0, now=0.0)
    for final_at in (0.5, 1.0, 1.5, 601.5, 602.0):
        clock.progressed(final_at)
    assert clock.period() == 2.0


def test_the_period_is_bounded_however_slow_the_rounds() -> None:
    clock = ResendClock(2.0, now=0.0)
    clock.progressed(1000.0)
    assert clock.period() == MAX_STRETCH * 2.0


def test_a_stalled_rank_is_resent_once_per_period() -> None:
    clock = ResendClock(2.0, now=0.0)
    clock.resent(2.0)
    assert clock.due() == 4.0
    clock.resent(4.0)
    assert clock.due() == 6.0


def test_peers_that_reconnect_again_and_again_bring_one_re_send_per_half_period() -> None:
    clock = ResendClock(2.0, now=0.0)
    assert clock.may_resend_for_a_newcomer(0.1)
    clock.resent(0.1)
    assert not clock.may_resend_for_a_newcomer(0.5)
    assert not clock.may_resend_for_a_newcomer(1.09)
    assert clock.may_resend_for_a_newcomer(1.1)
