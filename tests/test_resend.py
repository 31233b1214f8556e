"""The re-send schedule of a stalled prover."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from p2pnode.peer.resend import MAX_STRETCH, SETTLE, ResendClock, Resender


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


class Sends:
    """The virtual times a `Resender` sent at."""

    def __init__(self) -> None:
        self.times: list[float] = []

    async def send(self) -> None:
        self.times.append(trio.current_time())


async def run_for(resender: Resender, seconds: float, *, every: float | None = None) -> None:
    """Run `resender` for `seconds`; with `every`, a stranger reconnects at that interval."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resender.run)
        if every is not None:
            for _ in range(int(seconds / every)):
                await trio.sleep(every)
                resender.newcomer()
        else:
            await trio.sleep(seconds)
        nursery.cancel_scope.cancel()


async def test_a_stalled_prover_resends_once_a_period_and_not_while_ranks_advance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sends = Sends()
    resender = Resender(ResendClock(2.0, trio.current_time()), sends.send)
    await run_for(resender, 7.0)
    assert sends.times == [2.0, 4.0, 6.0]

    async def advancing() -> None:
        await trio.sleep(0.5)  # off the re-send times, so that no two wake-ups tie
        for _ in range(20):
            resender.clock.progressed(trio.current_time())
            await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(resender.run)
        await advancing()
        nursery.cancel_scope.cancel()
    assert sends.times == [2.0, 4.0, 6.0]


async def test_a_stranger_reconnecting_in_a_loop_gets_one_resend_per_half_period(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every 0.1 s for 60 s: without the bound that would be a re-send every `SETTLE`."""
    sends = Sends()
    resender = Resender(ResendClock(2.0, trio.current_time()), sends.send)
    await run_for(resender, 60.0, every=0.1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(sends.times)]
    assert sends.times[0] == 0.1 + SETTLE  # the first newcomer is served at once
    assert min(gaps) >= 1.0
    assert len(sends.times) <= 60


async def test_a_peer_that_connects_during_a_slow_resend_is_served_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    times: list[float] = []

    async def slow_send() -> None:
        times.append(trio.current_time())
        await trio.sleep(1.0)  # publish waiting on a slow peer's queue

    resender = Resender(ResendClock(2.0, trio.current_time()), slow_send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resender.run)
        await trio.sleep(0.1)
        resender.newcomer()
        await trio.sleep(0.4)  # into the send that newcomer started
        resender.newcomer()
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    assert times[:2] == [0.1 + SETTLE, 0.1 + SETTLE + 1.0 + SETTLE]
