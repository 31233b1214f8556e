"""Log lines about network events, rate-limited: what a stranger sends never floods the log."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

BURST = 10
PERIOD = 60.0


_VARYING = re.compile(r"[0-9A-Za-z]{24,}|\d+")
"""Peer ids, hashes and numbers: what differs between lines of one kind that py-libp2p
formats itself (it often logs an f-string, not a template and its arguments)."""


def _kind_of(record: logging.LogRecord) -> object:
    if record.args or not isinstance(record.msg, str):
        return record.msg
    return _VARYING.sub("…", record.msg)[:120]


class Throttle(logging.Filter):
    """At most `burst` lines per `period` seconds of each kind (logger and message template)
    from the network's loggers; the first line let through after some were held back says
    how many. Counters, not lines, are where network events are told (see the status)."""

    def __init__(
        self,
        prefix: str = "p2pnode.net",
        burst: int = BURST,
        period: float = PERIOD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefix = prefix
        self._burst = burst
        self._period = period
        self._clock = clock
        self._kinds: dict[tuple[str, object], tuple[float, int, int]] = {}
        """(since, lines let through since then, lines held back since then) per kind."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefix):
            return True
        now, kind = self._clock(), (record.name, _kind_of(record))
        since, passed, held = self._kinds.get(kind, (now, 0, 0))
        if now - since >= self._period:
            since, passed = now, 0
        if passed >= self._burst:
            self._kinds[kind] = (since, passed, held + 1)
            return False
        if held:
            record.msg = f"{record.getMessage()} ({held} more like it held back)"
            record.args = None
        self._kinds[kind] = (since, passed + 1, 0)
        if len(self._kinds) > 4096:  # kinds are templates: a handful, unless a bug
            self._kinds.clear()
        return True
