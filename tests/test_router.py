"""The tiered gossipsub router, driven without a network: provers keep their mesh places,
strangers share a few, control messages beyond their bounds are charged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio
import trio.testing
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2

from p2pnode.net.guards import Malformed, message_id
from p2pnode.net.router import (
    ANSWER_SIZE,
    ASK_AGAIN_AFTER,
    ASK_PEER_AGAIN_AFTER,
    MAX_ID_SIZE,
    MAX_IHAVE,
    NAMED_HEARTBEATS,
    PEER_ASKS,
    RESERVED_ANSWER_KIB,
    GuardedGossipSub,
    KeyedMessageCache,
)

TOPIC = "votes"
PROVERS = [ID(b"prover %d" % index) for index in range(3)]
STRANGERS = [ID(b"stranger %d" % index) for index in range(12)]


class _Pubsub:
    def __init__(self, subscribed: list[ID]) -> None:
        self.peer_topics = {TOPIC: set(subscribed)}
        self.my_id = PROVERS[0]


def _router(mesh: list[ID], subscribed: list[ID]) -> tuple[GuardedGossipSub, list[Any]]:
    """A router of a 4-prover network (D = 3) whose emitted control messages are recorded."""
    router = GuardedGossipSub(
        protocols=[PROTOCOL_ID_V11], degree=3, degree_low=3, degree_high=12, heartbeat_interval=1
    )
    router.pubsub = _Pubsub(subscribed)  # type: ignore[assignment]
    router.peer_protocol = dict.fromkeys(subscribed, PROTOCOL_ID_V11)
    router.mesh = {TOPIC: set(mesh)}
    router.topics = frozenset({TOPIC})
    router.provers = router.reserved = frozenset(PROVERS)
    router.stranger_places = 2
    sent: list[Any] = []

    async def emit_prune(topic: str, to_peer: ID, do_px: bool, is_unsubscribe: bool) -> None:
        sent.append(("prune", topic, to_peer))

    async def emit_graft(topic: str, to_peer: ID) -> None:
        sent.append(("graft", topic, to_peer))

    router.emit_prune = emit_prune  # type: ignore[method-assign]
    router.emit_graft = emit_graft  # type: ignore[method-assign,assignment]
    return router, sent


def _graft(topic: str = TOPIC) -> rpc_pb2.ControlGraft:
    return rpc_pb2.ControlGraft(topicID=topic)


async def test_strangers_grafting_in_take_only_their_places_and_never_a_prover_s() -> None:
    router, sent = _router(PROVERS, PROVERS + STRANGERS)
    for stranger in STRANGERS:
        await router.handle_graft(_graft(), stranger)
    mesh = router.mesh[TOPIC]
    assert set(PROVERS) <= mesh
    assert len(mesh - set(PROVERS)) == 2
    assert [what for what, _, _ in sent] == ["prune"] * 10
    for _ in range(5):
        grafts, prunes = router.mesh_heartbeat()
        assert not prunes
        assert not grafts
    assert set(PROVERS) <= router.mesh[TOPIC], "the heartbeat prunes no prover either"


async def test_a_prover_graft_is_taken_however_many_strangers_are_in() -> None:
    router, sent = _router([PROVERS[0], *STRANGERS[:2]], PROVERS + STRANGERS)
    await router.handle_graft(_graft(), PROVERS[1])
    assert PROVERS[1] in router.mesh[TOPIC]
    assert sent == []


def test_the_heartbeat_grafts_missing_provers_first_and_prunes_strangers_over_their_places() -> (
    None
):
    router, _ = _router(STRANGERS[:5], PROVERS + STRANGERS)
    grafts, prunes = router.mesh_heartbeat()
    assert set(grafts) == set(PROVERS)
    assert len(prunes) == 3
    assert set(prunes) <= set(STRANGERS[:5])
    mesh = router.mesh[TOPIC]
    assert set(PROVERS) <= mesh
    assert len(mesh) == 5


def test_a_mesh_without_provers_takes_strangers_up_to_their_places() -> None:
    router, _ = _router([], STRANGERS)
    grafts, _ = router.mesh_heartbeat()
    assert len(grafts) == 2
    assert len(router.mesh[TOPIC]) == 2


async def test_a_stranger_subscribing_is_grafted_only_into_a_free_place() -> None:
    router, sent = _router([*PROVERS, STRANGERS[0]], PROVERS + STRANGERS)
    await router.on_peer_subscribed(STRANGERS[1], TOPIC)
    await router.on_peer_subscribed(STRANGERS[2], TOPIC)
    assert [(what, peer) for what, _, peer in sent] == [("graft", STRANGERS[1])]
    assert STRANGERS[2] not in router.mesh[TOPIC]


async def test_control_beyond_its_bounds_is_reported_and_handled_only_up_to_them() -> None:
    router, _ = _router(PROVERS, PROVERS + STRANGERS)
    reports: list[tuple[str, Malformed]] = []
    router.report = lambda peer, reason: reports.append((peer, reason))
    wanted: list[Any] = []

    async def handle_iwant(iwant: rpc_pb2.ControlIWant, sender: ID) -> None:
        wanted.append(list(iwant.messageIDs))

    router.handle_iwant = handle_iwant  # type: ignore[method-assign,assignment]
    sender = STRANGERS[0]
    empty = [rpc_pb2.ControlIWant() for _ in range(5000)]
    await router.handle_rpc(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(iwant=empty)), sender)
    assert reports == [(sender.to_base58(), Malformed.CONTROL)]
    assert wanted == [], "nothing was asked for"
    many = rpc_pb2.ControlIWant(messageIDs=[b"%d" % i for i in range(MAX_IHAVE + 1)])
    await router.handle_rpc(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(iwant=[many])), sender)
    assert len(reports) == 2
    assert len(wanted) == 1
    assert len(wanted[0]) == 64, "the first 64 distinct are answered"


async def test_ids_longer_than_ours_are_dropped_and_charged() -> None:
    """Each id named is remembered for a while: one of 200 KB, a thousand times, held a
    gigabyte. Ids are 32 bytes (64 in hex); longer ones go, and the RPC is charged."""
    router, _ = _router(PROVERS, PROVERS + STRANGERS)
    reports: list[tuple[str, Malformed]] = []
    router.report = lambda peer, reason: reports.append((peer, reason))
    named: list[list[bytes]] = []

    async def handle_ihave(ihave: rpc_pb2.ControlIHave, sender: ID) -> None:
        named.append(list(ihave.messageIDs))

    router.handle_ihave = handle_ihave  # type: ignore[method-assign,assignment]
    ids = [bytes(32), bytes(MAX_ID_SIZE), bytes(MAX_ID_SIZE + 1), bytes(200_000)]
    ihave = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids)
    await router.handle_rpc(rpc_pb2.RPC(control=rpc_pb2.ControlMessage(ihave=[ihave])), PROVERS[1])
    assert named == [ids[:2]]
    assert reports == [(PROVERS[1].to_base58(), Malformed.CONTROL)]


async def test_gossip_rpcs_beyond_their_rate_are_reported_not_logged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    router, _ = _router(PROVERS, PROVERS + STRANGERS)
    reports: list[tuple[str, Malformed]] = []
    router.report = lambda peer, reason: reports.append((peer, reason))
    asked: list[ID] = []

    async def handle_ihave(ihave: rpc_pb2.ControlIHave, sender: ID) -> None:
        asked.append(sender)

    router.handle_ihave = handle_ihave  # type: ignore[method-assign,assignment]
    rpc = rpc_pb2.RPC(control=rpc_pb2.ControlMessage(ihave=[rpc_pb2.ControlIHave(topicID=TOPIC)]))
    for _ in range(100):
        await router.handle_rpc(rpc, STRANGERS[0])
    assert len(asked) == 30, "a burst of 30, then nothing within the same instant"
    assert len(reports) == 70
    await trio.sleep(1)
    await router.handle_rpc(rpc, STRANGERS[0])
    assert len(asked) == 31, "ten more a second later"


async def test_a_stranger_grafting_again_while_told_to_back_off_is_charged_not_answered() -> None:
    router, sent = _router([*PROVERS, *STRANGERS[:2]], PROVERS + STRANGERS)
    reports: list[tuple[str, Malformed]] = []
    router.report = lambda peer, reason: reports.append((peer, reason))
    await router.handle_graft(_graft(), STRANGERS[5])
    assert [what for what, _, _ in sent] == ["prune"]
    assert reports == []
    for _ in range(3):
        await router.handle_graft(_graft(), STRANGERS[5])
    assert [what for what, _, _ in sent] == ["prune"], "no PRUNE again"
    assert reports == [(STRANGERS[5].to_base58(), Malformed.CONTROL)] * 3


def _direct(mesh: list[ID]) -> GuardedGossipSub:
    """A router of prover 0 whose mesh is `mesh`, every prover and two strangers subscribed."""
    router, _ = _router(mesh, PROVERS + STRANGERS[:2])
    router.direct_topics = frozenset({TOPIC})
    return router


def _to(router: GuardedGossipSub, forwarder: ID, origin: ID, topic: str = TOPIC) -> set[ID]:
    return set(router._get_peers_to_send([topic], msg_forwarder=forwarder, origin=origin))


def test_a_prover_sends_its_own_message_to_every_prover_mesh_or_not() -> None:
    router = _direct([PROVERS[1], STRANGERS[0]])
    assert _to(router, PROVERS[0], PROVERS[0]) == {PROVERS[1], PROVERS[2], STRANGERS[0]}


def test_what_came_from_its_prover_author_is_relayed_to_no_other_prover() -> None:
    router = _direct([PROVERS[1], PROVERS[2], STRANGERS[0]])
    assert _to(router, PROVERS[1], PROVERS[1]) == {STRANGERS[0]}


def test_what_came_by_relay_or_from_a_stranger_is_relayed_as_before() -> None:
    router = _direct([PROVERS[1], PROVERS[2], STRANGERS[0]])
    assert _to(router, PROVERS[1], PROVERS[2]) == {STRANGERS[0]}  # mesh minus forwarder, origin
    assert _to(router, STRANGERS[1], PROVERS[2]) == {PROVERS[1], STRANGERS[0]}
    assert _to(router, STRANGERS[0], STRANGERS[0]) == {PROVERS[1], PROVERS[2]}


def test_other_topics_keep_plain_gossip() -> None:
    router = _direct([PROVERS[1], PROVERS[2], STRANGERS[0]])
    router.direct_topics = frozenset()
    assert _to(router, PROVERS[1], PROVERS[1]) == {PROVERS[2], STRANGERS[0]}
    assert _to(router, PROVERS[0], PROVERS[0]) == {PROVERS[1], PROVERS[2], STRANGERS[0]}


class _Seen:
    def __init__(self, ids: set[bytes]) -> None:
        self.ids = ids

    def has(self, mid: bytes) -> bool:
        return mid in self.ids


async def test_gossip_names_messages_by_the_ids_receivers_keep_so_none_is_asked_for_again() -> None:
    identify = message_id("peers")
    sender, _ = _router([], PROVERS)
    pubsub = _Pubsub(PROVERS)
    pubsub.get_message_id = identify  # type: ignore[attr-defined]
    sender.attach(pubsub)  # type: ignore[arg-type]
    msg = rpc_pb2.Message(from_id=PROVERS[1].to_bytes(), seqno=b"\x01", data=b"x", topicIDs=[TOPIC])
    sender.mcache.put(msg)
    assert sender.mcache.window(TOPIC) == [identify(msg)]
    assert sender.mcache.get(identify(msg)) is msg
    receiver, _ = _router([], PROVERS)
    receiver.pubsub.seen_messages = _Seen({identify(msg)})  # type: ignore[union-attr]
    asked: list[Any] = []

    async def emit_iwant(ids: Sequence[bytes], to_peer: ID) -> None:
        asked.append(ids)

    receiver.emit_iwant = emit_iwant  # type: ignore[method-assign,assignment]
    ihave = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=sender.mcache.window(TOPIC))
    await receiver.handle_ihave(ihave, PROVERS[0])
    assert asked == []  # seen already: a copy would only be a duplicate


def test_what_is_not_relayed_to_provers_is_named_to_each_at_the_next_heartbeats() -> None:
    router = _direct([PROVERS[1], PROVERS[2], STRANGERS[0]])
    router.pubsub.peers = set(PROVERS + STRANGERS[:2])  # type: ignore[union-attr]
    router.mcache = KeyedMessageCache(3, 5, lambda msg: msg.data)
    list(router._get_peers_to_send([TOPIC], PROVERS[1], PROVERS[1], msg_id=b"from 1"))
    list(router._get_peers_to_send([TOPIC], STRANGERS[0], STRANGERS[0], msg_id=b"relayed"))
    gossip = router.gossip_heartbeat()
    # Its author has it; the other prover may not (its link to the author may be down).
    assert gossip[PROVERS[2]][TOPIC] == [b"from 1"]
    assert TOPIC not in gossip.get(PROVERS[1], {})
    assert all(TOPIC not in gossip.get(s, {}) for s in STRANGERS)
    for _ in range(NAMED_HEARTBEATS - 1):
        assert router.gossip_heartbeat()[PROVERS[2]][TOPIC] == [b"from 1"], "named again"
    assert not any(router.gossip_heartbeat().values()), "then no more"


async def test_each_peer_s_heartbeat_rpc_holds_its_own_control_entries_only() -> None:
    router, _ = _router([], PROVERS)
    sent: dict[ID, rpc_pb2.ControlMessage] = {}

    async def emit(control: rpc_pb2.ControlMessage, to_peer: ID) -> None:
        sent[to_peer] = control

    router.emit_control_message = emit  # type: ignore[method-assign,assignment]
    gossip = {PROVERS[1]: {TOPIC: [b"for 1"]}, PROVERS[2]: {TOPIC: [b"for 2"]}}
    grafts = {PROVERS[1]: [TOPIC], PROVERS[2]: [TOPIC]}
    await router._emit_control_msgs(grafts, {STRANGERS[0]: [TOPIC]}, gossip)
    for prover, wanted in ((PROVERS[1], b"for 1"), (PROVERS[2], b"for 2")):
        assert [list(i.messageIDs) for i in sent[prover].ihave] == [[wanted]]
        assert len(sent[prover].graft) == 1
    assert len(sent[STRANGERS[0]].prune) == 1
    assert not sent[STRANGERS[0]].ihave


def _answering(count: int, size: int) -> tuple[GuardedGossipSub, rpc_pb2.ControlIWant, list[Any]]:
    """A router holding `count` cached messages of `size` bytes, an IWANT asking for all of
    them, and the list its answers go to."""
    router, _ = _router([], PROVERS)
    router.reserved = frozenset(PROVERS)
    router.mcache = KeyedMessageCache(3, 5, lambda msg: msg.seqno)
    for index in range(count):
        seqno = index.to_bytes(2, "big")
        router.mcache.put(rpc_pb2.Message(seqno=seqno, data=bytes(size), topicIDs=[TOPIC]))
    answers: list[Any] = []
    router.send_rpc = lambda peer, rpc: answers.append(rpc)  # type: ignore[method-assign,assignment,misc]
    wanted = [index.to_bytes(2, "big") for index in range(count)]
    return router, rpc_pb2.ControlIWant(messageIDs=wanted), answers


async def test_an_iwant_is_answered_in_rpcs_a_receiver_reads() -> None:
    router, ask, answers = _answering(6, 60 * 1024)
    await router.handle_iwant(ask, PROVERS[1])
    assert sum(len(rpc.publish) for rpc in answers) == 6
    assert all(sum(len(m.data) for m in rpc.publish) <= ANSWER_SIZE for rpc in answers)


async def test_a_prover_asking_for_more_than_its_answer_budget_gets_what_it_holds(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Refused whole, an ask for more than a burst (a peer back from an outage under load)
    never got anything, however often asked. (Virtual time: the budget refills as it passes.)"""
    router, ask, answers = _answering(64, 48 * 1024)
    await router.handle_iwant(ask, PROVERS[1])  # 3 MiB asked for at once
    first = sum(len(m.data) for rpc in answers for m in rpc.publish)
    fitting = 2 * RESERVED_ANSWER_KIB // (1 + 48)  # a burst, at a KiB a unit, one more each
    assert first == fitting * 48 * 1024
    for _ in range(9):
        await router.handle_iwant(ask, PROVERS[1])
    assert sum(len(m.data) for rpc in answers for m in rpc.publish) == first
    assert router.iwants_refused == 10


