"""Yamux window credit: one WINDOW_UPDATE per half window read, not one per message; a stream
reset unread is dropped at once."""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

import multiaddr
import pytest
import trio
import trio.testing
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_ACK,
    FLAG_RST,
    FLAG_SYN,
    TYPE_DATA,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

from p2pnode.net.stack import new_libp2p_host
from p2pnode.net.yamux import (
    STREAM_BOUND,
    STREAM_BURST,
    STREAM_RATE,
    MuxerBoundsError,
    credit_at_half,
    free_openings,
    windows_held,
)

LOOPBACK = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
PROTOCOL = "/p2pnode-test/yamux/1"


async def credits_sent(messages: int, size: int) -> list[int]:
    """Send `messages` messages of `size` bytes, each read on its own; the window credits the
    reader sent back."""
    sender, reader = new_libp2p_host(None), new_libp2p_host(None)
    credits: list[int] = []
    done = trio.Event()

    async def read_all(stream: INetStream) -> None:
        muxed = stream.muxed_stream  # type: ignore[attr-defined]
        assert isinstance(muxed, YamuxStream)
        send_update = muxed.send_window_update

        async def counted(increment: int, skip_lock: bool = False) -> None:
            credits.append(increment)
            await send_update(increment, skip_lock)

        muxed.send_window_update = counted  # type: ignore[method-assign]
        received = 0
        while received < messages * size:
            received += len(await stream.read(size))
        done.set()

    with trio.fail_after(30):
        async with sender.run([LOOPBACK]), reader.run([LOOPBACK]):
            reader.set_stream_handler(PROTOCOL, read_all)  # type: ignore[arg-type]
            await sender.connect(PeerInfo(reader.get_id(), reader.get_addrs()))
            stream = await sender.new_stream(reader.get_id(), [PROTOCOL])  # type: ignore[list-item]
            for _ in range(messages):
                await stream.write(b"m" * size)
                await trio.testing.wait_all_tasks_blocked()  # read before the next arrives
            await done.wait()
    return credits


@pytest.fixture
def credited() -> Iterator[None]:
    with credit_at_half():
        yield


async def test_small_messages_send_no_window_update_until_half_the_window_is_read(
    credited: None,
) -> None:
    assert await credits_sent(200, 100) == []


