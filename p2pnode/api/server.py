"""The status endpoint: JSON status, Prometheus metrics and mutation submits over loopback HTTP."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import re
import socket
import struct
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import h11
import trio

from p2pnode.net.addresses import is_loopback_ip
from p2pnode.net.penalty import Buckets
from p2pnode.net.tiers import prefix

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_BODY = 4096
"""The largest request body a route takes, unless it declares more (see `Limited`)."""
MAX_SUBMIT_BODY = 2 * 1024 * 1024
"""The largest batch of mutations POST /submit takes, in bytes of CBOR."""
MAX_SUBMIT_BATCH = 10_000
"""The most mutations one batch submit holds."""
CBOR = "application/cbor"
READ_SIZE = 65536
READ_TIMEOUT = 10.0
PUBLIC_READ_TIMEOUT = 3.0
"""A public server's: a request that has not come whole by then is dropped (the slots a slow
stranger holds are freed sooner)."""
LINGER = 1.0
"""How long a body over its limit is discarded once its request is answered (see
`_discard_unread`), at most LINGER_SIZE bytes of it."""
LINGER_SIZE = 65536
MAX_CONNECTIONS = 64
MAX_PER_IP = 8
"""A public server's connections from one network: a /24 of IPv4 or a /64 of IPv6."""
PUBLIC_RATE, PUBLIC_BURST = 2.0, 10.0
"""A public server's requests per second from one network, and its burst: a scraper asks
every few seconds; a loop of requests would take the event loop the peer decides in."""
PUBLIC_TOTAL_RATE, PUBLIC_TOTAL_BURST = 100.0, 100.0
"""Its connections accepted per second from all networks together: beyond them a flood
waits in the kernel's backlog (PUBLIC_BACKLOG long) and costs the peer nothing. One beyond
its network's bounds is reset as it is accepted, for some tens of µs of the event loop."""
PUBLIC_BACKLOG = 64
"""A short backlog: a flood cannot queue minutes of connections ahead of a scraper's."""
CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
"""Accept failures that pass once some connections have ended."""
HOST = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]{1,5})?")
"""A Host header: a name or IPv4 literal, or an IPv6 literal in brackets; maybe a port."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"
    allow: tuple[str, ...] = ()
    """The methods the path takes, sent as `Allow` (with a 405)."""


def json_reply(value: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True)
class Request:
    """What a route sees of a request: its body and its media type ("" without one), in
    lower case and without parameters ("application/cbor", not "Application/CBOR; x=1")."""

    body: bytes
    content_type: str = ""
    query: Mapping[str, str] = field(default_factory=dict)
    """The query string's parameters (the last value of a repeated one)."""