def test_a_prover_flooding_messages_is_named_in_ihaves_a_receiver_takes() -> None:
    """A Byzantine prover sends thousands of messages a heartbeat: what each peer names to the
    other provers stays within the IHAVE a receiver takes uncharged."""
    router = _direct([PROVERS[1], PROVERS[2]])
    router.pubsub.peers = set(PROVERS)  # type: ignore[union-attr]
    for index in range(3 * MAX_IHAVE):
        mid = index.to_bytes(4, "big")
        list(router._get_peers_to_send([TOPIC], PROVERS[1], PROVERS[1], msg_id=mid))
    named = router.gossip_heartbeat()[PROVERS[2]][TOPIC]
    assert len(named) == MAX_IHAVE
    assert named[-1] == (3 * MAX_IHAVE - 1).to_bytes(4, "big"), "the newest are kept"


async def test_an_id_named_by_several_provers_is_asked_for_once_until_a_while_passes(
    mock_clock: trio.testing.MockClock,
) -> None:
    router, _ = _router([], PROVERS)
    router.pubsub.seen_messages = _Seen(set())  # type: ignore[union-attr]
    asked: list[tuple[ID, list[bytes]]] = []

    async def emit_control_message(control: rpc_pb2.ControlMessage, to_peer: ID) -> None:
        asked.extend((to_peer, list(iwant.messageIDs)) for iwant in control.iwant)

    router.emit_control_message = emit_control_message  # type: ignore[method-assign,assignment]
    named = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"ignored here", b"new"])
    await router.handle_ihave(named, PROVERS[1])
    await router.handle_ihave(named, PROVERS[2])
    assert asked == [(PROVERS[1], [b"ignored here", b"new"])]
    mock_clock.jump(ASK_AGAIN_AFTER)
    await router.handle_ihave(named, PROVERS[2])
    assert asked[1:] == [(PROVERS[2], [b"ignored here", b"new"])], "the answer may be lost"


