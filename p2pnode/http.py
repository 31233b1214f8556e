"""The status endpoint: JSON status, Prometheus metrics and mutation submits over loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11
import trio

from p2pnode.settings import is_loopback_ip

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_BODY = 4096
READ_TIMEOUT = 10.0
HOST = re.compile(r"(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]{1,5})?")
"""A Host header: a name or IPv4 literal, or an IPv6 literal in brackets; maybe a port."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def json_reply(value: object, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value, separators=(",", ":")).encode())


Route = Callable[[bytes], Awaitable[Reply]]


class StatusServer:
    """A tiny HTTP/1.1 server (one request per connection) for a few routes."""

    def __init__(self, routes: dict[tuple[str, str], Route]) -> None:
        self._routes = routes
        self.port = 0
        self.refused = 0
        """Requests refused for their Host or Origin: a browser page tried to reach the peer."""
        self._origins: frozenset[str] = frozenset()

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        self._origins = loopback_origins(host, self.port)
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            with trio.fail_after(READ_TIMEOUT):
                request, body = await _read_request(stream, connection)
            route = self._routes.get((request.method.decode(), request.target.decode()))
            refusal = refusal_of(request, self._origins)
            if refusal is not None:
                self._count_refusal(refusal)
                reply = json_reply({"error": refusal}, 403)
            elif route is None:
                reply = json_reply({"error": "not found"}, 404)
            else:
                reply = await _answer(route, body)
            await _send(stream, connection, reply)
        except (h11.RemoteProtocolError, trio.TooSlowError, _TooLargeError):
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


def is_loopback_host(value: str) -> bool:
    """A Host header naming this machine: localhost or a loopback IP literal, maybe a port."""
    match = HOST.fullmatch(value)
    if match is None:
        return False
    name = match["v6"] or match["name"]
    return name.lower() == "localhost" or is_loopback_ip(name)


async def _answer(route: Route, body: bytes) -> Reply:
    """A route's reply; its failure is this request's (500), never the server's."""
    try:
        return await route(body)
    except Exception:
        log.exception("the status endpoint failed on a request")
        return json_reply({"error": "internal error"}, 500)


class _TooLargeError(Exception):
    """The request body exceeds MAX_BODY."""


async def _read_request(
    stream: trio.SocketStream, connection: h11.Connection
) -> tuple[h11.Request, bytes]:
    request: h11.Request | None = None
    body = b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(MAX_BODY))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise _TooLargeError
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            return request, body
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed before the request ended")


async def _send(stream: trio.SocketStream, connection: h11.Connection, reply: Reply) -> None:
    headers = [
        ("content-type", reply.content_type),
        ("content-length", str(len(reply.body))),
        ("connection", "close"),
    ]
    for event in (
        h11.Response(status_code=reply.status, headers=headers),
        h11.Data(data=reply.body),
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
