"""The peer commands: init, run, id, and the ones that talk to a running peer."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import multiaddr
import trio

from p2pnode.api.client import (
    ClientError,
    get_json,
    get_status,
    status_url,
)
from p2pnode.chain.crypto import Keypair
from p2pnode.chain.genesis import DEFAULT_DIFFICULTY, DEFAULT_VDF_BITS, Genesis, wall_clock_ms
from p2pnode.cli.errors import UsageError
from p2pnode.net.addresses import AddressError, interface_ips, shared
from p2pnode.peer.home import Home, create_home, write_config
from p2pnode.peer.logsetup import LogTarget, logging_to
from p2pnode.peer.settings import NodeSettings, node_settings


def check_multiaddr(value: str, *, with_peer: bool) -> str:
    try:
        parsed = multiaddr.Multiaddr(value)
    except Exception as err:  # the library raises several unrelated types
        raise UsageError(f"invalid multiaddr {value!r}: {err}") from None
    if with_peer and "/p2p/" not in str(parsed):
        raise UsageError(f"{value!r} needs the peer's id: …/p2p/12D3KooW…")
    return value


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def init(args: argparse.Namespace) -> int:
    if args.network is None and (args.difficulty is not None or args.vdf_bits is not None):
        raise UsageError("--difficulty and --vdf-bits are the new network's: give --network too")
    difficulty = DEFAULT_DIFFICULTY if args.difficulty is None else args.difficulty
    bits = DEFAULT_VDF_BITS if args.vdf_bits is None else args.vdf_bits
    listen = args.listen or f"/ip4/127.0.0.1/tcp/{_free_port()}"
    check_multiaddr(listen, with_peer=False)
    if args.network is not None:
        # Checked before anything is written: a failed init leaves no half-made home.
        Genesis.create(args.network, [Keypair.generate().prover], difficulty, 0, bits)
    home, keypair = create_home(Path(args.home))
    write_config(home, [listen], [])
    peer = keypair.prover.identity()
    print(f"created {home.path}")
    print(f"peer id: {peer}")
    for address in _shared([listen], peer):
        print(f"address: {address}")
    if args.network is not None:
        genesis = Genesis.create(args.network, [keypair.prover], difficulty, wall_clock_ms(), bits)
        genesis.save(home.genesis_file)
        print(f"network {genesis.network}, genesis sha256 {genesis.hash().hex()}")
    else:
        print("no genesis: `p2pnode run --bootstrap MULTIADDR` fetches it from a peer")
    return 0


def _run_settings(args: argparse.Namespace, home: Home) -> NodeSettings:
    settings = home.settings(os.environ, args.set)
    if args.listen:
        listen = tuple(check_multiaddr(a, with_peer=False) for a in args.listen)
        settings = replace(settings, listen=listen)
        node_settings({"node": {"listen": list(listen)}})  # the same checks as the config
    if args.bootstrap:
        bootstrap = tuple(check_multiaddr(a, with_peer=True) for a in args.bootstrap)
        settings = replace(settings, bootstrap=bootstrap)
    if args.announce:
        announce = node_settings({"node": {"announce": args.announce}}).announce
        settings = replace(settings, announce=announce)
    if args.genesis_sha256 is not None:
        pinned = node_settings({"node": {"genesis_sha256": args.genesis_sha256}})
        settings = replace(settings, genesis_sha256=pinned.genesis_sha256)
    return settings


def run(args: argparse.Namespace) -> int:
    from p2pnode.cli.daemon import serve
    from p2pnode.peer.node import Node

    home = Home(Path(args.home))
    home.keypair()  # a clear error before anything starts
    settings = _run_settings(args, home)

    async def show(node: Node, url: str) -> None:
        # The dashboard is its own process: rendering never runs in the peer's event loop.
        command = [sys.executable, "-m", "p2pnode", "dashboard", "--url", url]
        await trio.run_process(command, check=False, stdin=None)

    # The lock first: a second run of a home changes nothing of it, its log included.
    if args.dashboard and settings.log_to is LogTarget.STDOUT:
        raise UsageError('node.log_to = "stdout" would write over the dashboard: drop one')
    with home.locked(), logging_to(home.log_file, settings.log):
        # With a dashboard, the peer's lines stay above it.
        # Logs on stdout stay nothing but log records (JSON lines, say): the rest to stderr.
        say = _say_to_stderr if settings.log_to is LogTarget.STDOUT else _say
        trio.run(serve, home, settings, say, *([show] if args.dashboard else []))
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _say_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ident(args: argparse.Namespace) -> int:
    home = Home(Path(args.home))
    peer = home.keypair().prover.identity()
    settings = home.settings(os.environ)
    print(f"peer id: {peer}")
    running = _running_addrs(home, peer)
    if running:  # what it listens on, not what its config asked for (a port 0, say)
        for address in running:
            print(f"address: {address}")
        return 0
    for address in _shared(settings.listen, peer, settings.announce):
        port_zero = f"/tcp/0/p2p/{peer}" in address
        suffix = "  (port chosen when the peer starts)" if port_zero else ""
        print(f"address: {address}{suffix}")
    return 0


def _running_addrs(home: Home, peer: str) -> tuple[str, ...]:
    """The addresses the peer running in `home` shares, if one runs there and answers."""
    try:
        status = trio.run(functools.partial(get_status, status_url(home), timeout=2))
    except ClientError:
        return ()
    return status.addrs if status.peer_id == peer else ()


def _shared(listen: Sequence[str], peer: str, announce: Sequence[str] = ()) -> list[str]:
    """What the peer shares once running: the announced addresses, or the listen ones with
    wildcards expanded to this host's addresses."""
    try:
        return shared(listen, peer, announce, interface_ips())
    except AddressError as err:
        raise UsageError(f"node.announce: {err}") from None