async def _asks_for(router: GuardedGossipSub, wanted: bytes) -> list[ID]:
    """Whom the router asks for `wanted` from now on, in order."""
    router.pubsub.seen_messages = _Seen(set())  # type: ignore[union-attr]
    asked: list[ID] = []

    async def emit_control_message(control: rpc_pb2.ControlMessage, to_peer: ID) -> None:
        asked.extend(to_peer for iwant in control.iwant if wanted in iwant.messageIDs)

    router.emit_control_message = emit_control_message  # type: ignore[method-assign,assignment]
    return asked


async def test_a_prover_naming_thousands_of_ids_is_not_asked_again_for_one_it_withheld(
    mock_clock: trio.testing.MockClock,
) -> None:
    """Its record of asks is its own and bounded: flooding made-up ids pushed out the record
    that it was asked for one it withheld, so it was asked again, first, at every lapse."""
    router, _ = _router([], PROVERS)
    asked = await _asks_for(router, b"lost")
    byzantine, honest = PROVERS[1], PROVERS[2]
    named = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"lost"])
    await router.handle_ihave(named, byzantine)
    for flood in range(8):
        ids = [bytes([flood]) + i.to_bytes(2, "big") for i in range(MAX_IHAVE)]
        await router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=ids), byzantine)
    mock_clock.jump(ASK_AGAIN_AFTER)
    await router.handle_ihave(named, byzantine)
    await router.handle_ihave(named, honest)
    assert asked == [byzantine, honest]