Route = Callable[[Request], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Limited:
    """A route that takes bodies of up to `max_body` bytes, rather than MAX_BODY; only bodies
    of `content_type` if it is given (other bodies keep the MAX_BODY bound)."""

    route: Route
    max_body: int
    content_type: str | None = None

    def limit(self, content_type: str) -> int:
        if self.content_type is None or content_type == self.content_type:
            return self.max_body
        return MAX_BODY


class StatusServer:
    """A tiny HTTP/1.1 server (one request per connection) for a few routes.

    A loopback server refuses requests a web page could have made (see `refusal_of`); a
    `public` one, which serves read-only routes beyond loopback (metrics, health), takes any
    Host. Either holds at most MAX_CONNECTIONS connections; a public one MAX_PER_IP of them
    from one /24 or /64, each for PUBLIC_READ_TIMEOUT at most, and PUBLIC_RATE requests a
    second from one such network (PUBLIC_TOTAL_RATE from all): what comes beyond is closed
    unanswered, so a stranger can neither hold the slots nor keep the event loop busy."""

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Route | Limited],
        *,
        public: bool = False,
        accepts: tuple[float, float] = (PUBLIC_TOTAL_RATE, PUBLIC_TOTAL_BURST),
    ) -> None:
        """`accepts`: a public server's accepted connections a second, and their burst."""
        self._routes = {
            key: route if isinstance(route, Limited) else Limited(route, MAX_BODY)
            for key, route in routes.items()
        }
        self._public = public
        self.port = 0
        self.refused = 0
        """Requests refused for their Host or Origin: a browser page tried to reach the peer."""
        self.turned_away = 0
        """Connections closed unanswered: over MAX_CONNECTIONS, or a public server's bounds."""
        self.accepted = 0
        """Connections a public server accepted (see `_accept_paced`)."""
        self.failed = 0
        """Requests that met a bug of the server (see `_handle`)."""
        self._origins: frozenset[str] = frozenset()
        self._open: dict[str, int] = {}
        self._rates = Buckets(PUBLIC_RATE, PUBLIC_BURST)
        self._accept_rate = accepts[0]
        self._total = Buckets(*accepts, max_peers=1)

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        await self.serve_on(await self.listen(host, port), task_status=task_status)

    async def listen(self, host: str, port: int) -> list[trio.SocketListener]:
        """Bind host:port (OSError if it cannot), without answering yet (see `serve_on`)."""
        backlog = PUBLIC_BACKLOG if self._public else None
        listeners = list(await trio.open_tcp_listeners(port, host=host, backlog=backlog))
        self.port = listeners[0].socket.getsockname()[1]
        self._origins = loopback_origins(host, self.port)
        return listeners

    async def serve_on(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        task_status.started(self.port)
        if self._public:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_paced, listener, nursery)
        else:
            await trio.serve_listeners(self._handle, listeners)

    def _allowed(self, path: str) -> tuple[str, ...]:
        return tuple(sorted(method for method, known in self._routes if known == path))

    async def _handle(self, stream: trio.SocketStream) -> None:
        """Answer one connection, if it is admitted (a public server's accept loop admitted
        it already)."""
        source = _source(stream) if self._public else self._admit(stream)
        if source is None:
            await stream.aclose()
            return
        self._open[source] = self._open.get(source, 0) + 1
        try:
            await self._answer_one(stream)
        except Exception:
            # One connection never ends a server (and with it the peer): a request that
            # found a bug is logged, at 1, 2, 4, 8, ... such requests.
            self.failed += 1
            if self.failed & (self.failed - 1) == 0:
                log.exception("the status server failed on a request (%d so far)", self.failed)
        finally:
            self._open[source] -= 1
            if not self._open[source]:
                del self._open[source]

    def _admit(self, stream: trio.SocketStream) -> str | None:
        """The network (/24 or /64) of a connection within the bounds; None (counted, and
        logged at 1, 2, 4, 8, ...) for one beyond them."""
        source = _source(stream)
        per_ip = MAX_PER_IP if self._public else MAX_CONNECTIONS  # loopback: all one IP
        if sum(self._open.values()) >= MAX_CONNECTIONS:
            why = f"over {MAX_CONNECTIONS} connections in all"
        elif self._open.get(source, 0) >= per_ip:
            why = f"over {per_ip} connections from {source}"
        elif self._public and not self._rates.take(source, trio.current_time()):
            why = f"over {PUBLIC_RATE:g} requests a second from {source}"
        else:
            return source
        self.turned_away += 1
        if self.turned_away & (self.turned_away - 1) == 0:
            server = "public" if self._public else "status"
            log.warning("%s server: %d turned away, the last %s", server, self.turned_away, why)
        return None

    async def _accept_paced(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept at most PUBLIC_TOTAL_RATE connections a second (what comes faster waits
        in a short backlog); one beyond the bounds is reset at once, without a task (some
        tens of µs), and the rest are handled in `nursery`."""
        while True:
            short = 1 - self._total.tokens("", trio.current_time())
            if short > 0:
                await trio.sleep(short / self._accept_rate)
                continue
            try:
                stream = await listener.accept()
            except OSError as err:
                if err.errno not in CAPACITY_ERRNOS:
                    raise
                await trio.sleep(0.1)  # out of descriptors: some connections end meanwhile
                continue
            self._total.charge("", trio.current_time(), 1)
            self.accepted += 1
            if self._admit(stream) is None:
                _reset(stream)
            else:
                nursery.start_soon(self._handle, stream)

    async def _answer_one(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            with trio.fail_after(PUBLIC_READ_TIMEOUT if self._public else READ_TIMEOUT):
                head = await _read_head(stream, connection)
                path, _, query = head.target.decode("ascii", "replace").partition("?")
                route = self._routes.get((head.method.decode("ascii", "replace"), path))
                refusal = None if self._public else refusal_of(head, self._origins)
                content_type = media_type(head)
                limit = MAX_BODY  # a refused or unknown request is answered as such
                if route is not None and refusal is None:
                    limit = route.limit(content_type)
                body = await _read_body(stream, connection, head, limit)
            if refusal is not None:
                self._count_refusal(refusal)
                reply = json_reply({"error": refusal}, 403)
            elif route is None and (allowed := self._allowed(path)):
                reply = replace(json_reply({"error": "method not allowed"}, 405), allow=allowed)
            elif route is None:
                reply = json_reply({"error": "not found"}, 404)
            elif body is None:
                reply = json_reply({"error": f"the body is over {limit} bytes"}, 413)
            else:
                parameters = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
                reply = await _answer(route.route, Request(body, content_type, parameters))
            await _send(stream, connection, reply, head=head.method == b"HEAD")
            if body is None:
                await _discard_unread(stream)
        except (h11.RemoteProtocolError, trio.TooSlowError):
            await _send_quietly(stream, connection, json_reply({"error": "bad request"}, 400))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    def _count_refusal(self, refusal: str) -> None:
        self.refused += 1
        # Logged at 1, 2, 4, 8, ... refusals: a page retrying in a loop cannot flood the log.
        if self.refused & (self.refused - 1) == 0:
            log.warning("status endpoint: %s (%d refused so far)", refusal, self.refused)


def _source(stream: trio.SocketStream) -> str:
    """The network a connection comes from: its /24 or /64 (see `net.tiers.prefix`)."""
    try:
        return prefix(str(stream.socket.getpeername()[0]))
    except OSError:  # gone already
        return prefix(None)


def _reset(stream: trio.SocketStream) -> None:
    """Close at once, with a reset: no FIN handshake, no task, nothing left in TIME_WAIT."""
    with contextlib.suppress(OSError):
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


def loopback_origins(host: str, port: int) -> frozenset[str]:
    """The only Origin headers accepted: this endpoint's own, as a browser would write it."""
    names = {"127.0.0.1", "localhost", "[::1]", f"[{host}]" if ":" in host else host}
    return frozenset(f"http://{name}:{port}" for name in names)


def refusal_of(request: h11.Request, origins: frozenset[str]) -> str | None:
    """Why the request may come from a web page rather than this machine's own clients, or
    None. A page can make a browser reach a loopback port: by rebinding its own name to
    127.0.0.1 (its name is then the Host), or by a cross-site request (it sends an Origin)."""
    hosts = [value for name, value in request.headers if name == b"host"]
    if len(hosts) != 1 or not is_loopback_host(hosts[0].decode("ascii", "replace")):
        return "forbidden: the Host is not a loopback address"
    for name, value in request.headers:
        if name == b"origin" and value.decode("ascii", "replace") not in origins:
            return "forbidden: a cross-origin request"
    return None


def media_type(request: h11.Request) -> str:
    """The request's Content-Type without its parameters, in lower case; "" without one."""
    for name, value in request.headers:
        if name == b"content-type":
            return value.decode("ascii", "replace").split(";", 1)[0].strip().lower()
    return ""


def is_loopback_host(value: str) -> bool:
    """A Host header naming this machine: localhost or a loopback IP literal, maybe a port."""
    match = HOST.fullmatch(value)
    if match is None:
        return False
    name = match["v6"] or match["name"]
    return name.lower() == "localhost" or is_loopback_ip(name)


async def _answer(route: Route, request: Request) -> Reply:
    """A route's reply; its failure is this request's (500), never the server's."""
    try:
        return await route(request)
    except Exception:
        log.exception("the status endpoint failed on a request")
        return json_reply({"error": "internal error"}, 500)


async def _read_head(stream: trio.SocketStream, connection: h11.Connection) -> h11.Request:
    """The request line and headers (at most MAX_BODY bytes of them: h11 bounds them)."""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(MAX_BODY))
        elif isinstance(event, h11.Request):
            return event
        else:  # ConnectionClosed: an h11.Data or an h11.EndOfMessage cannot precede a Request
            raise h11.RemoteProtocolError("connection closed before the request ended")


