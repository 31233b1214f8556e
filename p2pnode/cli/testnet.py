"""`p2pnode testnet`: N local provers as processes, the combined dashboard, a clean stop."""

from __future__ import annotations

import argparse
import signal
import subprocess
from pathlib import Path

import trio

from p2pnode.api.client import ClientError, get_status, status_url
from p2pnode.cli.errors import UsageError
from p2pnode.local.homes import generate_testnet
from p2pnode.local.processes import PeerExitedError, serving, spawn, stop_all
from p2pnode.peer.home import KEY_FILE, Home
from p2pnode.peer.status import PeerStatus

STOP_TIMEOUT = 15.0
START_TIMEOUT = 60.0


def testnet(args: argparse.Namespace) -> int:
    if not 1 <= args.peers <= 16:
        raise UsageError("--peers must be between 1 and 16")
    if args.base_port != 0 and not 1024 <= args.base_port <= 65535 - args.peers:
        raise UsageError(
            f"--base-port must be 0 or leave {args.peers} ports below 65536, from 1024"
        )
    if args.base_port == 0 and args.generate_only:
        raise UsageError("--generate-only needs a --base-port: the homes must name their ports")
    out = Path(args.out)
    homes = _existing(out, args.peers)
    if homes is None:
        _, homes = generate_testnet(
            out, args.peers, base_port=args.base_port, difficulty=args.difficulty
        )
        print(f"created {args.peers} prover homes in {out}")
    else:
        print(f"reusing the {args.peers} prover homes in {out} (with the ports they name)")
    if args.generate_only:
        for home in homes:
            print(f"  p2pnode run --home {home.path}")
        return 0
    processes: list[subprocess.Popen[bytes]] = []
    try:
        trio.run(_watch_until_stopped, homes, processes, not args.no_dashboard)
    finally:
        stop_all(processes, STOP_TIMEOUT)
    print(f"stopped {len(processes)} peers; their logs are in {out}/peer*/node.log")
    return 0


def _existing(out: Path, peers: int) -> list[Home] | None:
    """The testnet already in `out`, if it has exactly `peers` homes; None if `out` is empty."""
    if not out.exists() or not any(out.iterdir()):
        return None
    homes = [Home(out / f"peer{index}") for index in range(peers)]
    complete = all((home.path / KEY_FILE).exists() and home.has_genesis() for home in homes)
    if not complete or (out / f"peer{peers}").exists():
        raise UsageError(f"{out} holds something else than a {peers}-peer testnet; use --out")
    return homes


async def _watch_until_stopped(
    homes: list[Home], processes: list[subprocess.Popen[bytes]], dashboard: bool
) -> None:
    # SIGHUP: the terminal closed; the peers are in their own sessions and must be stopped.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, signals, stop, nursery)
            urls = await _started(homes, processes)
            if dashboard:
                from p2pnode.dashboard.live import watch

                await watch(urls, stop=stop)
            else:
                await _print_lines(urls, stop)
            nursery.cancel_scope.cancel()


async def _stop_on_signal(
    signals: trio.abc.ReceiveChannel[int], stop: trio.Event, nursery: trio.Nursery
) -> None:
    async for _ in signals:
        stop.set()
        nursery.cancel_scope.cancel()  # also while the peers are still starting
        return


def _log(home: Home) -> Path:
    return home.path / "process.log"


async def _started(homes: list[Home], processes: list[subprocess.Popen[bytes]]) -> list[str]:
    """Start peer0, then the others with peer0's address (read back from its status, so a
    port the system picked works); each peer's status url once every one answers."""
    with trio.move_on_after(START_TIMEOUT):
        first = await _start(homes[0], processes)
        # Loopback first; a home that announces another address is joined there.
        joins = [a for a in first.addrs if "/ip4/127.0.0.1/" in a] or list(first.addrs)
        if not joins:
            raise UsageError(f"{homes[0].path.name} shows no address to join")
        for home in homes[1:]:
            processes.append(spawn(home, "--bootstrap", joins[0], log=_log(home), own_session=True))
        for home, process in zip(homes[1:], processes[1:], strict=True):
            await _serving(home, process)
        return [status_url(home) for home in homes]
    raise UsageError(f"the peers did not start within {START_TIMEOUT:.0f} s")


async def _start(home: Home, processes: list[subprocess.Popen[bytes]]) -> PeerStatus:
    processes.append(spawn(home, log=_log(home), own_session=True))
    return await _serving(home, processes[-1])


async def _serving(home: Home, process: subprocess.Popen[bytes]) -> PeerStatus:
    try:
        return await serving(home, process, _log(home))
    except PeerExitedError as err:
        raise UsageError(str(err)) from None


async def _print_lines(urls: list[str], stop: trio.Event) -> None:
    """Without a dashboard: one line per peer every two seconds."""
    while not stop.is_set():
        for url in urls:
            try:
                status = await get_status(url, timeout=1)
                print(
                    f"{status.peer_id[-8:]}  rank {status.finalized_rank:>6}"
                    f"  {status.state}  {status.sync}",
                    flush=True,
                )
            except ClientError as err:
                print(f"{url}: {err}", flush=True)
        with trio.move_on_after(2):
            await stop.wait()
