"""Request and response over streams: asking a peer for final frames, and answering others'
sync requests and genesis fetches within their budgets."""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import INetStream

from p2pnode.net.contracts import NetConfig, NetError, SyncServer, sync_protocol
from p2pnode.net.fixes import reset_quietly
from p2pnode.net.framing import read_frame, write_frame
from p2pnode.net.penalty import Buckets, Limited
from p2pnode.net.stack import Stack
from p2pnode.net.sync import ask_sync, write_answer

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
SERVE_TIMEOUT = 30.0
STRANGER_SERVE_TIMEOUT = 5.0
"""A stranger that does not read its answer gives its serving slot up after this long."""
SLOTS = 4
"""Answers written at once to provers and named peers, and as many to strangers: strangers
that never read their answers held every slot, and provers' catch-ups timed out."""


class Serving:
    """`budget_key` names whom a remote's budget is kept for (None: it is not held to one, a
    prover); `refused` says whether it is banned; `over_rate` counts a refusal."""

    def __init__(
        self,
        config: NetConfig,
        stack: Stack,
        sync_server: SyncServer | None,
        *,
        budget_key: Callable[[str], str | None],
        refused: Callable[[str], bool],
        over_rate: Callable[[Limited], None],
    ) -> None:
        self._config = config
        self._stack = stack
        self._sync_server = sync_server
        self._budget_key = budget_key
        self._refused = refused
        self._over_rate = over_rate
        self._buckets = Buckets(config.sync_rate, config.sync_burst)
        self._reserved_slots = trio.Semaphore(SLOTS)
        self._stranger_slots = trio.Semaphore(SLOTS)

    async def request(self, peer_id: str, request: bytes, *, timeout: float) -> list[bytes]:
        """Ask `peer_id`'s sync server; return its items (at most `max_response_items`).
        Raises NetError on any failure or after `timeout` seconds."""
        if peer_id == self._stack.peer_id:
            raise NetError("a peer cannot sync from itself")
        config, stream = self._config, None
        try:
            with trio.fail_after(timeout):
                stream = await self._stack.open_stream(peer_id, sync_protocol(config.network))
                items = await ask_sync(
                    stream,
                    request,
                    max_request=config.max_sync_request,
                    max_items=config.max_response_items,
                    max_item_size=config.max_item_size,
                    max_bytes=config.max_response_bytes,
                )
                await stream.close()
                return items
        except Exception as err:
            if stream is not None:
                await reset_quietly(stream)
            if isinstance(err, NetError):
                raise
            if isinstance(err, trio.TooSlowError):
                raise NetError(f"sync request to {peer_id} timed out after {timeout} s") from None
            raise NetError(f"sync request to {peer_id} failed: {err!r}") from err

    def _admitted(self, remote: str) -> bool:
        """Not banned, and within its budget: a stranger's network's, all its keys together.
        A prover catching up on a long outage asks a hundred times in a row: its own tier is
        not held to the strangers' rate (its tier's serving slots still bound it)."""
        if self._refused(remote):
            return False
        key = self._budget_key(remote)
        if key is not None and not self._buckets.take(key, trio.current_time()):
            self._over_rate(Limited.SYNC)
            log.debug("sync request from %s over its rate: refused", remote)
            return False
        return True

    async def serve_sync(self, remote: str, stream: INetStream) -> None:
        if self._sync_server is None or not self._admitted(remote):
            await reset_quietly(stream)
            return
        config, reserved = self._config, self._budget_key(remote) is None
        # The request is read before taking a serving slot, so a slow client holds none.
        with trio.fail_after(REQUEST_TIMEOUT):
            request = await read_frame(stream, config.max_sync_request)
        slots = self._reserved_slots if reserved else self._stranger_slots
        with trio.fail_after(SERVE_TIMEOUT if reserved else STRANGER_SERVE_TIMEOUT):
            async with slots:
                items = await self._sync_server.serve(request)
                await write_answer(
                    stream,
                    items,
                    max_items=config.max_response_items,
                    max_item_size=config.max_item_size,
                    max_bytes=config.max_response_bytes,
                )
            await stream.close()

    async def serve_genesis(self, remote: str, stream: INetStream) -> None:
        """A genesis is as large as a sync answer: the same budget."""
        genesis = self._config.genesis
        if genesis is None or not self._admitted(remote):
            await reset_quietly(stream)
            return
        with trio.fail_after(SERVE_TIMEOUT):
            await write_frame(stream, genesis)
            await stream.close()
