"""py-libp2p 0.8.1 as a consensus peer needs it: guards, logging, ids and verdicts."""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, suppress
from types import TracebackType
from typing import Any

import multiaddr
import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.network.connection import swarm_connection
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.transport.tcp import tcp as tcp_module

from p2pnode.net.contracts import NetError, Verdict
from p2pnode.net.patches import Patch
from p2pnode.net.yamux import free_openings

log = logging.getLogger(__name__)


async def reset_quietly(stream: INetStream) -> None:
    """Reset `stream`, for a second at most (a remote that reads nothing would hold the write
    of the reset), whatever it raises."""
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await stream.reset()
        except Exception:
            log.debug("stream reset failed", exc_info=True)


SUBSCRIPTION_CAPACITY = 1024
"""py-libp2p gives each subscription a 32-slot channel and drops on overflow; a
burst of relayed messages lands in one scheduler batch before the drain task runs."""

ORIGIN_CACHE_SIZE = 4096

Validator = Callable[[str, str, bytes], Verdict]
"""(forwarder, origin, data) -> the verdict; only ACCEPT lets libp2p deliver and forward."""
StreamHandler = Callable[[str, INetStream], Awaitable[None]]
"""(remote peer id, stream); may raise, the stack resets the stream and logs."""


def route_libp2p_logging() -> None:
    """Send py-libp2p's records to `p2pnode.net.libp2p` instead of Python's last-resort stderr
    handler, so the application's logging configuration decides what is shown (idempotent).
    py-libp2p sets its `libp2p` logger to WARNING when imported; lower that logger to see more.
    """
    # swarm_connection.py logs through the root functions (`logging.debug(...)`), and the first
    # such call in a process without logging configured runs `logging.basicConfig()`: a stderr
    # handler on the application's root logger, printing every WARNING from then on. It only
    # calls debug and warning, which a named Logger has too.
    if vars(swarm_connection).get("logging") is logging:
        vars(swarm_connection)["logging"] = logging.getLogger(swarm_connection.__name__)
    source = logging.getLogger("libp2p")
    if not any(isinstance(h, _Forward) for h in source.handlers):
        source.addHandler(_Forward())
        source.propagate = False
    # A library never prints on its own: without this, p2pnode.net records would reach the
    # last-resort handler too when the application configured no logging at all.
    target = logging.getLogger("p2pnode.net")
    if not any(isinstance(h, logging.NullHandler) for h in target.handlers):
        target.addHandler(logging.NullHandler())


