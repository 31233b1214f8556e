"""A batch submit's body, a CBOR array of byte strings, read in one pass that decodes nothing
else: a tag, a number or a map is refused by its head, before any of it is read."""

from __future__ import annotations

from p2pnode.api.server import MAX_SUBMIT_BATCH

_BYTES, _ARRAY = 2, 4
_KINDS = ("int", "int", "bytes", "str", "list", "dict", "tag", "float or simple value")
"""What each CBOR major type decodes to, named as the refusals name it."""
_WIDTHS = {24: 1, 25: 2, 26: 4, 27: 8}
"""Additional information 24-27: the argument follows in 1, 2, 4 or 8 bytes."""


class BatchError(ValueError):
    """A batch submit's body is not a CBOR array of 1 to MAX_SUBMIT_BATCH byte strings."""


def decode_batch(body: bytes) -> list[bytes]:
    """The mutations of a batch submit's body, in order; BatchError says what is wrong.

    Linear in the body by construction: a general decoder would first build whatever the body
    holds (cbor2 turns a tag-30 pair of bignums into a Fraction, quadratic in their size: a
    256 KB body held the event loop for seconds) and only then let its shape be refused.
    """
    major, count, at = _head(body, 0, "the body")
    if major != _ARRAY:
        raise BatchError(f"the body is not a CBOR array but a {_KINDS[major]}")
    if count == 0:
        raise BatchError("the batch is empty")
    if count > MAX_SUBMIT_BATCH:
        raise BatchError(f"the batch holds {count} items, more than {MAX_SUBMIT_BATCH}")
    items = []
    for index in range(count):
        major, length, at = _head(body, at, f"item {index}")
        if major != _BYTES:
            raise BatchError(f"item {index} is not a byte string but a {_KINDS[major]}")
        end = at + length
        if end > len(body):
            raise BatchError(f"the body is not CBOR: it ends inside item {index}")
        items.append(body[at:end])
        at = end
    if at != len(body):
        raise BatchError("the body is not CBOR: bytes follow its first value")
    return items


def _head(body: bytes, at: int, what: str) -> tuple[int, int, int]:
    """The major type and argument of the data item at `at`, and where its content starts."""
    if at >= len(body):
        raise BatchError(f"the body is not CBOR: it ends before {what}")
    major, info = body[at] >> 5, body[at] & 0x1F
    if info < 24:
        return major, info, at + 1
    width = _WIDTHS.get(info)
    if width is None:
        # 28-30 are reserved; 31 is an indefinite length (or a stray break code).
        raise BatchError(f"the body is not CBOR with definite lengths: {what} has head {info}")
    end = at + 1 + width
    if end > len(body):
        raise BatchError(f"the body is not CBOR: it ends inside the head of {what}")
    return major, int.from_bytes(body[at + 1 : end], "big"), end
