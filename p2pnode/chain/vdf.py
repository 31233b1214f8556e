"""Wesolowski verifiable delay function over class groups (chiavdf), with canonical encodings."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import chiavdf
import trio

DISCRIMINANT_BITS = 1024
"""Size of the class group's discriminant unless the genesis chooses 512 (`bits` below);
chiavdf's Python build refuses more than 1024."""
BITS = (512, DISCRIMINANT_BITS)
"""The discriminant sizes a network may choose (its genesis's `vdf_bits`)."""

FORM_SIZE = 100
"""Bytes of one serialized class-group element (an output or a proof). chiavdf pads every
element to the size of its largest supported discriminant (1024 bits), whatever the size used."""

CHALLENGE_SIZE = 32
"""Challenges are hashes. chiavdf's discriminant search never returns for some short seeds (a
1-byte challenge hangs it), so only hash-sized challenges ever reach it."""

MAX_ITERATIONS = 2**63 - 1
"""chiavdf counts iterations in a uint64; the wire format bounds integers below 2**63."""

# Serialized elements start with a flag byte: bit 2 marks the identity form (1, 1), bit 3 the
# generator form (2, 1). chiavdf reads either special form from the flag alone and ignores the
# other 99 bytes, even in its strict mode, so those bytes must be checked here.
_SPECIAL_FORM_FLAGS = 0x0C
_IDENTITY = b"\x04" + bytes(FORM_SIZE - 1)
_GENERATOR = b"\x08" + bytes(FORM_SIZE - 1)

_START = _GENERATOR
"""Every evaluation starts at the generator; the challenge picks the group."""

PROVE_THREAD_NAME = "p2pnode-vdf-prove"

SECONDS_PER_ITERATION = 20e-6
"""What the engine's waits assume one iteration costs: a machine 2.5 times slower than one that
proves at 8 µs an iteration (a 2020s x86 core) still proves within them."""


def proving_time(iterations: int) -> float:
    """The seconds a frame's proof of `iterations` is assumed to take, for the engine's waits."""
    return iterations * SECONDS_PER_ITERATION


# trio-typing's stubs (installed with libp2p) shadow trio's own annotations and still know only
# `cancellable`, the name trio 0.23 deprecated and 0.35 removed; its successor is
# `abandon_on_cancel`. Typing the call loosely keeps mypy and the runtime both satisfied.
_run_in_thread: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync


def _check(challenge: bytes, iterations: int, bits: int = DISCRIMINANT_BITS) -> None:
    if bits not in BITS or type(bits) is not int:
        raise ValueError(f"a discriminant has one of {BITS} bits, not {bits!r}")
    if not isinstance(challenge, bytes) or len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"a VDF challenge is a {CHALLENGE_SIZE}-byte hash")
    if isinstance(iterations, bool) or not isinstance(iterations, int):
        raise TypeError("iterations must be an int")
    # Zero iterations would "prove" the start element itself: no work at all.
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be in [1, {MAX_ITERATIONS}], not {iterations}")


@functools.lru_cache(maxsize=256)
def _discriminant(challenge: bytes, bits: int) -> str:
    # Deriving the discriminant (a hash-to-prime search, 3-80 ms) often costs more than checking
    # the proof, and one frame arrives several times (proposal, confirmations, rebroadcasts).
    return chiavdf.create_discriminant(challenge, bits)


def _split(result: bytes) -> tuple[bytes, bytes]:
    if len(result) != 2 * FORM_SIZE:
        raise RuntimeError(f"chiavdf returned {len(result)} bytes instead of {2 * FORM_SIZE}")
    return result[:FORM_SIZE], result[FORM_SIZE:]


def prove(challenge: bytes, iterations: int, bits: int = DISCRIMINANT_BITS) -> tuple[bytes, bytes]:
    """(output, proof) of `iterations` squarings in the group named by `challenge`, whose
    discriminant has `bits` bits.

    CPU-bound and blocking (about 8 µs per iteration): call `prove_async` from trio code.
    """
    _check(challenge, iterations, bits)
    # An empty stop-file path disables chiavdf's stop check.
    return _split(chiavdf.prove(challenge, _START, bits, iterations, ""))


