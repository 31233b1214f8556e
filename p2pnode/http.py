"""The status endpoint: JSON status, Prometheus metrics and mutation submits over loopback HTTP."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import h11
import trio

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MAX_BODY = 4096
READ_TIMEOUT = 10.0


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

    async def serve(
        self, host: str, port: int, *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_BODY)
        try:
            with trio.fail_after(READ_TIMEOUT):
                request, body = await _read_request(stream, connection)
            route = self._routes.get((request.method.decode(), request.target.decode()))
            if route is None:
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
