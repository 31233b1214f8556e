"""Batched submits: POST /submit of a CBOR array, its client helper, and `submit --file`."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import cbor2
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.api.batch import BatchError, decode_batch
from p2pnode.api.client import ClientError, post_json, submit_batch
from p2pnode.api.routes import status_server
from p2pnode.api.server import CBOR, MAX_BODY, MAX_SUBMIT_BATCH, MAX_SUBMIT_BODY
from p2pnode.chain.mempool import MAX_MUTATION_SIZE, Admission, Mempool, mutation_id
from p2pnode.chain.types import Frame
from p2pnode.cli.mutations import batches
from p2pnode.local.homes import generate_testnet
from p2pnode.peer.node import SUBMIT_SLICE, Node


def admission_of(mutation: bytes) -> Admission:
    """What the fake node answers: the admission its prefix names, else ADDED."""
    for prefix, admission in (
        (b"dup", Admission.DUPLICATE),
        (b"full", Admission.FULL),
        (b"quota", Admission.OVER_QUOTA),
    ):
        if mutation.startswith(prefix):
            return admission
    return Admission.ADDED


@dataclass
class FakeStore:
    asked: list[bytes] = field(default_factory=list)

    listed: list[tuple[int, int]] = field(default_factory=list)

    def mutation_rank(self, mutation: bytes) -> int | None:
        self.asked.append(mutation)
        return None

    def tip(self) -> SimpleNamespace:
        return SimpleNamespace(round=40)

    def frames(self, start: int, limit: int) -> list[Frame]:
        self.listed.append((start, limit))
        return []


@dataclass
class FakeNode:
    """The part of a Node the submit routes use; it remembers every submit."""

    batches: list[list[bytes]] = field(default_factory=list)
    singles: list[bytes] = field(default_factory=list)
    store: FakeStore = field(default_factory=FakeStore)
    mempool: Mempool = field(default_factory=Mempool)

    async def submit_many(self, mutations: Sequence[bytes]) -> list[tuple[str, Admission]]:
        self.batches.append(list(mutations))
        return [(mutation_id(m).hex(), admission_of(m)) for m in mutations]

    async def submit(self, data: bytes) -> tuple[str, Admission]:
        self.singles.append(data)
        return mutation_id(data).hex(), admission_of(data)

    @property
    def submitted(self) -> bool:
        return bool(self.batches or self.singles)


@asynccontextmanager
async def peer() -> AsyncIterator[tuple[FakeNode, int]]:
    """The daemon's own routes over a fake node; the node and the endpoint's port."""
    node = FakeNode()
    server = status_server(cast(Node, node))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield node, port
        nursery.cancel_scope.cancel()


def post(
    path: str,
    body: bytes,
    content_type: str | None = CBOR,
    *,
    length: int | None = None,
    headers: Sequence[str] = (),
    method: str = "POST",
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    lines += [f"Content-Type: {content_type}"] if content_type is not None else []
    lines += [f"Content-Length: {len(body) if length is None else length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(path: str, size: int, content_type: str = CBOR, method: str = "POST") -> bytes:
    """A chunked request whose one chunk is `size` bytes, all of them sent, and no end: a
    server that waits for more of the body sees the connection end instead."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    head = "\r\n".join([*lines, "Transfer-Encoding: chunked", "", f"{size:x}", ""])
    return head.encode() + b"x" * size


async def exchange(port: int, request: bytes) -> bytes:
    """Send `request` as it is, then end the sending side: the whole reply."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        await stream.send_eof()  # a server that waits for more bytes gets none: no hang
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


async def send(port: int, request: bytes) -> tuple[int, dict[str, object]]:
    """The reply's status and its JSON object, which is one line."""
    reply = await exchange(port, request)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"\n" not in body
    value = json.loads(body)
    assert isinstance(value, dict)
    return int(head.split(b" ", 2)[1]), value


def expected(mutations: Sequence[bytes]) -> list[dict[str, str]]:
    return [{"id": mutation_id(m).hex(), "admission": admission_of(m).value} for m in mutations]