_EXPECTED = {
    ("libp2p.transport.tcp.tcp", "Failed to open TCP stream: %s"),
    ("libp2p.network.swarm", "failed to upgrade security for peer %s: %s"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake: read failed: %s"),
    ("libp2p.protocol_muxer.multiselect_client", "MultiselectClient handshake: write failed: %s"),
}
"""py-libp2p's ERROR records of what a peer expects (a dial to a peer that is down, cut off,
not the peer dialled or not libp2p at all): logged at DEBUG, like the network layer's own
line on the failed dial (the dialler logs one WARNING line naming why)."""


_STOPPED = {"libp2p.network.auto_connector"}
"""py-libp2p's services the stack stops (see `Stack`): what they log before the stop is
not what the peer does, so it goes to DEBUG."""


class _Forward(logging.Handler):
    _target = logging.getLogger("p2pnode.net.libp2p")

    def emit(self, record: logging.LogRecord) -> None:
        expected = (record.name, record.msg) in _EXPECTED or record.name in _STOPPED
        level = logging.DEBUG if expected else record.levelno
        if self._target.isEnabledFor(level):
            # A copy: other handlers on the libp2p logger may hold the original.
            copy = logging.makeLogRecord(record.__dict__)
            copy.name = f"p2pnode.net.{record.name}"
            copy.levelno, copy.levelname = level, logging.getLevelName(level)
            self._target.handle(copy)


class Guarded:
    """Leaves a libp2p context without letting py-libp2p's own failures escape.

    py-libp2p can fail while tearing down with RPCs in flight (`Nursery is closed to new
    arrivals`): such failures are logged, while the body's own exception and trio
    cancellations still propagate. A failure that cancelled the body (a py-libp2p service
    crashed while the peer was running) becomes a NetError: the caller must learn that its
    network died, just not from inside py-libp2p.
    """

    def __init__(self, inner: AbstractAsyncContextManager[Any], what: str) -> None:
        self._inner = inner
        self._what = what

    async def __aenter__(self) -> None:
        await self._inner.__aenter__()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> bool:
        try:
            return bool(await self._inner.__aexit__(kind, error, trace))
        except BaseException as failure:
            if failure is error:
                raise
            keep, noise = _separate(failure, error)
            if keep is None:
                if _cancelled(error):
                    # The service's nursery cancelled the body and consumed that Cancelled.
                    raise NetError(f"{self._what} stopped: {failure!r}") from failure
                log.debug("suppressed an error leaving %s", self._what, exc_info=noise)
                return error is None
            if noise is not None:
                log.debug("suppressed an error leaving %s", self._what, exc_info=noise)
            if _leaves(keep) == [error]:
                return False
            raise keep from None


def _separate(
    failure: BaseException, error: BaseException | None
) -> tuple[BaseException | None, BaseException | None]:
    """Split a teardown failure into what must propagate (the body's own error, cancellations
    and other BaseExceptions) and py-libp2p's own Exceptions."""

    def keep(leaf: BaseException) -> bool:
        return leaf is error or not isinstance(leaf, Exception)

    if isinstance(failure, BaseExceptionGroup):
        return failure.split(lambda e: not isinstance(e, BaseExceptionGroup) and keep(e))
    return (failure, None) if keep(failure) else (None, failure)


def _cancelled(error: BaseException | None) -> bool:
    """Whether the body ended only by cancellation (nurseries group their Cancelleds)."""
    return error is not None and all(isinstance(e, trio.Cancelled) for e in _leaves(error))


def _leaves(failure: BaseException) -> list[BaseException]:
    if isinstance(failure, BaseExceptionGroup):
        return [leaf for inner in failure.exceptions for leaf in _leaves(inner)]
    return [failure]


# py-libp2p 0.8 wraps the TCP socket in layers: SwarmConn.muxed_conn (Yamux) .secured_conn
# (SecureSession) .conn (Noise) .read_writer .read_write_closer (RawConnection) .stream
# (TrioTCPStream) .stream (trio.SocketStream) .socket.
_SOCKET_PATH = ("muxed_conn", "secured_conn", "conn", "read_writer", "read_write_closer", "stream")


def tcp_socket(conn: INetConn) -> trio.socket.SocketType | None:
    """The TCP socket under a py-libp2p connection, or None if it is not found where py-libp2p
    0.8 keeps it (another transport, or another version)."""
    layer: object = conn
    for name in _SOCKET_PATH:
        layer = getattr(layer, name, None)
        if layer is None:
            return None
    stream = getattr(layer, "stream", None)
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def bound_unacknowledged(conn: INetConn, seconds: float) -> bool:
    """Have the kernel end `conn` once data it sent stays unacknowledged for `seconds`
    (TCP_USER_TIMEOUT); True if it was set.

    A path that fails and comes back otherwise waits out TCP's backed-off retransmissions:
    after a 30 s outage the next one is due 20-30 s later, and until then nothing crosses,
    though both ends still count the peer as connected. Ended, the connection is dialled
    again, and a new one works as soon as the path does.
    """
    sock = tcp_socket(conn)
    if sock is None:
        return False
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None:  # not Linux: TCP's own timeouts stand
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, max(1, int(seconds * 1000)))
    except OSError:
        return False
    return True


def remote_ip(conn: INetConn) -> str | None:
    """The IP address at the other end of a py-libp2p connection, if it can be read."""
    return _peer_ip(tcp_socket(conn))


def socket_ip(stream: Any) -> str | None:
    """The IP address at the other end of an accepted socket, as py-libp2p wraps it (its
    TCP stream, or a raw connection around that): read from the socket itself, since
    py-libp2p's `get_remote_address` answers None for every IPv6 peer (a 4-tuple)."""
    layer = stream
    for _ in range(3):
        if isinstance(layer, trio.SocketStream):
            return _peer_ip(layer.socket)
        layer = getattr(layer, "stream", None)
    remote = stream.get_remote_address()  # another transport's stream
    return str(remote[0]) if remote else None


def _peer_ip(sock: trio.socket.SocketType | None) -> str | None:
    if sock is None:
        return None
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return None


