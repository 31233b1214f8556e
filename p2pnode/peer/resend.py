"""When a stalled prover sends its latest messages again: one period after its last progress."""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Awaitable, Callable

import trio

ROUNDS_KEPT = 16
"""How many recent round durations make the typical round."""

SETTLE = 0.25
"""After a peer connects, how long a re-send waits for its pubsub streams and mesh."""

MAX_STRETCH = 2
"""The period never grows beyond this many times the configured one (the default first attempt
lasts as long), so a stall is answered within a bounded time whatever the rounds before it:
rounds slowed by faults count towards the typical one as well."""


class ResendClock:
    """The re-send period is the configured one or twice the typical round, whichever is longer.

    Gossip is best effort, so a prover re-sends its latest messages while its rank stalls. A
    round that merely takes longer than the configured period is not a stall, though: at ten
    provers on two cores rounds took 2-3 s, a 2 s period re-sent about six messages per prover
    in most rounds, and those copies (each judged by every peer) cost a third of the
    throughput. Times are in seconds of one monotonic clock.
    """

    def __init__(self, period: float, now: float) -> None:
        self._configured = period
        self._rounds: deque[float] = deque(maxlen=ROUNDS_KEPT)
        self._progress_at = now
        self._since = now
        self._resent_at = -math.inf

    def period(self) -> float:
        typical = statistics.median(self._rounds) if self._rounds else 0.0
        return min(max(self._configured, 2 * typical), MAX_STRETCH * self._configured)

    def due(self) -> float:
        """When to re-send, unless the rank moves on first."""
        return self._since + self.period()

    def progressed(self, now: float) -> None:
        """A rank became final: the round it ended counts towards the typical one."""
        self._rounds.append(now - self._progress_at)
        self._progress_at = self._since = now

    def resent(self, now: float) -> None:
        self._since = self._resent_at = now

    def may_resend_for_a_newcomer(self, now: float) -> bool:
        """At most one re-send per half configured period for peers that (re)connect: a
        stranger connecting again and again must not make every prover gossip again and again."""
        return now - self._resent_at >= self._configured / 2


class Resender:
    """A prover's re-send loop: `send` once its rank has stalled for a period (`ResendClock`),
    and when a peer (re)connects, which may have missed everything, at most once per half
    configured period however often peers connect."""

    def __init__(self, clock: ResendClock, send: Callable[[], Awaitable[None]]) -> None:
        self.clock = clock
        self._send = send
        self._newcomer = trio.Event()
        self.resends: dict[str, int] = {"stall": 0, "newcomer": 0}
        """Re-sends so far, by what caused them."""

    def newcomer(self) -> None:
        """A peer connected (or connected again)."""
        self._newcomer.set()

    async def run(self) -> None:
        clock = self.clock
        while True:
            with trio.move_on_at(clock.due()):
                await self._newcomer.wait()
            if self._newcomer.is_set():
                # Taken only now: a peer that connects while a re-send is under way (publish
                # may wait on a slow peer) is served after it, not forgotten.
                self._newcomer = trio.Event()
                await trio.sleep(SETTLE)
                if not clock.may_resend_for_a_newcomer(trio.current_time()):
                    continue
                cause = "newcomer"
            elif trio.current_time() < clock.due():
                continue  # the rank moved on meanwhile
            else:
                cause = "stall"
            self.resends[cause] += 1
            clock.resent(trio.current_time())
            await self._send()