# --- the route --------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [CBOR, "Application/CBOR; charset=binary"])
async def test_a_batch_is_submitted_once_in_order(content_type: str) -> None:
    mutations = [b"one", b"dup", b"two", b"full", b"three"]
    async with peer() as (node, port):
        status, reply = await send(port, post("/submit", cbor2.dumps(mutations), content_type))
    assert status == 200
    assert reply == {"results": expected(mutations), "added": 3}
    assert node.batches == [mutations]
    assert node.singles == []


async def test_a_batch_as_large_as_allowed_is_taken() -> None:
    largest = [bytes([i % 251]) * MAX_MUTATION_SIZE for i in range(2000)]
    most = [b"m%d" % i for i in range(MAX_SUBMIT_BATCH)]
    body = cbor2.dumps(largest)
    assert MAX_BODY < len(body) <= MAX_SUBMIT_BODY
    async with peer() as (node, port):
        status, reply = await send(port, post("/submit", body))
        assert (status, reply["added"]) == (200, len(largest))
        status, reply = await send(port, post("/submit", cbor2.dumps(most)))
        assert (status, reply["added"]) == (200, MAX_SUBMIT_BATCH)
    assert node.batches == [largest, most]


def _bignum(size: int) -> bytes:
    return b"\xc2\x5a" + size.to_bytes(4, "big") + b"\x01" * size


RATIONAL_BOMB = (
    b"\xd8\x1e\x82" + _bignum(MAX_SUBMIT_BODY // 2 - 16) + _bignum(MAX_SUBMIT_BODY // 2 - 16)
)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff", "the body is not CBOR"),
        (b"", "the body is not CBOR"),
        (b"\x82\x41a", "the body is not CBOR"),  # an array of 2, which ends after 1
        (cbor2.dumps([b"a"]) + b"\x00", "the body is not CBOR: bytes follow its first value"),
        (cbor2.dumps(b"a"), "the body is not a CBOR array but a bytes"),
        (cbor2.dumps({"a": b"b"}), "the body is not a CBOR array but a dict"),
        (cbor2.dumps([b"a", "text"]), "item 1 is not a byte string but a str"),
        (cbor2.dumps([b"a", b"b", 5]), "item 2 is not a byte string but a int"),
        (cbor2.dumps([[b"a"]]), "item 0 is not a byte string but a list"),
        (cbor2.dumps([]), "the batch is empty"),
        (cbor2.dumps([b"a"])[:-1], "the body is not CBOR: it ends inside item 0"),
        (b"\x9f\x41a\xff", "the body is not CBOR with definite lengths"),
        (b"\x81\x5f\x41a\xff", "the body is not CBOR with definite lengths"),
        (b"\x81\x5b\x00", "the body is not CBOR: it ends inside the head of item 0"),
        # Tags are refused by their head: a tag-30 pair of bignums (a Fraction to a general
        # decoder, built in time quadratic in their size) is never read.
        (RATIONAL_BOMB, "the body is not a CBOR array but a tag"),
        (b"\x81" + RATIONAL_BOMB, "item 0 is not a byte string but a tag"),
        (b"\x82\x41a\xd8\x1e\x41b", "item 1 is not a byte string but a tag"),
        (cbor2.dumps([b"a", 1.5]), "item 1 is not a byte string but a float or simple value"),
        (
            cbor2.dumps([b"x"] * (MAX_SUBMIT_BATCH + 1)),
            f"the batch holds {MAX_SUBMIT_BATCH + 1} items, more than {MAX_SUBMIT_BATCH}",
        ),
    ],
)
async def test_a_malformed_batch_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    async with peer() as (node, port):
        status, reply = await send(port, post("/submit", body))
    assert status == 400
    assert list(reply) == ["error"]
    assert str(reply["error"]).startswith(reason), reply
    assert not node.submitted