class Watcher(INotifee):
    """The swarm's connection events, for the network: (peer, remote IP, the connection's key)
    on each connection, (peer, key) when it goes."""

    def __init__(
        self,
        on_connected: Callable[[str, str | None, int], None],
        on_disconnected: Callable[[str, int], None],
        stall_timeout: float,
        trusted: Callable[[str], bool] = lambda _: False,
    ) -> None:
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._stall_timeout = stall_timeout
        self._trusted = trusted
        self._warned = False

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        # Called inline by the swarm while it registers the connection: never block here.
        if not bound_unacknowledged(conn, self._stall_timeout) and not self._warned:
            self._warned = True
            log.warning("no TCP socket found under a connection: a stalled path heals slowly")
        peer = conn.muxed_conn.peer_id.to_base58()
        if self._trusted(peer):  # a prover or named peer syncs as fast as it likes
            free_openings(conn.muxed_conn)
        self._on_connected(peer, remote_ip(conn), id(conn))
        await trio.lowlevel.checkpoint()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_disconnected(conn.muxed_conn.peer_id.to_base58(), id(conn))
        await trio.lowlevel.checkpoint()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        await trio.lowlevel.checkpoint()

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        await trio.lowlevel.checkpoint()


class CachedAddrs:
    """A host's `get_addrs`, recomputed at most once per `ttl` seconds.

    py-libp2p 0.8 attaches this peer's signed peer record to every pubsub RPC it sends, and
    checks the record is current by calling `get_addrs`, which rebuilds every listen address
    with its /p2p suffix: 7% of a prover's event-loop time. A listen address changes rarely;
    one that is a second late in a record nobody here reads costs nothing.
    """

    def __init__(
        self,
        compute: Callable[[], list[multiaddr.Multiaddr]],
        ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute = compute
        self._ttl = ttl
        self._clock = clock
        self._expires = -math.inf
        self._addrs: list[multiaddr.Multiaddr] = []

    def __call__(self) -> list[multiaddr.Multiaddr]:
        now = self._clock()
        if now >= self._expires:
            self._addrs = self._compute()
            self._expires = now + self._ttl
        return list(self._addrs)


def _reuse_address_only(sock: trio.socket.SocketType) -> None:
    """SO_REUSEADDR (a restarted peer binds its port at once), never SO_REUSEPORT."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


_EXCLUSIVE = Patch(tcp_module, "_set_reuse_flags", _reuse_address_only)


def exclusive_listeners() -> AbstractContextManager[None]:
    """While held, py-libp2p's TCP listeners bind without SO_REUSEPORT.

    py-libp2p 0.8 sets it on every listener (for hole punching, which p2pnode does not do): a
    second process then listens on the same address and port with no error, and the kernel
    spreads the connections between the two, so dials land on whichever. Without it, a port
    that another process holds is refused at bind, as an operator expects.
    """
    return _EXCLUSIVE.held()


Handle = Callable[[Any, Any], Awaitable[None]]
"""A swarm's handler of an accepted socket: (the socket's stream, the listen multiaddr)."""


def inbound_handler(swarm: Any) -> Handle:
    """py-libp2p's handler of an accepted socket, minus what it holds for ever.

    After a successful upgrade py-libp2p's handler waits for the whole swarm to finish (the
    listener closes the socket when its handler returns), so every inbound connection kept
    its task and a slot of the swarm's inbound limiter for the process's life, closed or
    not: after the limiter's worth (250 by default) every inbound connection was refused,
    provers' included. This one upgrades the same way (the swarm's `upgrade_inbound_raw_conn`,
    which registers the connection) and waits for that connection to close.
    """

    async def handle(stream: Any, maddr: Any) -> None:
        raw = RawConnection(stream, False)
        try:
            muxed = await swarm.upgrade_inbound_raw_conn(raw, maddr)
        except Exception as err:
            log.debug("inbound connection on %s not upgraded: %r", maddr, err)
            with contextlib.suppress(Exception):
                await raw.close()
            return
        closed = getattr(muxed, "event_closed", None)
        if isinstance(closed, trio.Event):
            await closed.wait()
        else:  # a muxer that does not tell: as py-libp2p itself does
            await swarm.manager.wait_finished()

    return handle
