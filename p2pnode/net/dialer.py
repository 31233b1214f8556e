"""Whom a peer dials: its bootstrap peers for ever, and the provers whose own announcements it
learned, one address at a time, a few dials a second at most."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

import trio

from p2pnode.net.addresses import interface_ips, ip_of
from p2pnode.net.contracts import NetConfig, NetError, mesh_degrees
from p2pnode.net.discovery import Directory, Learned, PeerRecord
from p2pnode.net.failures import answered_as_another, endpoint, why_dial_failed
from p2pnode.net.penalty import Buckets
from p2pnode.net.stack import Stack
from p2pnode.net.tiers import Tiers

log = logging.getLogger(__name__)

FORGET_AFTER = 600.0
"""A peer that is not kept (not a prover) is dialled again after a lost connection until
nothing was heard of it for this long."""
DIAL_RATE, DIAL_BURST = 4.0, 16.0
"""Dials of known peers per second, all together: whatever the announcements say, a peer
opens a few connections a second at most."""
BOOTSTRAP_CHECK = 1.0
"""How often a bootstrap peer that is connected (or banned) is looked at again."""
IDENTIFY_WAIT = 10.0
"""How long a connected bootstrap peer has to say (identify) which networks it serves."""


class Dialer:
    """Keeps the directory of provers' records and dials what is due; `changed` is told of a
    newly learned peer (so this peer announces itself back soon)."""

    def __init__(
        self,
        config: NetConfig,
        stack: Stack,
        tiers: Tiers,
        tasks: trio.Nursery,
        *,
        banned: Callable[[float], Collection[str]],
        prover_ips: Callable[[Collection[str]], None],
        changed: Callable[[], None],
    ) -> None:
        self._config = config
        self._stack = stack
        self._tasks = tasks
        self._banned = banned
        self._prover_ips = prover_ips
        self._changed = changed
        self._provers = tiers.provers
        self.directory = Directory(
            stack.peer_id,
            grace=config.dial_grace,
            forget_after=FORGET_AFTER,
            max_peers=mesh_degrees(config.expected_peers).high,
            max_known=config.max_known_peers,
            retry=config.redial,
            kept=tiers.provers | tiers.named,
            local_ips=interface_ips,
        )
        self._dials = Buckets(DIAL_RATE, DIAL_BURST, max_peers=1)
        self._dialling: set[str] = set()
        self._foreign: dict[str, str] = {}
        """Bootstrap peers of other networks, and the line that told so."""
        self._ours_seen = False
        """Whether a bootstrap peer ever said it serves this network: from then on a foreign
        one is dropped, never a reason to stop."""
        self.closing = False

    def learn(self, record: PeerRecord) -> Learned:
        """A prover's own announcement: remembered, its addresses never held to the inbound
        rate, dialled when due."""
        now = trio.current_time()
        self._prover_ips([ip for ip in map(ip_of, record.addrs) if ip is not None])
        learned = self.directory.learn(record, now)
        if learned is Learned.NEW:
            self._changed()
        self.dial_due(now)
        return learned

    def dial_due(self, now: float) -> None:
        if self.closing:
            return
        refused = set(self._banned(now))
        connected = set(self._stack.connected())
        for record in self.directory.to_dial(now, connected, self._dialling, refused):
            if not self._dials.take("", now):
                return  # the rest wait for the next round of housekeeping
            self._dialling.add(record.peer_id)
            self._tasks.start_soon(self._dial, record)

    async def _dial(self, record: PeerRecord) -> None:
        """Dial the one address `record` holds; the directory learns how it went."""
        peer, address = record.peer_id, record.addrs[0]
        try:
            with trio.fail_after(self._config.dial_timeout):
                await self._stack.connect([address])
            self.directory.dialled(peer, failed=False, now=trio.current_time())
        except Exception as err:
            log.debug("dialling %s at %s failed: %r", peer, address, err)
            wrong = answered_as_another(err)
            now = trio.current_time()
            self.directory.dialled(peer, failed=True, now=now, address=address, wrong_peer=wrong)
        finally:
            self._dialling.discard(peer)

    def start_bootstrap(self) -> None:
        """Stay connected to every bootstrap peer; the addresses of those that are provers are
        never held to the inbound rate."""
        provers = [a for a in self._config.bootstrap if self._peer_of(a) in self._provers]
        self._prover_ips([ip for ip in map(ip_of, provers) if ip is not None])
        for addr in self._config.bootstrap:
            self._tasks.start_soon(self._bootstrap, addr)

    def _peer_of(self, addr: str) -> str | None:
        try:
            return self._stack.peer_of(addr)
        except NetError:
            return None

    async def _bootstrap(self, addr: str) -> None:
        """Stay connected to one bootstrap peer: dial with backoff until connected, and again
        whenever the connection is lost. A failure is logged when its reason changes; a peer
        of another network is dropped, and if all of them are, the peer stops (NetError)."""
        target = self._peer_of(addr)
        if target is None:
            log.warning("bootstrap address ignored: %s names no peer", addr)
            return
        if target == self._stack.peer_id:
            return
        first, most = self._config.redial
        delay, told = first, ""
        while True:
            if target in self._stack.connected() or target in self._banned(trio.current_time()):
                delay = first
                await trio.sleep(BOOTSTRAP_CHECK)
                continue
            try:
                with trio.fail_after(self._config.dial_timeout):
                    await self._stack.connect([addr])
            except Exception as err:
                timeout, own = self._config.dial_timeout, self._stack.peer_id
                why = why_dial_failed(err, addr, target, timeout, own)
                if why != told:
                    log.warning("bootstrap peer: %s (retrying)", why)
                told = why
                log.debug("bootstrap %s not reachable (%r); retry in %.2f s", addr, err, delay)
                await trio.sleep(delay)
                delay = min(2 * delay, most)
                continue
            log.info("connected to bootstrap peer %s at %s", target, endpoint(addr))
            delay, told = first, ""
            if not await self._same_network(target, addr):
                return

    async def _same_network(self, target: str, addr: str) -> bool:
        """Whether a connected bootstrap peer serves this peer's network (or has not said);
        one that does not is disconnected, logged, and never dialled again."""
        with trio.move_on_after(IDENTIFY_WAIT):
            while (networks := self._stack.networks_of(target)) is None:
                await trio.sleep(0.05)
        # None: identify did not tell in time; empty: it lists no sync protocol of any network
        # (caught starting up, or a newer version): neither proves another network.
        if not networks or self._config.network in networks:
            self._ours_seen = self._ours_seen or bool(networks)
            if networks == frozenset():
                log.warning(
                    "bootstrap peer %s at %s serves no p2pnode network (yet): a p2pnode peer?",
                    target,
                    endpoint(addr),
                )
            return True
        serves = ", ".join(map(repr, sorted(networks)))
        line = (
            f"bootstrap peer {target} at {endpoint(addr)} serves {serves}, "
            f"not {self._config.network!r}"
        )
        log.error("%s: not dialled again", line)
        self._foreign[target] = line
        await self._stack.disconnect(target)
        bootstrap = {self._peer_of(a) for a in self._config.bootstrap} - {self._stack.peer_id}
        if not self._ours_seen and bootstrap <= set(self._foreign):
            raise NetError(f"no bootstrap peer is of this network: {line}")
        return False
