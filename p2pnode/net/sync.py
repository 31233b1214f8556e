"""The request/response catch-up protocol and the genesis protocol: wire format and clients."""

from __future__ import annotations

import logging

import trio
from libp2p.abc import IHost, INetStream

from p2pnode.net.contracts import GENESIS_PROTOCOL, NetError
from p2pnode.net.fixes import reset_quietly
from p2pnode.net.framing import ByteStream, frame, read_frame, read_uvarint, uvarint, write_frame
from p2pnode.net.stack import client_host, dial, open_stream

log = logging.getLogger(__name__)

# Sync: the client sends one frame (the request); the server answers with a varint item count
# and that many frames, then closes. Genesis: the server sends one frame (the genesis) and
# closes. Every length is checked against its bound before the bytes it announces are read.

_WRITE_CHUNK = 64 * 1024


async def write_answer(
    stream: ByteStream, items: list[bytes], *, max_items: int, max_item_size: int, max_bytes: int
) -> int:
    """Send the first items that fit the bounds on `stream`; return the number sent."""
    items = items[:max_items]
    total = 0
    for index, item in enumerate(items):
        total += len(item)
        if len(item) > max_item_size or total > max_bytes:
            # The client would refuse the whole answer; the items before this one still help.
            log.warning("sync answer cut at item %d (%d bytes) by its bounds", index, len(item))
            items = items[:index]
            break
    # Few large writes: every write is at least one yamux frame and window update.
    pending = bytearray(uvarint(len(items)))
    for item in items:
        pending += frame(item)
        if len(pending) >= _WRITE_CHUNK:
            await stream.write(bytes(pending))
            pending.clear()
    if pending:
        await stream.write(bytes(pending))
    return len(items)


async def ask_sync(
    stream: ByteStream,
    request: bytes,
    *,
    max_request: int,
    max_items: int,
    max_item_size: int,
    max_bytes: int,
) -> list[bytes]:
    if len(request) > max_request:
        raise NetError(f"sync request of {len(request)} bytes exceeds {max_request}")
    await write_frame(stream, request)
    count = await read_uvarint(stream, max_items)
    items: list[bytes] = []
    left = max_bytes
    for _ in range(count):
        items.append(await read_frame(stream, min(max_item_size, left)))
        left -= len(items[-1])
    return items


async def fetch_genesis(multiaddr: str, *, timeout: float, max_size: int = 1024 * 1024) -> bytes:
    """Fetch the genesis from the peer at `multiaddr` (with /p2p/<id>) using a throwaway
    identity, for a peer that does not know its network yet. Raises NetError."""
    try:
        with trio.fail_after(timeout):
            async with client_host() as host:
                return await genesis_from(host, multiaddr, max_size)
    except trio.TooSlowError:
        raise NetError(f"no genesis from {multiaddr} within {timeout} s") from None
    except NetError:
        raise
    except Exception as err:  # the throwaway host failed to start or stop
        raise NetError(f"genesis from {multiaddr} failed: {err!r}") from err


async def genesis_from(host: IHost, multiaddr: str, max_size: int) -> bytes:
    """Ask the peer at `multiaddr` for its genesis over `host`. Raises NetError."""
    stream: INetStream | None = None
    try:
        peer = await dial(host, [multiaddr])
        stream = await open_stream(host, peer, GENESIS_PROTOCOL)
        genesis = await read_frame(stream, max_size)
        await stream.close()
        return genesis
    except Exception as err:
        if stream is not None:
            await reset_quietly(stream)
        if isinstance(err, NetError):
            raise
        raise NetError(f"genesis from {multiaddr} failed: {err!r}") from err