async def test_a_large_transfer_is_credited_at_each_half_window_and_never_stalls(
    credited: None,
) -> None:
    size = 16 * 1024
    credits = await credits_sent(64, size)  # 1 MiB: four windows' worth
    assert len(credits) >= 64 * size // DEFAULT_WINDOW_SIZE
    assert all(credit >= DEFAULT_WINDOW_SIZE // 2 for credit in credits)


async def test_without_it_py_libp2p_credits_every_read() -> None:
    # Most messages are read on their own; two that arrive together share a read and a credit.
    assert len(await credits_sent(50, 100)) > 25


def test_the_library_method_is_back_when_the_last_holder_leaves() -> None:
    original = vars(YamuxStream)["_auto_tune_and_send_window_update"]
    with credit_at_half():
        with credit_at_half():
            patched = vars(YamuxStream)["_auto_tune_and_send_window_update"]
            assert patched is not original
        assert vars(YamuxStream)["_auto_tune_and_send_window_update"] is patched
    assert vars(YamuxStream)["_auto_tune_and_send_window_update"] is original


def test_the_library_constructor_is_back_when_the_last_window_holder_leaves() -> None:
    original = vars(Yamux)["__init__"]
    with windows_held(), windows_held():
        assert vars(Yamux)["__init__"] is not original
    assert vars(Yamux)["__init__"] is original


class _Quiet:
    """A secured connection that takes every write and closes on demand."""

    is_initiator = False

    async def write(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


async def _reset_with_unread_bytes(connection: Yamux, stream_id: int) -> None:
    """A stream the remote opened and wrote its protocol header on, reset here unread."""
    async with connection.streams_lock:
        stream = YamuxStream(stream_id, connection, False)
        connection.streams[stream_id] = stream
        connection.stream_buffers[stream_id] = bytearray()
        connection.stream_events[stream_id] = trio.Event()
        connection.stream_buffers[stream_id].extend(b"\x13/multistream/1.0.0\n")
    await stream.reset()


async def test_a_stream_reset_unread_is_dropped_at_once_not_counted_toward_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """py-libp2p kept a reset stream while it held unread bytes, for a minute or more, and each
    counted toward STREAM_BOUND: a peer whose streams we reset unread (refused for want of
    budget) lost its connection on the next one past the bound."""
    with windows_held():
        connection = Yamux(_Quiet(), ID(b"\x00\x01x"), is_initiator=False)  # type: ignore[arg-type]
        for index in range(STREAM_BOUND + 8):
            await _reset_with_unread_bytes(connection, 2 * index + 1)
            await trio.sleep(1 / STREAM_RATE)  # within the rate of openings
        assert connection.streams == {}
        assert len(connection.stream_buffers) == 0


def test_the_library_reset_is_back_when_the_last_window_holder_leaves() -> None:
    original = vars(YamuxStream)["reset"]
    with windows_held(), windows_held():
        assert vars(YamuxStream)["reset"] is not original
    assert vars(YamuxStream)["reset"] is original


async def test_a_remote_opening_streams_faster_than_the_rate_loses_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each stream costs py-libp2p work before any handler of ours can charge it, and one
    opened and reset in the same frame never counted toward STREAM_BOUND: SYN and RST in a
    loop, 12 bytes a stream, kept a core busy. The remote's openings are now rate-bounded;
    this side's own are not."""
    with windows_held():
        connection = Yamux(_Quiet(), ID(b"\x00\x01x"), is_initiator=False)  # type: ignore[arg-type]
        theirs = (2 * index + 1 for index in itertools.count())
        for _ in range(int(STREAM_BURST)):
            await _reset_with_unread_bytes(connection, next(theirs))
        for _ in range(int(STREAM_BURST)):  # this side's own, as `open_stream` numbers them
            ours = connection.next_stream_id
            connection.next_stream_id += 2
            connection.stream_buffers[ours] = bytearray()
            del connection.stream_buffers[ours]
        await trio.sleep(1)
        for _ in range(int(STREAM_RATE)):
            await _reset_with_unread_bytes(connection, next(theirs))
        with pytest.raises(MuxerBoundsError, match="faster than 32 a second"):
            await _reset_with_unread_bytes(connection, next(theirs))
        assert connection.event_shutting_down.is_set()


async def test_a_remote_opening_a_stream_with_an_id_of_ours_loses_its_connection() -> None:
    """py-libp2p takes a SYN on any id it does not hold: on this side's parity, a stranger's
    openings escaped the rate (5,000 SYN|RST frames, 4,999 streams, the connection up)."""
    with windows_held():
        connection = Yamux(_Quiet(), ID(b"\x00\x01x"), is_initiator=False)  # type: ignore[arg-type]
        with pytest.raises(MuxerBoundsError, match="an id of ours"):
            await _reset_with_unread_bytes(connection, connection.next_stream_id + 2)
        assert connection.event_shutting_down.is_set()


class _Racing:
    """A remote whose data is in flight when this side's RST goes out: it arrives while the
    reset is being written."""

    is_initiator = True

    def __init__(self) -> None:
        self.data = bytearray()
        self.more = trio.Event()

    def feed(self, data: bytes) -> None:
        self.data += data
        self.more.set()

    async def read(self, n: int = -1) -> bytes:
        while not self.data:
            self.more = trio.Event()
            await self.more.wait()
        out = bytes(self.data[:n])
        del self.data[:n]
        return out

    async def write(self, data: bytes) -> None:
        header = struct.unpack(YAMUX_HEADER_FORMAT, data[:12])
        if header[1] == TYPE_WINDOW_UPDATE and header[2] & FLAG_RST:
            self.feed(struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, 2, 5) + b"hello")
        await trio.sleep(0.01)  # the socket's send

    async def close(self) -> None:
        pass


async def test_bytes_that_come_in_while_a_reset_is_written_do_not_keep_the_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Dropping the unread bytes before the reset left those that came in during its write:
    the stream was held again, toward the bound, for a minute or more."""
    remote = _Racing()
    with windows_held():
        connection = Yamux(remote, ID(b"\x00\x01x"))  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.start)
            remote.feed(struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, FLAG_SYN, 2, 5) + b"hello")
            stream = await connection.accept_stream()
            await trio.sleep(0.05)
            await stream.reset()
            await trio.sleep(0.05)
            assert 2 not in connection.streams
            assert not connection.stream_buffers.get(2)
            nursery.cancel_scope.cancel()


class _Asking(_Racing):
    """A remote that asks for replies (pings, SYNs on a stream still open), and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.replies = 0

    async def write(self, data: bytes) -> None:
        _, kind, flags, _, _ = struct.unpack(YAMUX_HEADER_FORMAT, data[:12])
        pong = kind == TYPE_PING and flags & FLAG_ACK
        self.replies += bool(pong or flags & FLAG_RST)
        await trio.lowlevel.checkpoint()


async def _asked(frames: bytes, *, trusted: bool) -> tuple[int, bool]:
    """Replies sent to `frames`, and whether the connection is ending."""
    remote = _Asking()
    with windows_held():
        connection = Yamux(remote, ID(b"\x00\x01x"))  # type: ignore[arg-type]
        if trusted:
            free_openings(connection)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.start)
            remote.feed(frames)
            await trio.testing.wait_all_tasks_blocked()
            ending = connection.event_shutting_down.is_set()
            nursery.cancel_scope.cancel()
    return remote.replies, ending


async def test_a_stranger_asking_for_replies_faster_than_the_rate_loses_its_connection(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Each ping was answered with a pong, and each SYN on a stream still open with an RST:
    one frame written for 12 bytes read, uncharged. A reply now costs the remote one of its
    stream openings; a prover's are not counted. (The clock stands still: no opening is
    earned back meanwhile.)"""
    pings = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_PING, FLAG_SYN, 0, 7) * 200
    assert await _asked(pings, trusted=False) == (int(STREAM_BURST), True)
    assert await _asked(pings, trusted=True) == (200, False)
    syns = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0) * 200
    # The first opens the stream (an opening too); each one after is answered with an RST.
    assert await _asked(syns, trusted=False) == (int(STREAM_BURST) - 1, True)