async def test_a_batch_over_its_limit_is_refused_unread() -> None:
    async with peer() as (node, port):
        # Only the head is sent: a server that read the body would find it missing (400).
        declared = post("/submit", b"", length=MAX_SUBMIT_BODY + 1)
        assert await send(port, declared) == (
            413,
            {"error": f"the body is over {MAX_SUBMIT_BODY} bytes"},
        )
        # Chunked: answered once one byte over the limit has come, not at the body's end.
        streamed = chunked("/submit", MAX_SUBMIT_BODY + 1)
        assert (await send(port, streamed))[0] == 413
    assert not node.submitted


@pytest.mark.parametrize("content_type", [None, "text/plain", CBOR])
async def test_other_routes_keep_their_small_body_limit(content_type: str | None) -> None:
    over = f"the body is over {MAX_BODY} bytes"
    async with peer() as (node, port):
        route = f"/mutation?id={'00' * 32}"
        for request in (
            post(route, b"", content_type, length=MAX_BODY + 1, method="GET"),
            chunked(route, MAX_BODY + 1, content_type or "text/plain", method="GET"),
        ):
            assert await send(port, request) == (413, {"error": over})
        assert node.store.asked == []
        # At the limit, the route answers itself.
        status, _ = await send(port, post(route, b"0" * MAX_BODY, content_type, method="GET"))
        assert (status, len(node.store.asked)) == (200, 1)


async def test_one_mutation_keeps_its_small_body_limit() -> None:
    async with peer() as (node, port):
        request = post("/submit", b"x" * (MAX_BODY + 1), "text/plain")
        assert await send(port, request) == (413, {"error": f"the body is over {MAX_BODY} bytes"})
    assert not node.submitted


async def test_one_mutation_is_still_submitted_as_it_is() -> None:
    async with peer() as (node, port):
        url = f"http://127.0.0.1:{port}"
        reply = await post_json(url, "/submit", cbor2.dumps([b"hello"]))
    # Without the CBOR content type, even a CBOR body is one mutation.
    assert reply == {"id": mutation_id(cbor2.dumps([b"hello"])).hex(), "admission": "added"}
    assert node.singles == [cbor2.dumps([b"hello"])]
    assert node.batches == []


async def test_a_batch_from_a_foreign_origin_is_refused() -> None:
    async with peer() as (node, port):
        request = post("/submit", cbor2.dumps([b"a"]), headers=["Origin: http://evil.example"])
        status, reply = await send(port, request)
    assert (status, reply) == (403, {"error": "forbidden: a cross-origin request"})
    assert not node.submitted


async def test_a_client_that_expects_100_continue_gets_it() -> None:
    """curl sends a large body only once the server says it will read it."""
    async with peer() as (node, port):
        body = cbor2.dumps([b"a"])
        reply = await exchange(port, post("/submit", body, headers=["Expect: 100-continue"]))
    assert reply.startswith(b"HTTP/1.1 100 ")
    assert b"HTTP/1.1 200 " in reply
    assert node.batches == [[b"a"]]


# --- the client -------------------------------------------------------------------------------


async def test_the_client_submits_a_batch() -> None:
    mutations = [b"a", b"quota", bytes(range(256)) * 4]
    async with peer() as (node, port):
        reply = await submit_batch(f"http://127.0.0.1:{port}", mutations)
    assert reply == {"results": expected(mutations), "added": 2}
    assert node.batches == [mutations]


@pytest.mark.parametrize(
    "mutations",
    [[], [b"x"] * (MAX_SUBMIT_BATCH + 1), [b"x" * MAX_MUTATION_SIZE] * 2100],
    ids=["empty", "too many", "too large"],
)
async def test_the_client_refuses_a_batch_the_peer_would(mutations: list[bytes]) -> None:
    async with peer() as (node, port):
        with pytest.raises(ClientError, match="a batch is 1 to"):
            await submit_batch(f"http://127.0.0.1:{port}", mutations)
    assert not node.submitted


