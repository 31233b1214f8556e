"""Running one peer as a process: its genesis, its servers, signals, a graceful stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from p2pnode import __version__
from p2pnode.api.routes import metrics_server, status_server
from p2pnode.api.server import StatusServer
from p2pnode.chain.genesis import MAX_GENESIS_SIZE, Genesis, GenesisError, check_pin
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
    # Every port bound before the peer starts: a taken one stops it before it did anything.
    status = status_server(node)
    status_bound = await _listen_status(status, home, settings.status)
    metrics = metrics_server(node) if settings.metrics else None
    try:
        metrics_bound = await _listen(metrics, settings.metrics, "metrics") if metrics else []
    except HomeError:
        for listener in status_bound:
            listener.socket.close()
        raise
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_run_until_stopped, node, nursery)
            url = _url(settings.status, await nursery.start(status.serve_on, status_bound))
            _write_status_url(home, url)
            say(f"peer id: {keypair.prover.identity()} ({node.role} of {genesis.network})")
            # Addresses to give peers on other hosts: wildcards expanded, or the announced ones.
            shown = "announcing" if settings.announce else "listening on"
            for address in node.network.addrs() if node.network else []:
                say(f"{shown} {address}")
            say(f"status: {url}/status  metrics: {url}/metrics")
            if metrics is not None:
                public = _url(
                    settings.metrics, await nursery.start(metrics.serve_on, metrics_bound)
                )
                say(f"metrics and health for monitoring: {public}/metrics  {public}/health")
            _banner(node, genesis, url)
            nursery.start_soon(_stop_on_signal, signals, node)
            if beside is not None:
                nursery.start_soon(_beside_then_stop, beside, node, url)


async def _listen_status(
    server: StatusServer, home: Home, endpoint: str
) -> list[trio.SocketListener]:
    """Bind the status endpoint. With port 0, the port of the last start comes first: a
    restarted peer keeps its URL (dashboards, scrapers)."""
    host, port = split_endpoint(endpoint)
    last = _last_port(home, host) if port == 0 else None
    if last is not None:
        with contextlib.suppress(HomeError):  # taken meanwhile: any free port, then
            return await _listen(server, f"{_bracket(host)}:{last}", "status")
    return await _listen(server, endpoint, "status")


def _write_status_url(home: Home, url: str) -> None:
    """Whole or not at all: a reader never sees half a URL."""
    partial = home.status_url_file.with_suffix(".url.partial")
    partial.write_text(url + "\n", encoding="utf-8")
    partial.replace(home.status_url_file)


def _last_port(home: Home, host: str) -> int | None:
    """The port of the home's last status URL, if it was on `host`."""
    try:
        last = urllib.parse.urlsplit(home.status_url_file.read_text(encoding="utf-8").strip())
        return last.port if last.hostname == host and last.port else None
    except (OSError, ValueError):
        return None


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _listen(server: StatusServer, endpoint: str, what: str) -> list[trio.SocketListener]:
    """Bind `server` to `endpoint` (host:port). HomeError if it cannot."""
    host, port = split_endpoint(endpoint)
    try:
        return await server.listen(host, port)
    except OSError as err:
        raise HomeError(f"cannot serve {what} on {endpoint}: {err.strerror}") from None


def _url(endpoint: str, port: int) -> str:
    host, _ = split_endpoint(endpoint)
    return f"http://{_bracket(host)}:{port}"


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
    log.info("stopped")  # the banner's pair: a run's end shows in the log
    nursery.cancel_scope.cancel()


async def _stop_on_signal(signals: trio.abc.ReceiveChannel[int], node: Node) -> None:
    async for signum in signals:
        log.info("signal %d: stopping", signum)
        node.stop()
        return
