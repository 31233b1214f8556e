"""Reading a peer's status endpoint, which listens on the loopback of the peer's namespace."""

from __future__ import annotations

from urllib.parse import urlsplit

import h11
import trio

from p2pnode.api.client import MAX_REPLY, ClientError, json_object
from p2pnode.chaos.netns import namespace_socket


async def get_json(
    namespace: str, url: str, path: str, *, timeout: float = 3.0
) -> dict[str, object]:
    """GET `path` from `url` as seen from inside `namespace`; ClientError if that fails."""
    parts = urlsplit(url)
    if parts.hostname is None or parts.port is None:
        raise ClientError(f"not an http://host:port url: {url!r}")
    try:
        with trio.fail_after(timeout):
            body = await _get(namespace, parts.hostname, parts.port, path)
    except trio.TooSlowError:
        raise ClientError(f"{url} in {namespace}: no reply within {timeout:g} s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as err:
        raise ClientError(f"{url} in {namespace}: {err or type(err).__name__}") from None
    return json_object(path, body)


async def _get(namespace: str, host: str, port: int, path: str) -> bytes:
    with trio.socket.from_stdlib_socket(namespace_socket(namespace)) as sock:
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        connection = h11.Connection(h11.CLIENT)
        headers = [("host", f"{host}:{port}"), ("content-length", "0")]
        request = connection.send(h11.Request(method="GET", target=path, headers=headers))
        await stream.send_all(request + connection.send(h11.EndOfMessage()))
        return await _reply(stream, connection)


async def _reply(stream: trio.SocketStream, connection: h11.Connection) -> bytes:
    status, body = 0, b""
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REPLY:
                raise ClientError("reply too large")
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            break
    if not 200 <= status < 300:
        raise ClientError(f"the peer answered {status}: {body.decode(errors='replace')[:200]}")
    return body
