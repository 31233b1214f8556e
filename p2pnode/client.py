"""Talking to a running peer's status endpoint: status, metrics, submits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

import cbor2
import h11
import trio

from p2pnode.home import Home
from p2pnode.http import CBOR, MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY

MAX_REPLY = 4 * 1024 * 1024


class ClientError(Exception):
    """The peer could not be reached or answered badly; the message says which."""


def status_url(home: Home) -> str:
    """The status endpoint a running peer wrote into its home."""
    try:
        return home.status_url_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ClientError(
            f"no running peer in {home.path} (no {home.status_url_file.name})"
        ) from None


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ClientError(f"not an http://host:port url: {url!r}")
    return parts.hostname, parts.port


async def request(
    url: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    timeout: float = 5.0,
) -> bytes:
    """One HTTP request; the body of a 2xx reply, else ClientError."""
    host, port = _endpoint(url)
    connection = h11.Connection(h11.CLIENT)
    # The peer answers only a loopback Host; urlsplit drops an IPv6 literal's brackets.
    named = f"[{host}]" if ":" in host else host
    headers = [("host", f"{named}:{port}"), ("content-length", str(len(body)))]
    if content_type is not None:
        headers.append(("content-type", content_type))
    try:
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(host, port)
            async with stream:
                out = connection.send(h11.Request(method=method, target=path, headers=headers))
                out += connection.send(h11.Data(data=body)) + connection.send(h11.EndOfMessage())
                await stream.send_all(out)
                return await _reply(stream, connection)
    except trio.TooSlowError:
        raise ClientError(f"cannot reach {url}: no reply within {timeout:g} s") from None
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as err:
        raise ClientError(f"cannot reach {url}: {str(err) or type(err).__name__}") from None


async def _reply(stream: trio.SocketStream, connection: h11.Connection) -> bytes:
    status = 0
    body = b""
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


async def get_json(url: str, path: str, *, timeout: float = 5.0) -> dict[str, object]:
    return _json_object(path, await request(url, "GET", path, timeout=timeout))


async def post_json(
    url: str, path: str, body: bytes, *, content_type: str | None = None, timeout: float = 5.0
) -> dict[str, object]:
    reply = await request(url, "POST", path, body, content_type=content_type, timeout=timeout)
    return _json_object(path, reply)


def _json_object(path: str, reply: bytes) -> dict[str, object]:
    try:
        value = json.loads(reply)
    except ValueError:
        raise ClientError(f"{path} did not answer JSON") from None
    if not isinstance(value, dict):
        raise ClientError(f"{path} did not answer a JSON object")
    return value


async def submit_batch(
    url: str, mutations: Sequence[bytes], *, timeout: float = 10.0
) -> dict[str, object]:
    """Submit 1 to MAX_SUBMIT_BATCH mutations in one request: {"results": [{"id", "admission"}
    for each, in order], "added": how many were added}."""
    body = cbor2.dumps(list(mutations))
    if not 1 <= len(mutations) <= MAX_SUBMIT_BATCH or len(body) > MAX_SUBMIT_BODY:
        raise ClientError(
            f"a batch is 1 to {MAX_SUBMIT_BATCH} mutations in at most {MAX_SUBMIT_BODY} bytes"
            f" of CBOR, not {len(mutations)} in {len(body)}"
        )
    return await post_json(url, "/submit", body, content_type=CBOR, timeout=timeout)