async def test_a_prover_is_asked_for_a_bounded_number_of_ids_at_a_time(
    mock_clock: trio.testing.MockClock,
) -> None:
    router, _ = _router([], PROVERS)
    await _asks_for(router, b"")
    ids: list[bytes] = []

    async def emit_iwant(msg_ids: Sequence[bytes], to_peer: ID) -> None:
        ids.extend(msg_ids)

    router.emit_control_message = lambda control, to_peer: emit_iwant(  # type: ignore[method-assign,assignment]
        [i for iwant in control.iwant for i in iwant.messageIDs], to_peer
    )
    many = [i.to_bytes(2, "big") for i in range(MAX_IHAVE)]
    await router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=many), PROVERS[1])
    assert len(ids) == PEER_ASKS
    mock_clock.jump(ASK_PEER_AGAIN_AFTER)
    await router.handle_ihave(rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=many), PROVERS[1])
    assert len(ids) == 2 * PEER_ASKS


async def test_one_peer_alone_naming_an_id_is_asked_again_if_its_answer_was_lost(
    mock_clock: trio.testing.MockClock,
) -> None:
    router, _ = _router([], PROVERS)
    asked = await _asks_for(router, b"x")
    named = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"x"])
    for _ in range(NAMED_HEARTBEATS):  # the heartbeats at which a relay names it
        await router.handle_ihave(named, PROVERS[2])
        mock_clock.jump(1.0)
    assert asked == [PROVERS[2], PROVERS[2]]


async def test_who_names_an_id_first_and_never_answers_holds_back_no_other_ask(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A stranger (or a Byzantine prover) naming every id first, again and again, and never
    answering, kept each id from being asked of the provers that named it too."""
    router, _ = _router([], PROVERS + STRANGERS)
    router.pubsub.seen_messages = _Seen(set())  # type: ignore[union-attr]
    asked: list[ID] = []

    async def emit_control_message(control: rpc_pb2.ControlMessage, to_peer: ID) -> None:
        asked.extend(to_peer for _ in control.iwant)

    router.emit_control_message = emit_control_message  # type: ignore[method-assign,assignment]
    named = rpc_pb2.ControlIHave(topicID=TOPIC, messageIDs=[b"lost"])
    await router.handle_ihave(named, STRANGERS[0])
    await router.handle_ihave(named, PROVERS[1])
    assert asked == [STRANGERS[0], PROVERS[1]], "a stranger's ask holds back no prover's"
    mock_clock.jump(ASK_AGAIN_AFTER)
    for namer in (PROVERS[1], STRANGERS[0], PROVERS[2]):
        await router.handle_ihave(named, namer)
    assert asked[2:] == [PROVERS[2]], "asked of another prover, not again of the one that failed"
