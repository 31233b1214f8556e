"""Yamux receive windows credited once half is used, as go-yamux and rust-yamux do."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from libp2p.stream_muxer.yamux.yamux import YamuxStream

from p2pnode.net.guards import check_libp2p_version

_METHOD = "_auto_tune_and_send_window_update"
"""py-libp2p 0.8's hook, called after every read of a stream."""


async def _credit_at_half(self: YamuxStream, *, bytes_read: int = 0) -> None:
    """Send a WINDOW_UPDATE once the reader has consumed half the receive window.

    py-libp2p 0.8 credits the bytes of every read at once (with PY_YAMUX_RELEASE_ON_READ=0
    still every other read): for gossip, one small message per read, that is an extra
    encrypted frame written for every message received. The sender never stalls on a window
    that is credited at half, since the other half is still open.
    """
    async with self.window_lock:
        buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
        consumed = self.target_recv_window - (self.recv_window + buffered)
        if consumed < self.target_recv_window // 2:
            return
        self.recv_window += consumed
    await self.send_window_update(consumed, skip_lock=True)


class _Installed:
    """How many holders want the credit policy; the library's own is back when none does."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders = 0
        self.original: Any = None


_installed = _Installed()


@contextmanager
def credit_at_half() -> Iterator[None]:
    """While held (by any number of peers in this process), every yamux stream credits its
    receive window once half is used; the library's method is restored when the last leaves."""
    check_libp2p_version()
    if _METHOD not in vars(YamuxStream):
        raise RuntimeError(f"py-libp2p's YamuxStream has no {_METHOD}: the patch needs review")
    with _installed.lock:
        if _installed.holders == 0:
            _installed.original = vars(YamuxStream)[_METHOD]
            setattr(YamuxStream, _METHOD, _credit_at_half)
        _installed.holders += 1
    try:
        yield
    finally:
        with _installed.lock:
            _installed.holders -= 1
            if _installed.holders == 0:
                setattr(YamuxStream, _METHOD, _installed.original)
