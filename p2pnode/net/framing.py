"""Length-prefixed (unsigned varint) frames on a byte stream, with hard size bounds."""

from __future__ import annotations

from typing import Protocol

from p2pnode.net.contracts import NetError

_MAX_VARINT_BYTES = 10


class ByteStream(Protocol):
    """The two stream operations framing needs; a libp2p stream has both."""

    async def read(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


def uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(data: bytes) -> bytes:
    return uvarint(len(data)) + data


async def read_exactly(stream: ByteStream, size: int) -> bytes:
    """Read `size` bytes; a stream read may return fewer than asked, so loop."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = await stream.read(size - len(chunks))
        if not chunk:
            raise NetError(f"stream ended after {len(chunks)} of {size} bytes")
        chunks += chunk
    return bytes(chunks)


async def read_uvarint(stream: ByteStream, limit: int) -> int:
    """Read one varint, refusing values above `limit` before anything they announce is read."""
    value = 0
    for index in range(_MAX_VARINT_BYTES):
        byte = (await read_exactly(stream, 1))[0]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if value > limit:
                raise NetError(f"length {value} exceeds the limit {limit}")
            return value
    raise NetError("varint longer than 10 bytes")


async def read_frame(stream: ByteStream, limit: int) -> bytes:
    return await read_exactly(stream, await read_uvarint(stream, limit))


async def write_frame(stream: ByteStream, data: bytes) -> None:
    await stream.write(frame(data))