class _InFlight:
    """Counts worker threads inside chiavdf: a process must not exit while one runs (the C++
    runtime aborts the process when a thread is still in native code at exit)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._count > 0


_in_flight = _InFlight()


async def settle(timeout: float = 2.0) -> bool:
    """Wait (up to `timeout`) until no worker thread is inside chiavdf; True if none is.

    A cancelled proof stops within about 0.15 s once its run file is gone (see prove_async).
    """
    with trio.move_on_after(timeout):
        while _in_flight.busy:
            await trio.sleep(0.01)
    return not _in_flight.busy


def _prove_while_exists(
    challenge: bytes, iterations: int, bits: int, run_file: str
) -> tuple[bytes, bytes]:
    with _in_flight.held():
        result = chiavdf.prove(challenge, _START, bits, iterations, run_file)
    if not result:
        raise RuntimeError("VDF evaluation stopped: its run file disappeared")
    return _split(result)


async def prove_async(
    challenge: bytes, iterations: int, bits: int = DISCRIMINANT_BITS
) -> tuple[bytes, bytes]:
    """`prove` in a worker thread (chiavdf releases the GIL); cancellable.

    On cancellation trio abandons the thread at once, and removing the run file makes chiavdf
    stop within about 0.15 s instead of finishing the evaluation for nothing: chiavdf's
    `shutdown_file_path` argument names a file that must keep existing while it works.
    """
    _check(challenge, iterations, bits)
    descriptor, run_file = tempfile.mkstemp(prefix="p2pnode-vdf-")
    os.close(descriptor)
    try:
        output, proof = await _run_in_thread(
            _prove_while_exists,
            challenge,
            iterations,
            bits,
            run_file,
            abandon_on_cancel=True,
            thread_name=PROVE_THREAD_NAME,
        )
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(run_file)
    return bytes(output), bytes(proof)


def _canonical(discriminant: str, form: bytes) -> bool:
    """Whether `form` is the one encoding chiavdf itself produces for its element.

    chiavdf's verifier accepts other encodings of the same element (e.g. other last bytes of
    the output), which would give one proof several byte strings and one frame several ids.
    """
    if form[0] & _SPECIAL_FORM_FLAGS:
        return form in (_IDENTITY, _GENERATOR)
    try:
        chiavdf.bqfc_deserialize(discriminant, form, True)
    except (RuntimeError, ValueError):
        return False
    return True


def verify(
    challenge: bytes, iterations: int, output: bytes, proof: bytes, bits: int = DISCRIMINANT_BITS
) -> bool:
    """Whether `proof` shows that `output` is `iterations` squarings of the challenge's start,
    in the group of `bits` bits.

    Any malformed input is just invalid (False): the inputs come off the wire.
    """
    try:
        _check(challenge, iterations, bits)
    except (TypeError, ValueError):
        return False
    for form in (output, proof):
        if not isinstance(form, bytes) or len(form) != FORM_SIZE:
            return False
    try:
        discriminant = _discriminant(challenge, bits)
        if not (_canonical(discriminant, output) and _canonical(discriminant, proof)):
            return False
        return bool(chiavdf.verify_wesolowski(discriminant, _START, output, proof, iterations))
    except (RuntimeError, ValueError, TypeError):
        # chiavdf raises RuntimeError for forms it cannot decode ("Invalid form ...").
        return False


async def verify_async(
    challenge: bytes, iterations: int, output: bytes, proof: bytes, bits: int = DISCRIMINANT_BITS
) -> bool:
    """`verify` in a worker thread: it takes milliseconds, too long for the event loop."""
    valid = await _run_in_thread(
        _verify_counted, challenge, iterations, output, proof, bits, abandon_on_cancel=True
    )
    return bool(valid)


async def prepare(challenge: bytes, bits: int = DISCRIMINANT_BITS) -> None:
    """Derive the discriminant of `challenge` in a worker thread, ahead of a verification."""
    _check(challenge, 1, bits)
    await _run_in_thread(_discriminant_counted, challenge, bits, abandon_on_cancel=True)


def _discriminant_counted(challenge: bytes, bits: int) -> None:
    with _in_flight.held():
        _discriminant(challenge, bits)


def _verify_counted(
    challenge: bytes, iterations: int, output: bytes, proof: bytes, bits: int
) -> bool:
    with _in_flight.held():
        return verify(challenge, iterations, output, proof, bits)
