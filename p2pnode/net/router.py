"""py-libp2p's GossipSub router, tiered: provers keep their mesh places, strangers share a few,
and control messages are bounded and charged instead of logged."""

from __future__ import annotations

import logging
import random
from collections import defaultdict, deque
from collections.abc import Callable, Collection, Iterable, MutableSequence, Sequence
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.mcache import CacheEntry, MessageCache
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.utils import safe_bytes_from_hex

from p2pnode.net.contracts import MAX_PAYLOAD
from p2pnode.net.guards import Malformed, Remembered, Report, check_libp2p_version
from p2pnode.net.penalty import Buckets

log = logging.getLogger(__name__)

MAX_IWANT = 64
"""Message ids answered per RPC: py-libp2p answered every id, repeats included, so 4,000
copies of one id in a 192 KB request came back as 4,000 copies of the message."""
NAMED_HEARTBEATS = 4
"""Heartbeats at which a message not relayed to provers is named to them: an IWANT is answered
for 64 ids at most, and an IHAVE or its answer can be lost. Four, so that a peer asked at the
first and whose answer was lost is asked again at the last (see ASK_PEER_AGAIN_AFTER)."""
ANSWER_SIZE = 2 * MAX_PAYLOAD
"""Payload bytes per RPC answering an IWANT: half of what a receiver reads in one RPC."""
RESERVED_ANSWER_KIB = 1024
"""KiB per second of IWANT answers a prover or named peer may ask for (bursts of twice that):
an honest one asks for what a lost link withheld, some frames a second at most."""
ASK_AGAIN_AFTER = 1.5
"""Seconds before an id asked for (IWANT) of a prover or named peer is asked for again: a
message named by several provers, or at several heartbeats, is fetched once, or twice if the
first answer is lost. A message this peer ignored is not marked seen, so without this it came
again for every naming (a third more copies at n = 10). An ask of a stranger holds back no ask
of a prover: a stranger naming every id first, and never answering, would hold back them all."""
ASK_PEER_AGAIN_AFTER = ASK_AGAIN_AFTER + 1.0
"""Seconds before one peer is asked for one id again: once the first ask lapses, an id is
asked of another peer naming it, not of one that named it first and did not answer. Whatever
the time of that first ask, the second after the lapse holds a heartbeat (1 s) at which the
others name the id again; and a peer that alone names it is asked again at its fourth."""
PEER_ASKS = 4 * MAX_IWANT
"""Ids a prover or named peer may have been asked for within ASK_PEER_AGAIN_AFTER; beyond, it
is asked for nothing until some lapse. Its memory is its own: naming thousands of made-up ids
cannot push out the record that it was asked for one it then withheld."""
MAX_ID_SIZE = 64
"""Bytes of a message id in an IHAVE or IWANT: ours are 32 (a sha256), 64 in hex. Longer ones
are dropped and the RPC charged: each id named is remembered for a while."""
MAX_IHAVE = 1024
"""Message ids looked up per IHAVE: a heartbeat's gossip names the last three windows' ids."""
CONTROL_ENTRIES_PER_TOPIC = 4
"""Control entries an RPC may carry per topic of ours before it is charged."""
CONTROL_RATE, CONTROL_BURST = 10.0, 30.0
"""RPCs carrying IHAVE or IWANT taken from one peer per second: an honest one sends about one
per heartbeat (1 s) and topic. py-libp2p's own limit (10/s) logged a WARNING per excess
request, 50,000 lines for one 100 KB RPC; ours charges the sender instead."""


def _drop_long_ids(lists: Iterable[MutableSequence[bytes]]) -> bool:
    """Remove from each list the ids longer than MAX_ID_SIZE; whether there were any."""
    dropped = False
    for ids in lists:
        kept = [mid for mid in ids if len(mid) <= MAX_ID_SIZE]
        if len(kept) < len(ids):
            dropped = True
            del ids[:]
            ids.extend(kept)
    return dropped