def url_from(args: argparse.Namespace) -> str:
    """The status URL of --url, or of the peer running in --home (ClientError if none)."""
    if args.url is not None:
        return str(args.url)
    home = Home(Path(args.home))
    if not home.in_use():
        raise ClientError(f"no peer is running in {home.path} ({_last_seen(home)})")
    return status_url(home)


def _last_seen(home: Home) -> str:
    """When a peer of `home` last wrote its log, store or status URL."""
    times = []
    for path in (home.log_file, home.store_file, home.status_url_file):
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    if not times:
        return "never run" if home.config_file.exists() else "not a home"
    return "last seen " + time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(max(times)))


def urls_from(args: argparse.Namespace) -> list[str]:
    if args.url:
        return list(args.url)
    return [status_url(Home(Path(home))) for home in args.home]


def status(args: argparse.Namespace) -> int:
    from p2pnode.peer.status_read import parse_status

    url = url_from(args)
    reply = trio.run(get_json, url, "/status")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    seen = parse_status(reply, url)  # the dashboard's typed reading of the same reply
    lines = [
        f"peer      {seen.peer_id} ({seen.role} of {seen.network})",
        f"state     {seen.state} for {seen.state_time} s, deciding rank {seen.round.rank}",
        f"final     rank {seen.finalized_rank}  {seen.finalized_id}",
        f"sync      {seen.sync} (best peer rank {seen.best_peer_rank})",
        f"peers     {len(seen.peers)}",
    ]
    if seen.problems:
        lines.append(f"unread    {', '.join(seen.problems)}")
    print("\n".join(lines))
    return 0


def dashboard(args: argparse.Namespace) -> int:
    from p2pnode.dashboard.live import watch

    urls = urls_from(args)
    trio.run(watch, urls)
    return 0


def frames(args: argparse.Namespace) -> int:
    if args.start is not None and args.start < 1:
        raise UsageError("--from must be a rank of 1 or more")
    path = "/frames" if args.start is None else f"/frames?from={args.start}"
    reply = trio.run(get_json, url_from(args), path)
    listed = reply.get("frames")
    listed = listed if isinstance(listed, list) else []
    if args.start is not None and not listed:
        raise UsageError(f"no final frame from rank {args.start}: the tip is {reply.get('tip')}")
    for frame in sorted(listed, key=lambda f: f.get("rank") or 0):  # in rank order
        mutations = frame.get("mutations") or []
        print(f"rank {frame.get('rank'):>6}  {frame.get('id')}  {len(mutations)} mutations")
        for mutation in mutations:
            print(f"              {mutation}")
    return 0
