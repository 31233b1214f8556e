"""Polling peers' status endpoints and showing them in a rich Live display."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import trio
from rich.console import Console, RenderableType
from rich.live import Live

from p2pnode.api.client import ClientError, get_status
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.dashboard.render import peer_view, testnet_view
from p2pnode.peer.status import PeerStatus

MIN_TIMEOUT = 1.0
"""A peer busy proving may answer late; sooner than this it is not yet unreachable."""


async def fetch(url: str, timeout: float) -> Reading:
    """One peer's status, or why it could not be read: never raises for a peer's fault."""
    try:
        # Our own deadline: the client's timeout error carries no message to show.
        with trio.fail_after(timeout):
            return await get_status(url, timeout=2 * timeout)
    except trio.TooSlowError:
        return Unreachable(url, f"no reply within {timeout:g}s")
    except (ClientError, trio.BrokenResourceError) as err:
        # The client wraps most failures, but a connection reset mid-request escapes it.
        return Unreachable(url, _reason(url, err))


class Reader(Protocol):
    def __call__(self, url: str, timeout: float, /) -> Awaitable[Reading]: ...


def _reason(url: str, err: Exception) -> str:
    """The client's message, shortened to fit a narrow column."""
    text = str(err).removeprefix(f"cannot reach {url}: ")
    if text.startswith("all attempts to connect"):
        return "cannot connect"
    return text or type(err).__name__


def view(readings: Sequence[Reading], width: int, height: int, footer: str = "") -> RenderableType:
    """The full view of one peer, or all peers side by side."""
    if len(readings) == 1:
        return peer_view(readings[0], width, height, footer=footer)
    return testnet_view(readings, width, height, footer=footer)


async def watch(
    urls: list[str],
    *,
    refresh: float = 0.25,
    console: Console | None = None,
    stop: trio.Event | None = None,
    log_file: Path | None = None,
    read: Reader = fetch,
    footer: str = "Ctrl-C to quit",
) -> None:
    """Show the peers at `urls` until `stop` is set or the caller cancels.

    `read` gets one peer's status (over HTTP by default; tests give an in-memory one);
    `footer` ends the view (how to stop it, where to join).
    """
    if not urls:
        raise ValueError("no peer to watch")
    console = Console() if console is None else console
    stop = trio.Event() if stop is None else stop
    timeout = max(MIN_TIMEOUT, 4 * refresh)
    latest: dict[str, Reading] = {}
    everyone = trio.Event()
    async with trio.open_nursery() as nursery:
        distinct = list(dict.fromkeys(urls))
        for url in distinct:
            nursery.start_soon(_poll, read, url, latest, refresh, timeout, everyone, len(distinct))
        # Show nothing before every peer answered once (or could not), so none flashes as
        # unreachable while it is still being asked.
        with trio.move_on_after(timeout):
            await everyone.wait()
        if not stop.is_set():
            with _logs_off_terminal(log_file):
                await _show(console, urls, latest, refresh, stop, footer)
        nursery.cancel_scope.cancel()


async def _show(
    console: Console,
    urls: Sequence[str],
    latest: dict[str, Reading],
    refresh: float,
    stop: trio.Event,
    footer: str,
) -> None:
    """Render the latest readings every `refresh` until `stop` is set."""
    # No refresh thread: this loop renders, between polls, in this process only.
    with Live(console=console, screen=console.is_terminal, auto_refresh=False) as live:
        while not stop.is_set():
            width, height = console.size
            readings = [latest.get(u) or Unreachable(u, "no reply yet") for u in urls]
            live.update(view(readings, width, height, footer), refresh=True)
            with trio.move_on_after(refresh):
                await stop.wait()


async def _poll(
    read: Reader,
    url: str,
    latest: dict[str, Reading],
    refresh: float,
    timeout: float,
    everyone: trio.Event,
    count: int,
) -> None:
    """Poll one peer at most every `refresh`; a slow peer delays only its own column."""
    while True:
        next_poll = trio.current_time() + refresh
        latest[url] = _since(await read(url, timeout), latest.get(url))
        if len(latest) == count:
            everyone.set()
        await trio.sleep_until(next_poll)


def _since(reading: Reading, before: Reading | None) -> Reading:
    """An unreachable peer keeps the time it first failed, to show for how long."""
    if isinstance(reading, PeerStatus):
        return reading
    since = before.since if isinstance(before, Unreachable) else None
    return replace(reading, since=since or time.time())


@contextlib.contextmanager
def _logs_off_terminal(log_file: Path | None) -> Iterator[None]:
    """While the dashboard is shown, log records go to `log_file` or nowhere, not the screen."""
    root = logging.getLogger()
    saved = list(root.handlers)
    terminal = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    kept = [h for h in saved if not (isinstance(h, logging.StreamHandler) and h.stream in terminal)]
    added: logging.Handler = logging.NullHandler()
    if log_file is not None:
        added = logging.FileHandler(log_file, encoding="utf-8")
        added.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Without any handler, logging's last resort would write warnings onto the screen.
    root.handlers[:] = [*kept, added]
    try:
        yield
    finally:
        root.handlers[:] = saved
        added.close()
