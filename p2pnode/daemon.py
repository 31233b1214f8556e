"""Running one peer as a process: logging to its home, signals, a graceful stop."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from p2pnode.chain.genesis import Genesis, GenesisError
from p2pnode.home import Home, HomeError, NodeSettings, split_endpoint
from p2pnode.http import Reply, StatusServer, json_reply
from p2pnode.net import NetError, fetch_genesis
from p2pnode.node import Node
from p2pnode.store import StoreError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


def log_to(home: Home, level: int = logging.INFO) -> None:
    """Send the peer's logs to its home's log file (the terminal may hold a dashboard)."""
    handler = logging.FileHandler(home.log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


async def ensure_genesis(home: Home, settings: NodeSettings, say: Callable[[str], None]) -> Genesis:
    """The home's genesis, fetched from the first bootstrap peer when the home has none."""
    if home.has_genesis():
        return home.genesis()
    if not settings.bootstrap:
        raise HomeError(f"no genesis in {home.path} and no --bootstrap peer to fetch it from")
    try:
        data = await fetch_genesis(settings.bootstrap[0], timeout=15)
        genesis = Genesis.from_bytes(data)
    except (NetError, GenesisError) as err:
        raise HomeError(f"cannot fetch the genesis from {settings.bootstrap[0]}: {err}") from None
    genesis.save(home.genesis_file)
    say(f"fetched genesis of network {genesis.network}: sha256 {genesis.hash().hex()}")
    return genesis


async def serve(
    home: Home,
    settings: NodeSettings,
    say: Callable[[str], None] = print,
    on_ready: Callable[[Node], None] | None = None,
) -> None:
    """Run a peer until SIGINT or SIGTERM, then shut it down gracefully."""
    keypair = home.keypair()
    genesis = await ensure_genesis(home, settings, say)
    node = Node(home, keypair, genesis, settings)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_until_stopped, node, nursery)
            host, port = split_endpoint(settings.status)
            bound = await nursery.start(status_server(node).serve, host, port)
            url = f"http://{host}:{bound}"
            home.status_url_file.write_text(url + "\n", encoding="utf-8")
            say(f"status: {url}/status  metrics: {url}/metrics")
            say(f"peer id: {keypair.prover.identity()} ({node.role} of {genesis.network})")
            for address in node.network.addrs() if node.network else []:
                say(f"listening on {address}")
            if on_ready is not None:
                on_ready(node)
            nursery.start_soon(_stop_on_signal, signals, node)


async def _run_until_stopped(
    node: Node, nursery: trio.Nursery, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the node; once it has stopped, end everything else the peer runs."""
    await node.run(task_status=task_status)
    nursery.cancel_scope.cancel()


def status_server(node: Node) -> StatusServer:
    async def status(_: bytes) -> Reply:
        return json_reply(node.status().to_json())

    async def metrics(_: bytes) -> Reply:
        return Reply(200, node.metrics.exposition(), "text/plain; version=0.0.4")

    async def submit(body: bytes) -> Reply:
        mutation, admission = await node.submit(body)
        return json_reply({"id": mutation, "admission": admission.value})

    async def mutation(body: bytes) -> Reply:
        try:
            rank = node.store.mutation_rank(bytes.fromhex(body.decode().strip()))
        except (ValueError, UnicodeDecodeError):
            return json_reply({"error": "the body must be a mutation id in hex"}, 400)
        return json_reply({"rank": rank})

    return StatusServer(
        {
            ("GET", "/status"): status,
            ("GET", "/metrics"): metrics,
            ("POST", "/submit"): submit,
            ("POST", "/mutation"): mutation,
        }
    )


async def _stop_on_signal(signals: trio.abc.ReceiveChannel[int], node: Node) -> None:
    async for signum in signals:
        log.info("signal %d: stopping", signum)
        node.stop()
        return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p2pnode-peer", description="Run one p2pnode peer.")
    parser.add_argument("--home", required=True, help="the peer's home folder")
    parser.add_argument("--listen", action="append", help="multiaddr to listen on")
    parser.add_argument("--bootstrap", action="append", help="multiaddr of a peer to join")
    args = parser.parse_args(argv)
    home = Home(Path(args.home))
    try:
        settings = home.settings()
        if args.listen:
            settings = replace(settings, listen=tuple(args.listen))
        if args.bootstrap:
            settings = replace(settings, bootstrap=tuple(args.bootstrap))
        log_to(home)
        trio.run(serve, home, settings, _say)
    except (HomeError, StoreError) as err:
        print(f"p2pnode: {err}", file=sys.stderr)
        return 2
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
