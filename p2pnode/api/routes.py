"""The HTTP routes of a running peer: its loopback status endpoint and its public metrics."""

from __future__ import annotations

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


def read_only_routes(node: Node) -> dict[tuple[str, str], Route]:
    """What a monitoring system reads: metrics and health, nothing that changes the peer."""

    async def metrics(_: Request) -> Reply:
        return Reply(200, node.metrics.exposition(), METRICS_TYPE)

    async def health(_: Request) -> Reply:
        """200 while connected to a quorum and finalizing, else 503 with the reasons."""
        problems = health_problems(node.status())
        return json_reply(
            {"healthy": not problems, "problems": list(problems)}, 503 if problems else 200
        )

    return {("GET", "/metrics"): metrics, ("GET", "/health"): health}


def metrics_server(node: Node) -> StatusServer:
    """The server of `node.metrics`: read-only routes, any Host (it may face a network)."""
    return StatusServer(read_only_routes(node), public=True)


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
        return json_reply({"status": node.mempool.fate(key).value, "rank": None})

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
