"""The status endpoint answers this machine's own clients only: loopback address, Host, Origin."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from p2pnode.api.client import ClientError, get_json, post_json
from p2pnode.api.server import Reply, Request, Route, StatusServer, json_reply
from p2pnode.cli import main
from p2pnode.peer.settings import SettingsError, load_settings, split_endpoint
from tests.test_cli import one_line_error, p2pnode

BOUND = 10.0

# --- the configured address -----------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [
        "127.example.com:8080",  # a name: DNS could answer anything for it
        "127.0.0.1.nip.io:8080",
        "localhost:8080",
        "0.0.0.0:8080",
        "10.0.0.1:8080",
        "::ffff:127.0.0.1:8080",
        "[::1%lo]:8080",
        "127.0.0.1",
        "127.0.0.1:99999",
        "127.0.0.1:\u00b2",  # a digit to str.isdigit, not to int()
        "127.0.0.1:" + "9" * 5_000,  # beyond the int-string conversion limit
        "127.1:8080",
    ],
)
def test_a_status_address_that_is_not_a_loopback_ip_is_refused(status: str) -> None:
    with pytest.raises(SettingsError, match=r"node\.status"):
        load_settings(None, {}, [f"node.status={status}"])


@pytest.mark.parametrize(
    ("status", "host", "port"),
    [
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("127.0.0.2:8080", "127.0.0.2", 8080),
        ("[::1]:8080", "::1", 8080),
        ("::1:65535", "::1", 65535),
    ],
)
def test_a_loopback_ip_status_address_is_taken(status: str, host: str, port: int) -> None:
    settings = load_settings(None, {"P2PNODE_NODE_STATUS": status})
    assert split_endpoint(settings.status) == (host, port)


def test_run_with_a_named_status_address_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "solo"
    assert p2pnode("init", "--home", str(home), "--network", "solo").returncode == 0
    result = p2pnode("run", "--home", str(home), "--set", "node.status=127.example.com:8080")
    one_line_error(result, "node.status", "loopback IP")


# --- requests -------------------------------------------------------------------------------


@dataclass
class Routes:
    """A status endpoint's routes that remember what reached them."""

    submitted: list[bytes] = field(default_factory=list)
    queries: list[dict[str, str]] = field(default_factory=list)

    async def status(self, request: Request) -> Reply:
        self.queries.append(dict(request.query))
        return json_reply({"ok": True})

    async def submit(self, request: Request) -> Reply:
        self.submitted.append(request.body)
        return json_reply({"id": "abc", "admission": "added"})

    def table(self) -> dict[tuple[str, str], Route]:
        return {("GET", "/status"): self.status, ("POST", "/submit"): self.submit}


@asynccontextmanager
async def endpoint(host: str = "127.0.0.1") -> AsyncIterator[tuple[StatusServer, Routes]]:
    routes = Routes()
    server = StatusServer(routes.table())
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, host, 0)
            yield server, routes
            nursery.cancel_scope.cancel()


async def raw_reply(server: StatusServer, request: bytes, host: str = "127.0.0.1") -> bytes:
    """Send `request` as it is; the whole reply."""
    stream = await trio.open_tcp_stream(host, server.port)
    async with stream:
        await stream.send_all(request)
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def raw(server: StatusServer, request: bytes, host: str = "127.0.0.1") -> int:
    """Send `request` as it is; the reply's status code."""
    return int((await raw_reply(server, request, host)).split(b" ", 2)[1])


def post_submit(host: str | None, *headers: str) -> bytes:
    lines = ["POST /submit HTTP/1.1"]
    lines += [f"Host: {host}"] if host is not None else []
    lines += [*headers, "Content-Type: text/plain", "Content-Length: 5", "", "hello"]
    return "\r\n".join(lines).encode()


def get_status(
    host: str | None, *headers: str, version: str = "1.1", target: str = "/status"
) -> bytes:
    lines = [f"GET {target} HTTP/{version}"]
    lines += [f"Host: {host}"] if host is not None else []
    return "\r\n".join([*lines, *headers, "", ""]).encode()


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8080", "127.example.com", "localhost.evil.example:80"]
)
async def test_a_foreign_host_is_refused_counted_and_logged(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with endpoint() as (server, routes):
        assert await raw(server, get_status(host)) == 403
        assert await raw(server, post_submit(host)) == 403
    assert routes.submitted == []
    assert server.refused == 2
    assert any("Host is not a loopback" in r.message for r in caplog.records)


async def test_a_request_without_one_loopback_host_is_refused() -> None:
    async with endpoint() as (server, routes):
        assert await raw(server, get_status(None, version="1.0")) == 403
        port = server.port
        twice = post_submit(f"127.0.0.1:{port}", "Host: evil.example")
        assert await raw(server, twice) in (400, 403)
    assert routes.submitted == []


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://127.0.0.1",
        "http://127.0.0.1:{other}",
        "https://127.0.0.1:{port}",
    ],
)
async def test_a_submit_from_a_foreign_origin_is_refused_and_not_submitted(origin: str) -> None:
    async with endpoint() as (server, routes):
        header = "Origin: " + origin.format(port=server.port, other=server.port + 1)
        assert await raw(server, post_submit(f"127.0.0.1:{server.port}", header)) == 403
        assert await raw(server, get_status(f"localhost:{server.port}", header)) == 403
    assert routes.submitted == []
    assert server.refused == 2


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        ("127.0.0.1:{port}", None),
        ("127.0.0.1", None),
        ("LOCALHOST:{port}", None),
        ("[::1]:{port}", None),
        ("127.0.0.1:{port}", "http://127.0.0.1:{port}"),
        ("localhost:{port}", "http://localhost:{port}"),
    ],
)
async def test_loopback_requests_are_served(host: str, origin: str | None) -> None:
    async with endpoint() as (server, routes):
        headers = [] if origin is None else ["Origin: " + origin.format(port=server.port)]
        request = post_submit(host.format(port=server.port), *headers)
        assert await raw(server, request) == 200
    assert routes.submitted == [b"hello"]
    assert server.refused == 0


