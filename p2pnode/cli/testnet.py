"""`p2pnode testnet`: N local provers as processes, the combined dashboard, a clean stop."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path

import trio

from p2pnode.api.client import ClientError, status_url
from p2pnode.cli.errors import UsageError
from p2pnode.dashboard.live import Reader, fetch
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.local.homes import generate_testnet
from p2pnode.local.processes import PeerExitedError, serving
from p2pnode.local.supervisor import Supervised, Supervisor
from p2pnode.peer.home import KEY_FILE, Home
from p2pnode.peer.status import PeerStatus

DEFAULT_BASE_PORT = 4001
STOP_TIMEOUT = 15.0
START_TIMEOUT = 60.0


def testnet(args: argparse.Namespace) -> int:
    if not 1 <= args.peers <= 16:
        raise UsageError("--peers must be between 1 and 16")
    base_port = DEFAULT_BASE_PORT if args.base_port is None else args.base_port
    if base_port != 0 and not 1024 <= base_port <= 65535 - args.peers:
        raise UsageError(
            f"--base-port must be 0 or leave {args.peers} ports below 65536, from 1024"
        )
    if base_port == 0 and args.generate_only:
        raise UsageError("--generate-only needs a --base-port: the homes must name their ports")
    out = Path(args.out)
    homes = _existing(out, args.peers)
    plural = "s" if args.peers > 1 else ""
    if homes is None:
        genesis, homes = generate_testnet(
            out,
            args.peers,
            base_port=base_port,
            difficulty=args.difficulty,
            vdf_bits=args.vdf_bits,
        )
        print(f"created {args.peers} prover home{plural} in {out}")
    else:
        genesis = homes[0].genesis()
        _check_ports(homes, args.base_port)
        print(f"reusing the {args.peers} prover home{plural} in {out} (with the ports they name)")
    print(f"network {genesis.network}, genesis sha256 {genesis.hash().hex()}")
    if args.generate_only:
        for home in homes:
            print(f"  {_command()} run --home {shlex.quote(str(home.path))}")
        return 0
    # Without a dashboard, a line per exit (with one, the view shows it).
    told = (lambda line: print(line, flush=True)) if args.no_dashboard else (lambda line: None)
    supervisor = Supervisor(restart=args.restart, told=told)
    try:
        trio.run(_watch_until_stopped, homes, supervisor, not args.no_dashboard)
    finally:
        ended = supervisor.stop(STOP_TIMEOUT)
    stopped = len(supervisor.peers) - len(ended)
    print(f"stopped {stopped} peer{'s' if stopped != 1 else ''}; logs in {out}/peer*/node.log")
    for line in ended:
        print(f"  {line}")
    return 1 if ended else 0  # a peer that ended on its own is a failure to look at


def _command() -> str:
    """How this `p2pnode` is run from here: the script beside the interpreter (relative to
    the working folder when under it, e.g. .venv/bin/p2pnode), else `python -m p2pnode`."""
    script = Path(sys.executable).parent / "p2pnode"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m p2pnode"
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return shlex.quote(str(script))


def _check_ports(homes: list[Home], asked: int | None) -> None:
    """A --base-port given for homes that name other ports is an error, not ignored."""
    if asked is None:
        return
    first = homes[0].settings().listen[0].rsplit("/", 1)[-1]
    if first != str(asked):
        raise UsageError(
            f"the homes in {homes[0].path.parent} listen from port {first}, not {asked}: "
            "--base-port applies to new homes (use another --out, or leave it out)"
        )


def _existing(out: Path, peers: int) -> list[Home] | None:
    """The testnet already in `out`, if it has exactly `peers` homes; None if `out` is empty."""
    if not out.exists() or not any(out.iterdir()):
        return None
    homes = [Home(out / f"peer{index}") for index in range(peers)]
    complete = all((home.path / KEY_FILE).exists() and home.has_genesis() for home in homes)
    if not complete or (out / f"peer{peers}").exists():
        raise UsageError(f"{out} holds something else than a {peers}-peer testnet; use --out")
    return homes


async def _watch_until_stopped(homes: list[Home], supervisor: Supervisor, dashboard: bool) -> None:
    # SIGHUP: the terminal closed; the peers are in their own sessions and must be stopped.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, stop, nursery)
            urls, join = await _started(homes, supervisor)
            nursery.start_soon(supervisor.watch)
            read = supervised_reader(supervisor, dict(zip(urls, homes, strict=True)))
            if dashboard:
                from p2pnode.dashboard.live import watch

                footer = f"Ctrl-C stops the testnet · join with --bootstrap {join}"
                await watch(urls, stop=stop, read=read, footer=footer)
            else:
                await _print_lines(urls, stop, read)
            nursery.cancel_scope.cancel()


def supervised_reader(
    supervisor: Supervisor, homes: dict[str, Home], read: Reader = fetch
) -> Reader:
    """Read a peer's status at the URL its home names now; a peer that exited reads as what
    ended it (its exit status and last line), not as a URL that does not answer."""

    async def supervised(url: str, timeout: float) -> Reading:
        home = homes[url]
        ended = supervisor.exited(home)
        if ended is not None:
            return Unreachable(url, ended, ended=True)
        try:
            current = status_url(home)
        except ClientError:  # restarting: no status.url until it serves
            current = url
        reading = await read(current, timeout)
        return replace(reading, url=url) if isinstance(reading, Unreachable) else reading

    return supervised


async def _stop_on_signal(
    signals: trio.abc.ReceiveChannel[int], stop: trio.Event, nursery: trio.Nursery
) -> None:
    async for _ in signals:
        stop.set()
        nursery.cancel_scope.cancel()  # also while the peers are still starting
        return


async def _started(homes: list[Home], supervisor: Supervisor) -> tuple[list[str], str]:
    """Start peer0, then the others with peer0's address (read back from its status, so a
    port the system picked works); each peer's status url once every one answers, and the
    address others join at."""
    with trio.move_on_after(START_TIMEOUT):
        first = await _serving(supervisor.start(homes[0]))
        # Loopback first; a home that announces another address is joined there.
        joins = [a for a in first.addrs if "/ip4/127.0.0.1/" in a] or list(first.addrs)
        if not joins:
            raise UsageError(f"{homes[0].path.name} shows no address to join")
        # Restarted, peer0 listens where the others were told to join it (its home may say
        # port 0: another port each start).
        supervisor.peers[0].args = ("--listen", joins[0].split("/p2p/")[0])
        others = [supervisor.start(home, "--bootstrap", joins[0]) for home in homes[1:]]
        for peer in others:
            await _serving(peer)
        return [status_url(home) for home in homes], joins[0]
    raise UsageError(f"the peers did not start within {START_TIMEOUT:.0f} s")


async def _serving(peer: Supervised) -> PeerStatus:
    try:
        return await serving(peer.home, peer.process, peer.log)
    except PeerExitedError as err:
        raise UsageError(str(err)) from None


async def _print_lines(urls: list[str], stop: trio.Event, read: Reader) -> None:
    """Without a dashboard: one line per peer every two seconds."""
    while not stop.is_set():
        for url in urls:
            reading = await read(url, 1.0)
            if isinstance(reading, Unreachable):
                print(f"{url}: {reading.reason}", flush=True)
            else:
                print(
                    f"{reading.peer_id[-8:]}  rank {reading.finalized_rank:>6}"
                    f"  {reading.state}  {reading.sync}",
                    flush=True,
                )
        with trio.move_on_after(2):
            await stop.wait()
