"""The HTTP routes of a running peer: its loopback status endpoint and its public metrics."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import trio

from p2pnode.api.batch import BatchError, decode_batch
from p2pnode.api.server import (
    CBOR,
    MAX_SUBMIT_BODY,
    Limited,
    Reply,
    Request,
    Route,
    StatusServer,
    json_reply,
)
from p2pnode.chain.mempool import MUTATION_ID_SIZE, Admission, mutation_id
from p2pnode.peer.health import health_problems
from p2pnode.peer.node import Node

METRICS_TYPE = "text/plain; version=0.0.4"


FRESH = 1.0
"""Seconds a public server's answer is served again before it is worked out anew: a status
costs the event loop some milliseconds, and scrapers ask every few seconds."""


class Cached:
    """A reply worked out at most once per FRESH seconds, whoever asks."""

    def __init__(self, make: Callable[[], Reply]) -> None:
        self._make = make
        self._reply: Reply | None = None
        self._at = -math.inf

    async def __call__(self, _: Request) -> Reply:
        now = trio.current_time()
        if self._reply is None or now - self._at >= FRESH:
            self._reply, self._at = self._make(), now
        return self._reply


def read_only_routes(node: Node, *, cached: bool = False) -> dict[tuple[str, str], Route]:
    """What a monitoring system reads: metrics and health, nothing that changes the peer;
    `cached` for a server any host can reach (see FRESH)."""

    def metrics() -> Reply:
        return Reply(200, node.metrics.exposition(), METRICS_TYPE)

    def health() -> Reply:
        """200 while connected to a quorum and finalizing, else 503 with the reasons."""
        problems = health_problems(node.status())
        answer = {"healthy": not problems, "problems": list(problems)}
        return json_reply(answer, 503 if problems else 200)

    if cached:
        return {("GET", "/metrics"): Cached(metrics), ("GET", "/health"): Cached(health)}

    async def now(make: Callable[[], Reply], _: Request) -> Reply:
        return make()

    return {
        ("GET", "/metrics"): functools.partial(now, metrics),
        ("GET", "/health"): functools.partial(now, health),
    }


def metrics_server(node: Node) -> StatusServer:
    """The server of `node.metrics`: read-only routes, cached, any Host (it may face a
    network)."""
    return StatusServer(read_only_routes(node, cached=True), public=True)


def status_server(node: Node) -> StatusServer:
    async def status(_: Request) -> Reply:
        return json_reply(node.status().to_json())

    async def submit(request: Request) -> Reply:
        """One mutation (the body as it is), or a batch: a CBOR array of byte strings."""
        if request.content_type != CBOR:
            mutation, admission = await node.submit(request.body)
            return json_reply({"id": mutation, "admission": admission.value})
        try:
            batch = decode_batch(request.body)
        except BatchError as err:
            return json_reply({"error": str(err)}, 400)
        results = await node.submit_many(batch)
        return json_reply(
            {
                "results": [{"id": key, "admission": admitted.value} for key, admitted in results],
                "added": sum(admitted is Admission.ADDED for _, admitted in results),
            }
        )

    async def mutation(request: Request) -> Reply:
        """Where a mutation is (GET /mutation?id=HEX): final (its rank and frame), pending,
        expired, displaced or unknown; `rank` is null unless it is final."""
        try:
            key = bytes.fromhex(request.query.get("id", ""))
        except ValueError:
            key = b""
        if len(key) != MUTATION_ID_SIZE:
            return json_reply({"error": "id must be a mutation id in hex"}, 400)
        rank = node.store.mutation_rank(key)
        frame = None if rank is None else node.store.frame(rank)
        if rank is not None:
            frame_id = None if frame is None else frame.identity()
            return json_reply({"status": "final", "rank": rank, "frame": frame_id})
        return json_reply({"status": node.mempool.fate(key).value, "rank": None, "frame": None})

    async def frames(request: Request) -> Reply:
        """16 final frames from the rank `from` (GET /frames?from=N), or the last 16, newest
        first; and the tip's rank."""
        given = request.query.get("from")
        try:
            start = max(1, node.store.tip().round - 15) if given is None else int(given)
        except ValueError:
            start = -1
        if not 0 <= start < 2**63:
            return json_reply({"error": "from must be a rank"}, 400)
        listed = node.store.frames(start, 16)
        return json_reply(
            {
                "tip": node.store.tip().round,
                "frames": [
                    {
                        "rank": frame.round,
                        "id": frame.identity(),
                        "timestamp": frame.timestamp,
                        "mutations": [mutation_id(m).hex() for m in frame.mutations],
                    }
                    for frame in reversed(listed)
                ],
            }
        )

    return StatusServer(
        {
            ("GET", "/status"): status,
            ("GET", "/frames"): frames,
            **read_only_routes(node),
            # Only a batch may be large; one mutation keeps the MAX_BODY bound.
            ("POST", "/submit"): Limited(submit, MAX_SUBMIT_BODY, CBOR),
            ("GET", "/mutation"): mutation,
        }
    )