def test_batches_are_cut_by_count_and_by_size() -> None:
    small = [b"s%d" % i for i in range(2 * MAX_SUBMIT_BATCH + 1)]
    assert [len(b) for b in batches(small)] == [MAX_SUBMIT_BATCH, MAX_SUBMIT_BATCH, 1]
    sizes = [1, 23, 24, 255, 256, MAX_MUTATION_SIZE]
    large = [bytes([i % 256]) * sizes[i % len(sizes)] for i in range(9000)]
    cut = batches(large)
    assert len(cut) > 1
    assert [m for batch in cut for m in batch] == large
    for batch in cut[:-1]:
        body = len(cbor2.dumps(batch))
        # Full: the next mutation would not have fit.
        assert MAX_SUBMIT_BODY - MAX_MUTATION_SIZE - 8 < body <= MAX_SUBMIT_BODY
    assert len(cbor2.dumps(cut[-1])) <= MAX_SUBMIT_BODY


# --- the command ------------------------------------------------------------------------------


async def p2pnode(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [sys.executable, "-m", "p2pnode", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


async def test_submit_a_file(tmp_path: Path) -> None:
    lines = [b"one", b"", b"dup", b"x" * MAX_MUTATION_SIZE, b"", b"two\r", b"three"]
    path = tmp_path / "mutations.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    async with peer() as (node, port):
        done = await p2pnode("submit", "--url", f"http://127.0.0.1:{port}", "--file", str(path))
    assert done.returncode == 0, done.stderr
    submitted = [line for line in lines if line]
    assert done.stdout.decode().splitlines() == [
        *(f"mutation {mutation_id(m).hex()} ({admission_of(m).value})" for m in submitted),
        "5 mutations: 4 added, 1 duplicate, 0 refused",
    ]
    assert node.batches == [submitted]


async def test_submit_a_file_as_json() -> None:
    async with peer() as (_, port):
        url = f"http://127.0.0.1:{port}"
        done = await p2pnode("submit", "--url", url, "--file", "-", "--json", stdin=b"a\nfull")
    assert done.returncode == 1, "one was refused"
    assert json.loads(done.stdout) == {
        "results": [
            {"id": mutation_id(b"a").hex(), "admission": "added"},
            {"id": mutation_id(b"full").hex(), "admission": "full"},
        ],
        "added": 1,
        "duplicate": 0,
        "refused": 1,
    }


async def test_submit_stdin_in_batches_and_count_refusals() -> None:
    lines = [b"m%d" % i for i in range(MAX_SUBMIT_BATCH)] + [b"full1", b"quota", b"full2"]
    async with peer() as (node, port):
        url = f"http://127.0.0.1:{port}"
        done = await p2pnode("submit", "--url", url, "--file", "-", stdin=b"\n".join(lines))
    assert done.returncode == 1, "some were refused"
    summary = f"{len(lines)} mutations: {MAX_SUBMIT_BATCH} added, 0 duplicate, 3 refused"
    printed = done.stdout.decode().splitlines()
    assert printed[-1] == f"{summary} (2 full, 1 over_quota)"
    assert printed[-2] == f"mutation {mutation_id(b'full2').hex()} (full)"
    assert len(printed) == len(lines) + 1
    assert done.stderr == b""
    assert node.batches == [lines[:MAX_SUBMIT_BATCH], lines[MAX_SUBMIT_BATCH:]]


@pytest.mark.parametrize("source", ["file", "stdin"])
async def test_a_line_too_long_submits_nothing(tmp_path: Path, source: str) -> None:
    data = b"ok\n\n" + b"y" * (MAX_MUTATION_SIZE + 1) + b"\nfine\n"
    path = tmp_path / "mutations.txt"
    path.write_bytes(data)
    async with peer() as (node, port):
        url = f"http://127.0.0.1:{port}"
        if source == "file":
            done = await p2pnode("submit", "--url", url, "--file", str(path))
        else:
            done = await p2pnode("submit", "--url", url, "--file", "-", stdin=data)
    assert done.returncode != 0
    assert done.stdout == b""
    (line,) = done.stderr.decode().splitlines()
    assert "line 3 is 1025 bytes" in line
    assert ("stdin" if source == "stdin" else str(path)) in line
    assert not node.submitted


async def test_submit_one_mutation_still_works() -> None:
    async with peer() as (node, port):
        done = await p2pnode("submit", "--url", f"http://127.0.0.1:{port}", "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == f"mutation {mutation_id(b'hello').hex()} (added)\n"
    assert node.singles == [b"hello"]


async def test_a_mutation_is_looked_up_by_its_id_in_the_query() -> None:
    async with peer() as (node, port):
        wanted = f"/mutation?id={'ab' * 32}"
        unknown = {"status": "unknown", "rank": None, "frame": None}
        assert await send(port, post(wanted, b"", None, method="GET")) == (200, unknown)
        assert node.store.asked == [bytes.fromhex("ab" * 32)]
        node.mempool.add(b"pending")
        pending = f"/mutation?id={mutation_id(b'pending').hex()}"
        reply = await send(port, post(pending, b"", None, method="GET"))
        assert reply == (200, {"status": "pending", "rank": None, "frame": None})
        for bad in ("/mutation", "/mutation?id=xyz"):
            reply = await send(port, post(bad, b"", None, method="GET"))
            assert reply == (400, {"error": "id must be a mutation id in hex"})
        assert (await send(port, post(wanted, b"", None)))[0] == 405


async def test_frames_are_listed_from_the_rank_in_the_query_and_a_bad_rank_is_named() -> None:
    async with peer() as (node, port):
        for query in ("", "?from=7"):
            reply = await send(port, post(f"/frames{query}", b"", None, method="GET"))
            assert reply == (200, {"frames": [], "tip": node.store.tip().round})
        assert node.store.listed == [(25, 16), (7, 16)]
        for bad in ("abc", "-1", "", str(2**63)):
            reply = await send(port, post(f"/frames?from={bad}", b"", None, method="GET"))
            assert reply == (400, {"error": "from must be a rank"})
        assert len(node.store.listed) == 2


@given(st.lists(st.binary(max_size=64), min_size=1, max_size=64))
def test_every_array_of_byte_strings_reads_back_whole(mutations: list[bytes]) -> None:
    assert decode_batch(cbor2.dumps(mutations)) == mutations


@given(st.binary(max_size=256))
def test_any_body_is_a_list_of_byte_strings_or_a_batch_error(body: bytes) -> None:
    try:
        mutations = decode_batch(body)
    except BatchError:
        return
    assert cbor2.loads(body) == mutations


async def test_a_large_batch_lets_the_event_loop_run_while_it_is_admitted(tmp_path: Path) -> None:
    genesis, homes = generate_testnet(tmp_path, 1, base_port=0, difficulty=100)
    home = homes[0]
    node = Node(home, home.keypair(), genesis, home.settings({}))
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await trio.sleep(0)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.sleep(0)
            before = turns
            results = await node.submit_many([b"m%d" % i for i in range(MAX_SUBMIT_BATCH)])
            nursery.cancel_scope.cancel()
    finally:
        node.store.close()
    assert [admitted for _, admitted in results] == [Admission.ADDED] * MAX_SUBMIT_BATCH
    assert turns - before >= MAX_SUBMIT_BATCH // SUBMIT_SLICE - 1


async def test_a_refused_mutation_is_still_told_as_json() -> None:
    async with peer() as (_, port):
        done = await p2pnode("submit", "--url", f"http://127.0.0.1:{port}", "full!", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["results"] == [
        {"id": mutation_id(b"full!").hex(), "admission": "full"}
    ]
    assert (
        done.stderr.decode().strip() == "p2pnode submit: the peer did not take the mutation: full"
    )


async def test_waiting_ends_once_the_peer_says_a_mutation_will_not_be_final() -> None:
    """--wait polled for the whole 120 s after the mutation had left the mempool."""
    async with peer() as (node, port):
        url = f"http://127.0.0.1:{port}"
        with trio.fail_after(60):
            done = await p2pnode("submit", "--url", url, "gone", "--wait")
    assert done.returncode == 1
    assert node.singles == [b"gone"]
    assert done.stderr.decode().strip() == (
        "p2pnode submit: 1 of 1 mutations not final, 1 of them unknown "
        f"(p2pnode mutation {mutation_id(b'gone').hex()} tells where it is)"
    )
