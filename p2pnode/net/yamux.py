"""Yamux receive windows credited once half is used, as go-yamux and rust-yamux do."""

from __future__ import annotations

from contextlib import AbstractContextManager

from libp2p.stream_muxer.yamux.yamux import YamuxStream

from p2pnode.net.patches import Patch

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


_PATCH = Patch(YamuxStream, _METHOD, _credit_at_half)


def credit_at_half() -> AbstractContextManager[None]:
    """While held (by any number of peers in this process), every yamux stream credits its
    receive window once half is used; the library's method is restored when the last leaves."""
    return _PATCH.held()
