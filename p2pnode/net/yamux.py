"""Yamux receive windows credited once half is used, as go-yamux and rust-yamux do, and held:
a sender that writes beyond the window loses its connection; a reset stream's unread bytes
dropped with it."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import trio
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_RST,
    HEADER_SIZE,
    TYPE_PING,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

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


BUFFER_BOUND = 2 * DEFAULT_WINDOW_SIZE
"""Bytes a stream may hold unread: the window a sender was given, with as much again to spare
for credits in flight. Honest senders stay within the window."""


STREAM_BOUND = 64
"""Streams a connection may hold open at once. py-libp2p takes every SYN, and each stream
that never names its protocol holds a slot of the swarm's global stream limit (10,000) for
30 s: one stranger's connection filled it in a second, and provers' sync requests failed."""


STREAM_RATE = 32.0
STREAM_BURST = 64.0
"""Streams a stranger may open per second on a connection, in bursts of STREAM_BURST; a prover
or named peer, at any rate (see `free_openings`). py-libp2p does its share of work for each
stream before any handler of ours can charge it (SYN, stream objects, tasks, notifications:
about 0.13 ms), and a stream opened and reset in the same frame never counts toward
STREAM_BOUND. A stranger's catch-up asks for 64 frames a stream, and its network's work
budget lets it open some 25 a second anyway."""


class MuxerBoundsError(OSError):
    """The remote wrote past a receive window, or opened streams past STREAM_BOUND (an
    OSError: py-libp2p's yamux reader ends the connection on those)."""


class _Buffer(bytearray):
    """One stream's unread bytes; writing past BUFFER_BOUND ends the connection."""

    def __init__(self, conn: Yamux, initial: bytes | bytearray = b"") -> None:
        super().__init__(initial)
        self._conn = conn

    def extend(self, data: Any) -> None:
        super().extend(data)
        if len(self) > BUFFER_BOUND:
            self._conn.event_shutting_down.set()
            raise MuxerBoundsError(f"{self._conn.peer_id} wrote past the receive window")


class _Buffers(dict[int, bytearray]):
    """A connection's stream buffers, each a `_Buffer`, at most STREAM_BOUND of them."""

    def __init__(self, conn: Yamux, buffers: dict[int, bytearray]) -> None:
        super().__init__((k, _Buffer(conn, v)) for k, v in buffers.items())
        self._conn = conn
        self._opens = STREAM_BURST
        self._since = trio.current_time()
        # Yamux: the dialer's streams have odd ids, the listener's even ones.
        self._theirs = 0 if conn.is_initiator_value else 1
        self.free = False
        """Whether the remote opens streams at any rate (a trusted peer's connection)."""
        self.resetting: set[int] = set()
        """Streams this side is resetting: their RST is not a reply."""

    def __setitem__(self, key: int, value: bytearray) -> None:
        if key not in self:
            if len(self) >= STREAM_BOUND:
                self._end(f"opened more than {STREAM_BOUND} streams")
            if key % 2 == self._theirs:
                if not self._may_open():
                    self._end(f"opened streams faster than {STREAM_RATE:.0f} a second")
            elif key != self._conn.next_stream_id - 2:  # not the one this side just opened
                # py-libp2p takes a SYN on any id it does not hold, of either side's parity:
                # on ours, openings escaped the rate. go-yamux ends the connection too.
                self._end(f"opened a stream with an id of ours ({key})")
        super().__setitem__(
            key, value if isinstance(value, _Buffer) else _Buffer(self._conn, value)
        )

    def charge_reply(self, frame: bytes) -> None:
        """A frame this side writes only because the remote asked for it (a pong; an RST to a
        SYN on a stream still open) costs the remote an opening: py-libp2p wrote one for every
        12 bytes read, uncharged."""
        if len(frame) < HEADER_SIZE:
            return
        _, kind, flags, stream_id, _ = struct.unpack(YAMUX_HEADER_FORMAT, frame[:HEADER_SIZE])
        pong = kind == TYPE_PING and flags & FLAG_ACK
        refusal = flags & FLAG_RST and stream_id not in self.resetting
        if (pong or refusal) and not self._may_open():
            self._end(f"asked for replies faster than {STREAM_RATE:.0f} a second")

    def _may_open(self) -> bool:
        """Take one of the remote's stream openings, if its bucket holds one."""
        if self.free:
            return True
        now = trio.current_time()
        self._opens = min(STREAM_BURST, self._opens + (now - self._since) * STREAM_RATE)
        self._since = now
        if self._opens < 1:
            return False
        self._opens -= 1
        return True

    def _end(self, why: str) -> None:
        self._conn.event_shutting_down.set()
        raise MuxerBoundsError(f"{self._conn.peer_id} {why}")


def free_openings(muxed: object) -> None:
    """Let the remote of `muxed` (a connection's muxer) open streams at any rate."""
    buffers = getattr(muxed, "stream_buffers", None)
    if isinstance(buffers, _Buffers):
        buffers.free = True


_LIBRARY_INIT = vars(Yamux)["__init__"]


def _bounded_init(self: Yamux, *args: Any, **kwargs: Any) -> None:
    """py-libp2p 0.8's yamux reads on whatever a sender writes, past the window it gave, and
    only logs it (a stranger whose reads were paced had 20 MB buffered in seconds), takes any
    number of streams, and answers any number of pings."""
    _LIBRARY_INIT(self, *args, **kwargs)
    buffers = _Buffers(self, self.stream_buffers)
    self.stream_buffers = buffers
    write = self._write_frame

    async def charged_write(data: bytes) -> None:
        buffers.charge_reply(data)
        await write(data)

    self._write_frame = charged_write  # type: ignore[method-assign]


_WINDOWS = Patch(Yamux, "__init__", _bounded_init)

_LIBRARY_RESET = vars(YamuxStream)["reset"]


async def _reset_dropping_unread(self: YamuxStream) -> None:
    """py-libp2p 0.8 keeps a reset stream while bytes it never read are buffered, until a
    sweep 60 to 90 s later, and each one counts toward STREAM_BOUND: 64 streams of a peer
    reset by us unread (refused for want of budget) closed its connection on the 65th."""
    conn = self.conn
    buffer = conn.stream_buffers.get(self.stream_id)
    if buffer is not None:
        del buffer[:]  # a reset ends both directions: nothing in it will be read
    own = conn.stream_buffers.resetting if isinstance(conn.stream_buffers, _Buffers) else set()
    own.add(self.stream_id)
    try:
        await _LIBRARY_RESET(self)
    finally:
        own.discard(self.stream_id)
        # Bytes that came in while the reset was written (or a reset cut short) would keep
        # the stream as well: dropped again, and the stream with them.
        with trio.CancelScope(shield=True):
            async with conn.streams_lock:
                buffer = conn.stream_buffers.get(self.stream_id)
                if buffer is not None:
                    del buffer[:]
                if self.closed:
                    conn._finalize_stream_locked(self, fully_closed=True)


_RESETS = Patch(YamuxStream, "reset", _reset_dropping_unread)


@contextmanager
def windows_held() -> Iterator[None]:
    """While held, every new yamux connection ends when its remote writes past a stream's
    receive window or opens more than STREAM_BOUND streams at once, and a stream reset here
    drops what it holds unread; the library's own are back when the last holder leaves."""
    with _WINDOWS.held(), _RESETS.held():
        yield