def bounded_iwant(iwant: rpc_pb2.ControlIWant) -> rpc_pb2.ControlIWant:
    """The request's distinct ids, at most MAX_IWANT of them."""
    distinct = list(dict.fromkeys(iwant.messageIDs))[:MAX_IWANT]
    return rpc_pb2.ControlIWant(messageIDs=distinct)


class KeyedMessageCache(MessageCache):
    """py-libp2p's message cache, keyed by the pubsub's own message ids.

    py-libp2p keys it by origin and seqno whatever message ids the pubsub uses, so the IHAVEs
    it gossips name ids no receiver has seen: with our content ids every receiver asked for
    every message it was told of, and each answer was a copy it already had (some 300 per round
    per peer at n = 10, half of everything received)."""

    def __init__(self, window: int, history: int, identify: Callable[[rpc_pb2.Message], bytes]):
        super().__init__(window, history)
        self._identify = identify

    def put(self, msg: rpc_pb2.Message) -> None:
        mid = self._identify(msg)
        if mid not in self.msgs:
            self.msgs[mid] = msg
            self.history[0].append(CacheEntry(mid, msg.topicIDs))


def _first_per_topic(entries: Collection[Any], ours: Collection[str]) -> list[Any]:
    """One entry per topic of ours, the first; the rest would only repeat it."""
    chosen: dict[str, Any] = {}
    for entry in entries:
        if entry.topicID in ours:
            chosen.setdefault(entry.topicID, entry)
    return list(chosen.values())


