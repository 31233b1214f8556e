"""Length-prefixed (unsigned varint) frames on a byte stream, with hard size bounds."""

from __future__ import annotations

from typing import Protocol

from libp2p.utils.varint import encode_uvarint

from p2pnode.net.contracts import NetError

_MAX_VARINT_BYTES = 10


class ByteStream(Protocol):
    """The two stream operations framing needs; a libp2p stream has both."""

    async def read(self, n: int) -> bytes: ...

    async def write(self, data: bytes) -> None: ...


def uvarint(value: int) -> bytes:
    """`value` as an unsigned varint; ValueError for a negative one."""
    return encode_uvarint(value)


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
    # Hand-written rather than py-libp2p's `decode_uvarint_from_stream`: that one is typed for
    # its own `Reader` class, not any `ByteStream`, and raises its ParseError and
    # IncompleteReadError, which every caller would have to translate into NetError.
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
