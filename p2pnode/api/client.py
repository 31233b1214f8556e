"""Talking to a running peer's status endpoint: status, metrics, submits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import urlsplit

import cbor2
import httpx
import trio

from p2pnode.api.server import CBOR, MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY
from p2pnode.peer.home import Home
from p2pnode.peer.status import PeerStatus
from p2pnode.peer.status_read import parse_status

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


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise ClientError(f"not an http://host:port url: {url!r}")


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
    _check_url(url)
    headers = {} if content_type is None else {"content-type": content_type}
    try:
        # trust_env=False: a proxy from the environment must not carry loopback requests.
        # verify=False: only plain http:// is spoken (see _check_url); loading the default
        # CA bundle for nothing cost 42 ms per client, and a dashboard polls several a second.
        client = httpx.AsyncClient(base_url=url, timeout=timeout, trust_env=False, verify=False)
        with trio.fail_after(timeout):
            async with (
                client,
                client.stream(method, path, content=body, headers=headers) as reply,
            ):
                data = await _body(reply)
    except trio.TooSlowError:
        raise ClientError(f"cannot reach {url}: no reply within {timeout:g} s") from None
    except httpx.HTTPError as err:
        raise ClientError(f"cannot reach {url}: {str(err) or type(err).__name__}") from None
    if not 200 <= reply.status_code < 300:
        text = data.decode(errors="replace")[:200]
        raise ClientError(f"the peer answered {reply.status_code}: {text}")
    return data


async def _body(reply: httpx.Response) -> bytes:
    data = bytearray()
    async for chunk in reply.aiter_bytes():
        data += chunk
        if len(data) > MAX_REPLY:
            raise ClientError("reply too large")
    return bytes(data)


async def get_json(url: str, path: str, *, timeout: float = 5.0) -> dict[str, object]:
    return json_object(path, await request(url, "GET", path, timeout=timeout))


async def get_status(url: str, *, timeout: float = 5.0) -> PeerStatus:
    """The peer's status record, read defensively (see `parse_status`)."""
    return parse_status(await get_json(url, "/status", timeout=timeout), url)


async def post_json(
    url: str, path: str, body: bytes, *, content_type: str | None = None, timeout: float = 5.0
) -> dict[str, object]:
    reply = await request(url, "POST", path, body, content_type=content_type, timeout=timeout)
    return json_object(path, reply)


def json_object(path: str, reply: bytes) -> dict[str, object]:
    """The reply to `path` as a JSON object, else ClientError."""
    try:
        value = json.loads(reply, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise ClientError(f"{path} did not answer JSON") from None
    if not isinstance(value, dict):
        raise ClientError(f"{path} did not answer a JSON object")
    return value


def _no_constant(name: str) -> object:
    """NaN and the infinities are not JSON, though Python's parser takes them."""
    raise ValueError(f"{name} is not JSON")


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
