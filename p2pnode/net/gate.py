"""The gossip gate: each message's verdict, and what its author and forwarder are charged."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import trio

from p2pnode.net.contracts import Judge, NetConfig, Topic, Verdict
from p2pnode.net.discovery import Directory, Learned, PeerRecord, decode_record
from p2pnode.net.guards import Malformed
from p2pnode.net.penalty import Buckets, Limited
from p2pnode.net.tiers import Tiers

log = logging.getLogger(__name__)

ACCEPTED_KEPT = 16384
"""Digests of recently accepted payloads (about 1 MiB): a copy under another origin is a
duplicate, dropped without judging or charging its relay."""


class Gate:
    """Runs the judge on every gossip message and charges senders for what they cost.

    A REJECT is held against author and forwarder; an IGNORE, never cached, against the
    forwarder past a generous rate; a malformed envelope against whoever sent it.
    `penalise` and `learn` are the network's: the first may ban, the second keeps a record.
    """

    def __init__(
        self,
        me: str,
        config: NetConfig,
        judge: Judge,
        directory: Directory,
        *,
        penalise: Callable[[set[str]], None],
        learn: Callable[[PeerRecord], Learned],
        tiers: Tiers | None = None,
    ) -> None:
        self._me = me
        self._tiers = tiers if tiers is not None else Tiers()
        self._echo = config.echo
        self._judge = judge
        self._directory = directory
        self._penalise = penalise
        self._learn = learn
        self._ignores = Buckets(config.ignore_rate, config.ignore_burst)
        self._records = Buckets(config.record_rate, config.record_burst)
        self._accepted: dict[bytes, None] = {}
        self._warned_peers = False
        self.counts = {(topic, verdict): 0 for topic in Topic for verdict in Verdict}
        self.malformed = dict.fromkeys(Malformed, 0)
        self.limited = dict.fromkeys(Limited, 0)

    def validate(self, topic: Topic, forwarder: str, origin: str, data: bytes) -> Verdict:
        """py-libp2p's topic validator: runs before any delivery or forwarding, once per
        message id (accepted ids are then seen, rejected ones cached; an ignored message is
        judged again if another copy arrives), and only ACCEPT lets the message go on."""
        content = hashlib.sha256(topic.value.encode() + b"\0" + data).digest()
        if origin == self._me:
            verdict = self._own(topic, forwarder, data)
            if verdict is Verdict.ACCEPT and forwarder == self._me:
                self._remember(content)  # a peer relaying our own message is no duplicate
            return verdict
        if topic is not Topic.PEERS and content in self._accepted:
            # These bytes were accepted from another origin: an honest relay forwards the copy
            # it took first in good faith (a confirmation relayed, or an outsider that sent
            # one payload under two names to two peers at once), so it is charged nothing.
            self.counts[(topic, Verdict.IGNORE)] += 1
            return Verdict.IGNORE
        verdict = self._remote(topic, forwarder, origin, data)
        self.counts[(topic, verdict)] += 1
        if verdict is Verdict.ACCEPT:
            self._remember(content)
        elif verdict is Verdict.REJECT:
            self._penalise({origin, forwarder} - {self._me})
        elif forwarder != self._me:
            self._charge_ignore(forwarder)
        return verdict

    def malformed_from(self, peer: str, reason: Malformed) -> None:
        """Only the sender is to blame: an honest relay forwards only what it judged."""
        self.malformed[reason] += 1
        if peer != self._me:
            self._penalise({peer})

    def over_rate(self, limit: Limited) -> None:
        self.limited[limit] += 1

    def _remember(self, content: bytes) -> None:
        self._accepted[content] = None
        if len(self._accepted) > ACCEPTED_KEPT:
            del self._accepted[next(iter(self._accepted))]

    def _own(self, topic: Topic, forwarder: str, data: bytes) -> Verdict:
        if forwarder != self._me:
            # A copy of our own message relayed back: py-libp2p drops it after validation.
            return Verdict.IGNORE
        if self._echo:
            # The echo: the judge sees our own message like any other. An IGNORE (say, a
            # duplicate of what the engine already holds) still publishes it; a REJECT
            # does not: peers would reject it too, and penalise us.
            verdict = self._ask_judge(topic, self._me, data)
            self.counts[(topic, verdict)] += 1
            if verdict is Verdict.REJECT:
                return verdict
        return Verdict.ACCEPT

    def _remote(self, topic: Topic, forwarder: str, origin: str, data: bytes) -> Verdict:
        if topic is not Topic.PEERS:
            return self._ask_judge(topic, origin, data)
        record = decode_record(data, origin)
        if record is None:
            return Verdict.REJECT
        if origin not in self._tiers.provers:
            # Only provers' own addresses are dialled: a stranger's record could aim every
            # peer at a third host (3,274 connections a minute once). Not kept, not passed on.
            return Verdict.IGNORE
        if not self._directory.knows(origin) and not self._records.take(
            forwarder, trio.current_time()
        ):
            # One connection announcing thousands of made-up peers would fill the directory.
            self.over_rate(Limited.RECORDS)
            return Verdict.IGNORE
        verdict = self._ask_judge(topic, origin, data)
        if verdict is Verdict.ACCEPT:
            # Not kept, not forwarded: peers would be asked to remember what we do not.
            return Verdict.IGNORE if self._learn(record) is Learned.FULL else verdict
        if not self._warned_peers:
            # Legitimate for a peer the application refuses, but a judge that does not know
            # PEERS at all silently shrinks the network to a star around its bootstrap peers.
            self._warned_peers = True
            log.warning(
                "the judge gave %s to a well-formed peer record: discovery only learns and "
                "forwards accepted ones",
                verdict.name,
            )
        return verdict

    def _charge_ignore(self, forwarder: str) -> None:
        """IGNOREs are neither cached nor penalised, so replaying them would cost nothing;
        beyond a generous rate each one counts as a reject against its forwarder. Provers and
        named peers relay in bulk what we may ignore (mutations a full pool turns away): their
        ignores are never charged."""
        if not self._tiers.is_stranger(forwarder):
            return
        if not self._ignores.take(forwarder, trio.current_time()):
            self.over_rate(Limited.IGNORES)
            self._penalise({forwarder})

    def _ask_judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        try:
            verdict: object = self._judge.judge(topic, origin, data)
        except Exception:
            # A judge bug is not the sender's fault: drop the message without penalty.
            log.exception("judge failed on a %s message from %s", topic.value, origin)
            return Verdict.IGNORE
        if isinstance(verdict, Verdict):
            return verdict
        # Anything else escaping into py-libp2p's validator would kill its pubsub service.
        log.error("judge returned %r, not a Verdict", verdict)
        return Verdict.IGNORE