async def test_p2pnodes_own_client_is_served() -> None:
    async with endpoint() as (server, routes):
        url = f"http://127.0.0.1:{server.port}"
        assert await get_json(url, "/status") == {"ok": True}
        assert (await post_json(url, "/submit", b"data"))["admission"] == "added"
        assert await get_json(f"http://localhost:{server.port}", "/status") == {"ok": True}
    assert routes.submitted == [b"data"]
    assert server.refused == 0


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_p2pnodes_own_client_reaches_an_ipv6_endpoint() -> None:
    async with endpoint("::1") as (server, _):
        assert await get_json(f"http://[::1]:{server.port}", "/status") == {"ok": True}
        request = get_status(f"[::1]:{server.port}", f"Origin: http://[::1]:{server.port}")
        assert await raw(server, request, "::1") == 200


# --- routing --------------------------------------------------------------------------------


async def test_a_query_string_is_handed_to_the_route_not_matched_as_part_of_the_path() -> None:
    async with endpoint() as (server, routes):
        assert await raw(server, get_status("127.0.0.1", target="/status?from=7&x=")) == 200
        assert routes.queries == [{"from": "7", "x": ""}]
        assert await raw(server, get_status("127.0.0.1", target="/nowhere?from=7")) == 404


async def test_a_known_path_asked_with_another_method_is_405_with_the_allowed_ones() -> None:
    async with endpoint() as (server, routes):
        reply = await raw_reply(server, get_status("127.0.0.1", target="/submit"))
        head = reply.split(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 405 ")
        assert b"\r\nallow: post" in head
        assert routes.submitted == []


async def test_the_cli_shows_what_it_could_not_read_of_an_unexpected_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A status without the expected fields (another version, another program) is shown with
    placeholders and the names of the fields it lacked, through the dashboard's reading."""
    async with endpoint() as (server, _):
        url = f"http://127.0.0.1:{server.port}"
        code = await trio.to_thread.run_sync(main, ["status", "--url", url])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("peer ")
    unread = next(line for line in lines if line.startswith("unread"))
    assert "peer_id" in unread
    assert "finalized_rank" in unread


@pytest.mark.parametrize("url", ["https://127.0.0.1:1", "http://127.0.0.1", "127.0.0.1:8080"])
async def test_the_client_speaks_only_to_an_http_host_and_port(url: str) -> None:
    with pytest.raises(ClientError, match="not an http://host:port url"):
        await get_json(url, "/status")


@pytest.mark.parametrize("public", [False, True])
@pytest.mark.parametrize("target", ["/status", "/nowhere", "/submit"])
async def test_a_head_request_gets_a_head_and_the_server_goes_on(public: bool, target: str) -> None:
    """A HEAD request made h11 refuse the reply's body: the error ended the server, and with
    it the peer (one `curl -I` from anyone who reached the metrics port)."""
    routes = Routes()
    server = StatusServer(routes.table(), public=public)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            reply = await raw_reply(
                server, get_status("127.0.0.1", target=target).replace(b"GET", b"HEAD", 1)
            )
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.split(b" ", 2)[1] in (b"200", b"404", b"405")
            assert body == b""
            assert await raw(server, get_status("127.0.0.1")) == 200
            nursery.cancel_scope.cancel()
    assert server.failed == 0


async def test_a_bug_met_by_one_request_ends_neither_the_server_nor_the_peer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = StatusServer(Routes().table())
    answer = server._answer_one
    calls = []

    async def first_one_fails(stream: trio.SocketStream) -> None:
        calls.append(stream)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        await answer(stream)

    monkeypatch.setattr(server, "_answer_one", first_one_fails)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            assert await raw_reply(server, get_status("127.0.0.1")) == b"", "closed, unanswered"
            assert await raw(server, get_status("127.0.0.1")) == 200
            nursery.cancel_scope.cancel()
    assert server.failed == 1
    assert "the status server failed on a request (1 so far)" in caplog.text
