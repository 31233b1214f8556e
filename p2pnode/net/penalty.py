"""Counting what each peer costs us: rejects and the bans that follow, and rate limits."""

from __future__ import annotations

import enum
import math
from collections import deque


class Limited(enum.Enum):
    """What a peer was refused for going over its rate (or, banned for it, coming back)."""

    SYNC = "sync requests over rate"
    IGNORES = "ignored messages over rate"
    RECORDS = "announcements of new peers over rate"
    BANNED = "connections of banned peers"


class Penalties:
    """`limit` rejects from one peer within `window` seconds ban it for `ban_period` seconds.

    Pure bookkeeping with an explicit clock (`now` arguments), so it is tested without time.
    """

    def __init__(self, limit: int, window: float, ban_period: float) -> None:
        self._limit = limit
        self._window = window
        self._ban_period = ban_period
        self._rejects: dict[str, deque[float]] = {}
        self._banned_until: dict[str, float] = {}

    def reject(self, peer: str, now: float) -> bool:
        """Count one reject against `peer`; True when this one bans it (only once per ban)."""
        if self.is_banned(peer, now):
            return False
        times = self._rejects.setdefault(peer, deque())
        times.append(now)
        while times and times[0] <= now - self._window:
            times.popleft()
        if len(times) < self._limit:
            return False
        del self._rejects[peer]
        self._banned_until[peer] = now + self._ban_period
        return True

    def is_banned(self, peer: str, now: float) -> bool:
        until = self._banned_until.get(peer)
        return until is not None and now < until

    def banned(self, now: float) -> list[str]:
        return sorted(peer for peer, until in self._banned_until.items() if now < until)

    def expire(self, now: float) -> list[str]:
        """Forget bans that have run out and reject counts that left the window; return the
        peers whose ban ended, so the caller can lift whatever refusal it put in place."""
        ended = [peer for peer, until in self._banned_until.items() if now >= until]
        for peer in ended:
            del self._banned_until[peer]
        stale = [peer for peer, times in self._rejects.items() if times[-1] <= now - self._window]
        for peer in stale:
            del self._rejects[peer]
        return ended


class Buckets:
    """A token bucket per peer: `burst` tokens, refilled at `rate` per second.

    Bounded: beyond `max_peers` buckets the one untouched longest goes (a full bucket is what
    a forgotten peer would get anyway). Explicit clock, like `Penalties`.
    """

    def __init__(self, rate: float, burst: float, max_peers: int = 4096) -> None:
        self._rate = rate
        self._burst = burst
        self._max_peers = max_peers
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, peer: str, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens of `peer`'s bucket; False (and nothing spent) if it lacks them."""
        if self.tokens(peer, now) < cost:
            return False
        self.charge(peer, now, cost)
        return True

    def tokens(self, peer: str, now: float) -> float:
        """What `peer`'s bucket holds now (below zero while it pays back a debt)."""
        tokens, since = self._tokens.get(peer, (self._burst, now))
        return min(self._burst, tokens + (now - since) * self._rate)

    def charge(self, peer: str, now: float, cost: float, floor: float = -math.inf) -> float:
        """Spend `cost` tokens even if the bucket goes into debt (no deeper than `floor`);
        what it holds after."""
        tokens = max(self.tokens(peer, now) - cost, floor)
        self._tokens.pop(peer, None)
        self._tokens[peer] = (tokens, now)  # re-inserted last: dict order is recency
        if len(self._tokens) > self._max_peers:
            del self._tokens[next(iter(self._tokens))]
        return tokens