async def _read_body(
    stream: trio.SocketStream, connection: h11.Connection, head: h11.Request, limit: int
) -> bytes | None:
    """The request's body, or None once it is known to be over `limit` bytes: from its
    Content-Length before any of it is read, else (chunked) as soon as more than `limit`
    bytes of it have come; the rest is never read."""
    for name, value in head.headers:
        if name == b"content-length" and int(value) > limit:
            return None
    if connection.they_are_waiting_for_100_continue:  # curl asks before a large body
        await stream.send_all(
            connection.send(h11.InformationalResponse(status_code=100, headers=[]))
        )
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            # Each read asks for what is left under the limit and one byte, which shows it over.
            wanted = min(READ_SIZE, max(1, limit + 1 - len(body)))
            connection.receive_data(await stream.receive_some(wanted))
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > limit:
                return None
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise h11.RemoteProtocolError("connection closed before the request ended")


async def _discard_unread(stream: trio.SocketStream) -> None:
    """After a request is answered before its body has come whole: closing with unread
    bytes makes the kernel reset the connection, and the client may lose the reply. So end
    the sending side, then discard what still comes, until the client closes, for at most
    LINGER seconds and LINGER_SIZE bytes; a client sending more may see the reset."""
    with (
        contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        trio.move_on_after(LINGER),
    ):
        await stream.send_eof()
        discarded = 0
        while discarded < LINGER_SIZE:
            chunk = await stream.receive_some(READ_SIZE)
            if not chunk:
                return
            discarded += len(chunk)


async def _send(
    stream: trio.SocketStream, connection: h11.Connection, reply: Reply, *, head: bool = False
) -> None:
    """The reply; to a HEAD request, its head only (h11 refuses a body there)."""
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        ("connection", "close"),
    ]
    if reply.allow:
        headers.append(("allow", ", ".join(reply.allow)))
    body = [] if head else [h11.Data(data=reply.body)]
    for event in (
        h11.Response(status_code=reply.status, headers=headers),
        *body,
        h11.EndOfMessage(),
    ):
        data = connection.send(event)
        if data:
            await stream.send_all(data)


async def _send_quietly(
    stream: trio.SocketStream, connection: h11.Connection, reply: Reply
) -> None:
    with contextlib.suppress(
        h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError
    ):
        await _send(stream, connection, reply)
