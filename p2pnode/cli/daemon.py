"""Running one peer as a process: its genesis, its status server, signals, a graceful stop."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from p2pnode import __version__
from p2pnode.api.batch import BatchError, decode_batch
from p2pnode.api.server import (
    CBOR,
    MAX_SUBMIT_BODY,
    Limited,
    Reply,
    Request,
    StatusServer,
    json_reply,
)
from p2pnode.chain.genesis import MAX_GENESIS_SIZE, Genesis, GenesisError, check_pin
from p2pnode.chain.mempool import MUTATION_ID_SIZE, Admission, mutation_id
from p2pnode.net import NetError, fetch_genesis
from p2pnode.peer.home import Home, HomeError
from p2pnode.peer.node import Node
from p2pnode.peer.settings import NodeSettings, split_endpoint

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


async def ensure_genesis(home: Home, settings: NodeSettings, say: Callable[[str], None]) -> Genesis:
    """The home's genesis, fetched from the first bootstrap peer when the home has none.

    Either must have the pinned hash (node.genesis_sha256) if there is one. A fetched genesis
    is saved only once it is checked whole, so a refused one leaves the home as it was.
    """
    pin = settings.genesis_sha256
    if home.has_genesis():
        genesis = home.genesis()
        check_pin(genesis, pin, f"in {home.genesis_file}")
        return genesis
    if not settings.bootstrap:
        raise HomeError(f"no genesis in {home.path} and no --bootstrap peer to fetch it from")
    source = settings.bootstrap[0]
    try:
        data = await fetch_genesis(source, timeout=15, max_size=MAX_GENESIS_SIZE)
        genesis = Genesis.from_bytes(data)
    except (NetError, GenesisError) as err:
        raise HomeError(f"cannot fetch the genesis from {source}: {err}") from None
    check_pin(genesis, pin, f"from {source}")
    genesis.save(home.genesis_file)
    digest = genesis.hash().hex()
    say(f"fetched genesis of network {genesis.network}: sha256 {digest}")
    if pin is None:
        warning = (
            f"warning: trusted the genesis of {source} on first use (sha256 {digest}); "
            f"check it out of band, and pin it with --genesis-sha256 {digest}"
        )
        log.warning("%s", warning)
        say(warning)
    return genesis


async def serve(
    home: Home,
    settings: NodeSettings,
    say: Callable[[str], None] = print,
    beside: Callable[[Node, str], Awaitable[None]] | None = None,
) -> None:
    """Run a peer until SIGINT or SIGTERM, then shut it down gracefully.

    `beside(node, status_url)` runs alongside once the peer is up; when it returns, the peer
    stops (the dashboard of `run --dashboard` is one).
    """
    keypair = home.keypair()
    genesis = await ensure_genesis(home, settings, say)
    node = Node(home, keypair, genesis, settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_until_stopped, node, nursery)
            host, port = split_endpoint(settings.status)
            try:
                bound = await nursery.start(status_server(node).serve, host, port)
            except OSError as err:
                raise HomeError(
                    f"cannot serve status on {settings.status}: {err.strerror}"
                ) from None
            url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
            home.status_url_file.write_text(url + "\n", encoding="utf-8")
            say(f"peer id: {keypair.prover.identity()} ({node.role} of {genesis.network})")
            # Addresses to give peers on other hosts: wildcards expanded, or the announced ones.
            shown = "announcing" if settings.announce else "listening on"
            for address in node.network.addrs() if node.network else []:
                say(f"{shown} {address}")
            say(f"status: {url}/status  metrics: {url}/metrics")
            _banner(node, genesis, url)
            nursery.start_soon(_stop_on_signal, signals, node)
            if beside is not None:
                nursery.start_soon(_beside_then_stop, beside, node, url)


def _banner(node: Node, genesis: Genesis, url: str) -> None:
    """One line per start, so that a restart shows in the log and says what started."""
    addresses = " ".join(node.network.addrs()) if node.network else "none"
    log.info(
        "started p2pnode %s, pid %d: peer %s, %s of network %s, genesis sha256 %s, "
        "addresses %s, status %s",
        __version__,
        os.getpid(),
        node.keypair.prover.identity(),
        node.role,
        genesis.network,
        genesis.hash().hex(),
        addresses,
        url,
    )


async def _beside_then_stop(
    beside: Callable[[Node, str], Awaitable[None]], node: Node, url: str
) -> None:
    try:
        await beside(node, url)
    finally:
        node.stop()


async def _run_until_stopped(
    node: Node, nursery: trio.Nursery, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the node; once it has stopped, end everything else the peer runs."""
    await node.run(task_status=task_status)
    nursery.cancel_scope.cancel()


def status_server(node: Node) -> StatusServer:
    async def status(_: Request) -> Reply:
        return json_reply(node.status().to_json())

    async def metrics(_: Request) -> Reply:
        return Reply(200, node.metrics.exposition(), "text/plain; version=0.0.4")

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
        """The rank of the final frame that holds a mutation (GET /mutation?id=HEX), or null."""
        try:
            key = bytes.fromhex(request.query.get("id", ""))
        except ValueError:
            key = b""
        if len(key) != MUTATION_ID_SIZE:
            return json_reply({"error": "id must be a mutation id in hex"}, 400)
        return json_reply({"rank": node.store.mutation_rank(key)})

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
            ("GET", "/metrics"): metrics,
            # Only a batch may be large; one mutation keeps the MAX_BODY bound.
            ("POST", "/submit"): Limited(submit, MAX_SUBMIT_BODY, CBOR),
            ("GET", "/mutation"): mutation,
        }
    )


async def _stop_on_signal(signals: trio.abc.ReceiveChannel[int], node: Node) -> None:
    async for signum in signals:
        log.info("signal %d: stopping", signum)
        node.stop()
        return
