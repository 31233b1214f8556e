"""A failed dial told in one line an operator can act on, from py-libp2p's chain of errors."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator

import trio
from libp2p.security.noise.exceptions import PeerIDMismatchesPubkey

_ENDPOINT = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)")
_ANSWERED_AS = re.compile(r"remote_peer_id_from_pubkey=(\w+)")
_NOT_LIBP2P = ("multiselect", "negotiate", "not delimited")
"""Words of py-libp2p's errors when what answered does not speak libp2p's handshakes."""


def endpoint(address: str) -> str:
    """`host:port` (`[v6]:port`) of a multiaddr, or the multiaddr itself."""
    found = _ENDPOINT.match(address)
    if found is None:
        return address
    kind, host, port = found.groups()
    return f"[{host}]:{port}" if kind == "ip6" else f"{host}:{port}"


def chain(failure: BaseException) -> Iterator[BaseException]:
    """Every error behind `failure`: causes, contexts, groups and py-libp2p's MultiError."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [failure]
    while pending:
        error = pending.pop()
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        yield error
        pending += [error.__cause__, error.__context__]
        if isinstance(error, BaseExceptionGroup):
            pending += list(error.exceptions)
        pending += [e for e in getattr(error, "errors", None) or () if isinstance(e, BaseException)]


def answered_as_another(failure: BaseException) -> bool:
    """Whether a failed dial reached a peer other than the one dialled (the address is not
    that peer's), as py-libp2p's exception chain shows it."""
    return any(
        isinstance(error, PeerIDMismatchesPubkey) or "Peer ID mismatch" in str(error)
        for error in chain(failure)
    )


def why_dial_failed(
    failure: BaseException, address: str, expected: str, timeout: float, own: str = ""
) -> str:
    """One line: `cannot reach 127.0.0.1:4009: connection refused`, `127.0.0.1:4002 is
    12D3…, not 12D3…`, `127.0.0.1:80 does not speak libp2p`…"""
    where = endpoint(address)
    errors = list(chain(failure))
    for error in errors:
        if isinstance(error, PeerIDMismatchesPubkey):
            found = _ANSWERED_AS.search(str(error))
            other = found.group(1) if found else "another peer"
            if other == own:
                return f"{where} is this peer itself, not {expected}"
            return f"{where} is {other}, not {expected}"
    for error in errors:
        if isinstance(error, socket.gaierror):
            return f"cannot reach {where}: the name does not resolve"
        if isinstance(error, OSError) and error.errno is not None:
            return f"cannot reach {where}: {os.strerror(error.errno).lower()}"
    if any(isinstance(error, trio.TooSlowError) for error in errors):
        return f"cannot reach {where}: no answer within {timeout:g} s"
    if answered_as_another(failure):
        return f"{where} is another peer than {expected}"
    if any(word in str(error).lower() for error in errors for word in _NOT_LIBP2P):
        return f"{where} answered, but not as a libp2p peer with Noise and yamux"
    return f"cannot reach {where}: {errors[-1]}"