class GuardedGossipSub(GossipSub):
    """GossipSub with control state for our topics only, no peer exchange, and tiers.

    py-libp2p records a backoff for every topic a PRUNE names and scores every topic a GRAFT
    names, ours or not, and keeps them after the sender leaves: made-up topic names grew
    memory without bound. It dials the peers a PRUNE names whatever `do_px` says, from any
    peer: peers are found through bootstrap and signed announcements only. We speak gossipsub
    v1.1, so IDONTWANT and v1.3 messages are dropped. Control entries beyond one per topic,
    and IHAVE/IWANT beyond a rate, are dropped and reported: the sender pays, not the log.

    The mesh is tiered. `provers` (the genesis keys) take their places first and are never
    pruned to make room; everyone else, `reserved` peers aside, shares `stranger_places` per
    topic. Twelve strangers that GRAFTed and forwarded nothing once pushed every honest peer
    out of each other's mesh (heartbeats pruned down to D among all members).
    """

    topics: frozenset[str] = frozenset()
    provers: frozenset[ID] = frozenset()
    reserved: frozenset[ID] = frozenset()
    """Provers and named peers: never counted among the strangers."""
    stranger_places: int = 2
    grafts_refused: int = 0
    iwants_refused: int = 0
    report: Report = staticmethod(lambda peer, reason: None)
    budget_key: Callable[[str], str] = staticmethod(lambda peer: peer)
    """Whom a stranger's control budget is kept for (its network, as the network says)."""
    spend: Callable[[str, int], bool] = staticmethod(lambda peer, units: True)
    """Whether a stranger's budget holds `units` of work more (an IWANT's answer), spending
    them if so."""
    direct_topics: frozenset[str] = frozenset()
    """Topics whose messages go from their author straight to every prover (see
    `_get_peers_to_send`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_libp2p_version()
        super().__init__(*args, **kwargs)
        self._withheld: defaultdict[str, dict[bytes, ID]] = defaultdict(dict)
        """Per topic, the ids (and authors) of messages not relayed to provers since the last
        heartbeat: its gossip names them to every prover."""
        self._asked = Remembered(ASK_AGAIN_AFTER, size=4 * MAX_IHAVE, clock=trio.current_time)
        """Ids asked of a prover or named peer lately."""
        self._asked_of: dict[ID, Remembered] = {}
        """Per prover or named peer, the ids it was asked for lately."""
        self._asked_of_strangers = Remembered(
            ASK_PEER_AGAIN_AFTER, size=8 * MAX_IHAVE, clock=trio.current_time
        )
        """(stranger, id) pairs asked lately: whom not to ask for an id again."""
        self._reserved_answers = Buckets(RESERVED_ANSWER_KIB, 2 * RESERVED_ANSWER_KIB)
        self._named: deque[defaultdict[str, dict[bytes, ID]]] = deque(maxlen=NAMED_HEARTBEATS)
        """The withheld ids of the last heartbeats, named again at each."""
        self._gossip_rpcs = Buckets(CONTROL_RATE, CONTROL_BURST)
        # Ours are the limits on IHAVE and IWANT: py-libp2p's log a WARNING per excess one.
        self.max_iwant_requests_per_second = float("inf")
        self.max_ihave_messages_per_second = float("inf")

    def attach(self, pubsub: Pubsub) -> None:
        super().attach(pubsub)
        cache = self.mcache
        self.mcache = KeyedMessageCache(
            cache.window_size, cache.history_size, pubsub.get_message_id
        )

    # Control messages

    async def handle_rpc(self, rpc: rpc_pb2.RPC, sender_peer_id: ID) -> None:
        control, ours, sender = rpc.control, self.topics, sender_peer_id.to_base58()
        entries = len(control.ihave) + len(control.iwant) + len(control.graft)
        entries += len(control.prune) + len(control.idontwant)
        ihaves = _first_per_topic(control.ihave, ours)
        iwanted = [i for iwant in control.iwant for i in iwant.messageIDs]
        # Honest RPCs carry an entry or two per topic (retried GRAFTs and PRUNEs ride along
        # with the next RPC), an IHAVE names a few windows of ids, an IWANT what one IHAVE did.
        beyond = (
            entries > CONTROL_ENTRIES_PER_TOPIC * len(ours)
            or len(iwanted) > MAX_IHAVE
            or any(len(ihave.messageIDs) > MAX_IHAVE for ihave in ihaves)
        )
        iwanted = iwanted[:MAX_IHAVE]
        for ihave in ihaves:
            del ihave.messageIDs[MAX_IHAVE:]
        if _drop_long_ids([iwanted, *(ihave.messageIDs for ihave in ihaves)]):
            beyond = True
        reserved = sender_peer_id in self.reserved
        key = sender if reserved else self.budget_key(sender)
        limited = not reserved and not self._gossip_rpcs.take(key, trio.current_time())
        if (ihaves or iwanted) and limited:
            beyond, ihaves, iwanted = True, [], []
        if beyond:
            self.report(sender, Malformed.CONTROL)
        for ihave in ihaves:
            await self.handle_ihave(ihave, sender_peer_id)
        if iwanted:
            iwant = rpc_pb2.ControlIWant(messageIDs=iwanted)
            await self.handle_iwant(bounded_iwant(iwant), sender_peer_id)
        for graft in _first_per_topic(control.graft, ours):
            await self.handle_graft(graft, sender_peer_id)
        for prune in _first_per_topic(control.prune, ours):
            await self.handle_prune(prune, sender_peer_id)

    async def handle_iwant(self, iwant_msg: rpc_pb2.ControlIWant, sender_peer_id: ID) -> None:
        """Answer an IWANT with the messages the asker's budget holds (a KiB a unit), in the
        order asked: 64 messages of 60 KiB for a 2 KiB request would make IWANT an amplifier.
        Refused whole, one asking for more than a burst never got any."""
        ids = (safe_bytes_from_hex(wire) for wire in iwant_msg.messageIDs)
        found = [msg for mid in ids if mid is not None and (msg := self.mcache.get(mid))]
        answered = 0
        for msg in found:
            if not self._may_answer(sender_peer_id, 1 + len(msg.data) // 1024):
                self.iwants_refused += 1
                break
            answered += 1
        await self._answer(sender_peer_id, found[:answered])

    async def emit_iwant(self, msg_ids: Sequence[bytes], to_peer: ID) -> None:
        """Ask for the ids not asked for lately (see ASK_AGAIN_AFTER), nor of this peer."""
        fresh = [mid for mid in msg_ids if not self._asked.holds(mid)]
        if to_peer in self.reserved:
            asked = self._asked_of.get(to_peer)
            if asked is None:
                self._asked_of = {p: a for p, a in self._asked_of.items() if p in self.reserved}
                asked = Remembered(ASK_PEER_AGAIN_AFTER, PEER_ASKS + 1, trio.current_time)
                self._asked_of[to_peer] = asked
            fresh = [mid for mid in fresh if not asked.holds(mid)]
            fresh = fresh[: max(0, PEER_ASKS - asked.live())]
            for mid in fresh:
                self._asked.add(mid)
                asked.add(mid)
        else:
            peer = bytes([len(to_peer.to_bytes())]) + to_peer.to_bytes()
            fresh = [mid for mid in fresh if not self._asked_of_strangers.holds(peer + mid)]
            for mid in fresh:
                self._asked_of_strangers.add(peer + mid)
        if fresh:
            await super().emit_iwant(fresh, to_peer)

    def _may_answer(self, peer: ID, kib: int) -> bool:
        """Whether the asker's budget holds an answer of `kib` KiB, spending it if so: a
        stranger's is its network's; a prover's its own, bounded too (a Byzantine prover asking
        for 64 full frames per 2 KiB IWANT, at line rate, would have megabytes sent for each
        kilobyte it sent)."""
        asker = peer.to_base58()
        if peer in self.reserved:
            return self._reserved_answers.take(asker, trio.current_time(), kib)
        return self.spend(asker, kib)

    async def _answer(self, peer: ID, messages: list[rpc_pb2.Message]) -> None:
        """The messages an IWANT asked for, in RPCs of at most ANSWER_SIZE bytes of payload:
        py-libp2p put them all in one, and a receiver drops a stream whose RPC is over its
        limit (six full frames were)."""
        chunk: list[rpc_pb2.Message] = []
        size = 0
        for msg in messages:
            if chunk and size + len(msg.data) > ANSWER_SIZE:
                self.send_rpc(peer, rpc_pb2.RPC(publish=chunk))
                chunk, size = [], 0
            chunk.append(msg)
            size += len(msg.data)
        if chunk:
            self.send_rpc(peer, rpc_pb2.RPC(publish=chunk))

    async def handle_prune(self, prune_msg: rpc_pb2.ControlPrune, sender_peer_id: ID) -> None:
        if len(prune_msg.peers):
            log.debug("ignoring peer exchange from %s", sender_peer_id)
            del prune_msg.peers[:]
        await super().handle_prune(prune_msg, sender_peer_id)

    # The tiered mesh

    def _get_peers_to_send(
        self,
        topic_ids: Iterable[str],
        msg_forwarder: ID,
        origin: ID,
        msg_id: bytes | None = None,
    ) -> Iterable[ID]:
        """The mesh, as py-libp2p chooses, with direct sends among provers on `direct_topics`.

        A peer's own message goes to every prover it is connected to, mesh or not. A message
        that came straight from its author, a prover, is relayed to no other prover (its author
        sent it to each one it is connected to; the next heartbeat names it to them, see
        `gossip_heartbeat`), only to the rest of the mesh: followers and strangers still get
        everything by gossip. A message that came by relay is relayed as
        before. With every prover in every mesh up to seven, each message used to reach each
        prover n - 1 times; now once, from its author.
        """
        chosen = set(super()._get_peers_to_send(topic_ids, msg_forwarder, origin, msg_id))
        topics = list(topic_ids)
        if self.pubsub is None or not all(topic in self.direct_topics for topic in topics):
            return chosen
        if origin == self.pubsub.my_id:
            subscribed = set().union(*(self.pubsub.peer_topics.get(t, ()) for t in topics))
            return chosen | (self.provers & subscribed) - {origin}
        if msg_forwarder == origin and origin in self.provers:
            if msg_id is not None:
                for topic in topics:
                    self._withheld[topic][msg_id] = origin
            return chosen - self.provers
        return chosen

    def gossip_heartbeat(self) -> defaultdict[ID, dict[str, list[bytes]]]:
        """py-libp2p's gossip (IHAVE to peers outside the mesh), and to every prover the ids of
        the messages not relayed to it since the last heartbeat.

        A prover cut off from an author while connected to others (a link down, a firewall)
        would otherwise never get that author's messages: nobody relays them to it. Named in
        an IHAVE, each is asked for (IWANT) by whoever lacks it, within one heartbeat; the
        others find every id seen and ask for nothing.
        """
        gossip = super().gossip_heartbeat()
        self._named.append(self._withheld)
        self._withheld = defaultdict(dict)
        if self.pubsub is None:
            return gossip
        withheld: defaultdict[str, dict[bytes, ID]] = defaultdict(dict)
        for window in self._named:
            for topic, authors in window.items():
                withheld[topic] |= authors
        for topic, authors in withheld.items():
            for prover in self.provers & self.pubsub.peer_topics.get(topic, set()):
                named = [mid for mid, author in authors.items() if author != prover]
                if named and prover in self.pubsub.peers:
                    held = gossip[prover].get(topic, [])
                    # The newest MAX_IHAVE: a receiver charges an IHAVE naming more.
                    gossip[prover][topic] = list(dict.fromkeys([*held, *named]))[-MAX_IHAVE:]
        return gossip

    async def _emit_control_msgs(
        self,
        peers_to_graft: dict[ID, list[str]],
        peers_to_prune: dict[ID, list[str]],
        peers_to_gossip: dict[ID, dict[str, list[bytes]]],
    ) -> None:
        """One control RPC per peer with its own GRAFTs, PRUNEs and IHAVEs.

        py-libp2p's never emptied its lists between the peers it grafted: each such peer got the
        entries of those before it too (another prover's IHAVE, first, so the receiver, which
        keeps one IHAVE per topic, dropped its own), and four grafts made the RPC a charged one.
        """
        for peer in dict.fromkeys([*peers_to_graft, *peers_to_prune, *peers_to_gossip]):
            grafts = [rpc_pb2.ControlGraft(topicID=t) for t in peers_to_graft.get(peer, [])]
            prunes = [rpc_pb2.ControlPrune(topicID=t) for t in peers_to_prune.get(peer, [])]
            ihaves = [
                rpc_pb2.ControlIHave(topicID=topic, messageIDs=ids)
                for topic, ids in peers_to_gossip.get(peer, {}).items()
            ]
            await self.emit_control_message(self.pack_control_msgs(ihaves, grafts, prunes), peer)

    def _strangers_in(self, topic: str) -> int:
        return sum(1 for peer in self.mesh.get(topic, ()) if peer not in self.reserved)

    def _provers_in(self, topic: str) -> int:
        return sum(1 for peer in self.mesh.get(topic, ()) if peer in self.provers)

    async def handle_graft(self, graft_msg: rpc_pb2.ControlGraft, sender_peer_id: ID) -> None:
        topic, mesh = graft_msg.topicID, self.mesh.get(graft_msg.topicID)
        if sender_peer_id not in self.reserved and self._check_back_off(sender_peer_id, topic):
            # Told to back off, and back already: an honest peer waits. Charged, not answered
            # (py-libp2p logged a WARNING and sent another PRUNE, each time).
            self.report(sender_peer_id.to_base58(), Malformed.CONTROL)
            return
        if (
            mesh is not None
            and sender_peer_id not in mesh
            and sender_peer_id not in self.reserved
            and self._strangers_in(topic) >= self.stranger_places
        ):
            log.debug("GRAFT from %s refused: the strangers' places are taken", sender_peer_id)
            self.grafts_refused += 1
            self._add_back_off(sender_peer_id, topic, False)
            await self.emit_prune(topic, sender_peer_id, False, False)
            return
        await super().handle_graft(graft_msg, sender_peer_id)

    async def on_peer_subscribed(self, peer_id: ID, topic: str) -> None:
        """Graft a newly subscribed peer at once if its tier has room: a prover up to D
        provers, a stranger up to the strangers' places (py-libp2p counted everyone to D_low)."""
        mesh = self.mesh.get(topic)
        if mesh is None or peer_id in mesh or peer_id in self.direct_peers:
            await super().on_peer_subscribed(peer_id, topic)
            return
        if not self._is_gossipsub_peer(peer_id) or self._check_back_off(peer_id, topic):
            return
        if peer_id in self.provers:
            room = self._provers_in(topic) < self.degree
        elif peer_id in self.reserved:
            room = len(mesh) < self.degree_low
        else:
            room = self._strangers_in(topic) < self.stranger_places
        if room:
            self._graft(peer_id, topic)
            await self.emit_graft(topic, peer_id)

    def _graft(self, peer: ID, topic: str) -> None:
        self.mesh[topic].add(peer)
        self._notify_mesh_peer_added(peer, topic)

    def mesh_heartbeat(
        self,
    ) -> tuple[defaultdict[ID, list[str]], defaultdict[ID, list[str]]]:
        """Each heartbeat, each topic's mesh tended by tier (see `_tend`); no opportunistic
        grafting (py-libp2p grafted two more peers per topic on every heartbeat)."""
        to_graft: defaultdict[ID, list[str]] = defaultdict(list)
        to_prune: defaultdict[ID, list[str]] = defaultdict(list)
        subscribed = self.pubsub.peer_topics if self.pubsub is not None else {}
        for topic, mesh in self.mesh.items():
            candidates = [
                peer
                for peer in subscribed.get(topic, ())
                if peer not in mesh
                and peer not in self.direct_peers
                and self._is_gossipsub_peer(peer)
                and not self._check_back_off(peer, topic)
            ]
            grafts, prunes = self._tend(mesh, candidates)
            for peer in grafts:
                self._graft(peer, topic)
                to_graft[peer].append(topic)
            for peer in prunes:
                mesh.discard(peer)
                to_prune[peer].append(topic)
        return to_graft, to_prune

    def _tend(self, mesh: set[ID], candidates: list[ID]) -> tuple[list[ID], list[ID]]:
        """Whom to graft and prune: provers up to D when below D_low and down to D above
        D_high; strangers over their places pruned, and grafted only into a mesh short of
        D_low (a follower's with no prover subscribed, say)."""
        provers = [peer for peer in mesh if peer in self.provers]
        strangers = [peer for peer in mesh if peer not in self.reserved]
        grafts: list[ID] = []
        prunes: list[ID] = []
        if len(provers) < self.degree_low:
            free = [peer for peer in candidates if peer in self.provers]
            grafts += _some(free, self.degree - len(provers))
        elif len(provers) > self.degree_high:
            prunes += _some(provers, len(provers) - self.degree)
        if len(strangers) > self.stranger_places:
            prunes += _some(strangers, len(strangers) - self.stranger_places)
        elif len(mesh) + len(grafts) < self.degree_low:
            room = min(self.stranger_places - len(strangers), self.degree_low - len(mesh))
            grafts += _some([peer for peer in candidates if peer not in self.reserved], room)
        return grafts, prunes


def _some(peers: list[ID], count: int) -> list[ID]:
    """`count` of `peers` at random (all of them if fewer): made-up ids cannot be ground to
    be chosen, or spared."""
    return random.sample(peers, min(max(count, 0), len(peers)))
