"""A hostile peer floods every topic with bad messages: they are rejected or ignored, counted,
and the honest provers keep finalizing."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2pnode.chain.crypto import Keypair, liveness_statement, sign, vote_statement
from p2pnode.chain.types import Certificate, CertKind, Collected, Frame, Vote, digest
from p2pnode.local.homes import generate_testnet
from p2pnode.net import NetConfig, Topic, Verdict, open_network
from p2pnode.wire.codec import Confirmation, Liveness, Proposal, VoteMsg, encode
from tests.peers import Peer, cluster, ranks, start_on_free_ports, wait_for

DIFFICULTY = 300


class Deaf:
    """The hostile peer's judge: it forwards nothing of anyone else's."""

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        return Verdict.IGNORE


def junk_frame(rank: int, prover: bytes) -> Frame:
    return Frame(
        rank,
        bytes(32),
        prover,
        1,
        Collected.of(rank, ()).root,
        (),
        1,
        bytes(100),
        bytes(100),
        bytes(64),
    )


Payloads = dict[Topic, list[bytes]]


def bad_messages(
    network: str, outsider: Keypair, insider: Keypair, rank: int
) -> dict[str, Payloads]:
    """What each hostile peer sends: the insider (a prover gone bad) far-future, forged and
    wrongly signed messages; the outsider (no prover) its own messages, junk and oversized
    payloads. Every payload is distinct: gossip drops a second copy of the same bytes."""
    far = rank + 1000
    root = Collected.of(rank, ()).root
    future = Liveness(
        far,
        insider.public,
        root,
        sign(insider, network, liveness_statement(far, insider.public, root)),
    )
    forged = Liveness(rank, insider.public, root, bytes(64))
    stranger = Liveness(
        rank,
        outsider.public,
        root,
        sign(outsider, network, liveness_statement(rank, outsider.public, root)),
    )
    frame_id = digest(b"nothing")
    far_vote = Vote(
        far,
        0,
        frame_id,
        insider.public,
        insider.public,
        sign(insider, network, vote_statement(far, 0, frame_id)),
    )
    stranger_vote = Vote(
        rank,
        0,
        frame_id,
        outsider.public,
        outsider.public,
        sign(outsider, network, vote_statement(rank, 0, frame_id)),
    )
    fake_commit = junk_frame(rank, insider.public).with_certificate(
        Certificate(CertKind.COMMIT, 0, (0,), (bytes(64),))
    )

    def junk(topic: Topic) -> bytes:
        return b"\xff\x00 not cbor on " + topic.value.encode()

    def huge(topic: Topic) -> bytes:
        return topic.value.encode().ljust(58 * 1024, b"\0")  # over the codec's limit only

    # Ignored ones first: rejects soon get a sender banned, after which it is not heard.
    insider_says: Payloads = {
        Topic.LIVENESS: [encode(future), encode(forged)],
        Topic.PROPOSALS: [encode(Proposal(junk_frame(far, insider.public)))],
        Topic.VOTES: [encode(VoteMsg(far_vote))],
        Topic.CONFIRMATIONS: [encode(Confirmation(fake_commit, insider.public, bytes(64)))],
    }
    outsider_says: Payloads = {
        Topic.LIVENESS: [encode(stranger), junk(Topic.LIVENESS), huge(Topic.LIVENESS)],
        Topic.PROPOSALS: [
            encode(Proposal(junk_frame(rank, outsider.public))),
            junk(Topic.PROPOSALS),
        ],
        Topic.VOTES: [encode(VoteMsg(stranger_vote)), junk(Topic.VOTES)],
        Topic.CONFIRMATIONS: [junk(Topic.CONFIRMATIONS)],
        Topic.MUTATIONS: [junk(Topic.MUTATIONS), huge(Topic.MUTATIONS)],
    }
    return {"insider": insider_says, "outsider": outsider_says}


async def test_hostile_messages_are_rejected_and_counted(tmp_path: Path) -> None:
    with trio.fail_after(180):
        insider, outsider = Keypair.generate(), Keypair.generate()
        genesis, homes = generate_testnet(
            tmp_path, 4, difficulty=DIFFICULTY, other_provers=[insider]
        )
        async with cluster() as group, AsyncExitStack() as stack:
            peers: list[Peer] = await start_on_free_ports(group, homes)
            bootstrap = peers[0].addrs()[0]
            await wait_for(lambda: _at_least(peers, 3), timeout=90, what="rank 3")
            hostiles = [
                await stack.enter_async_context(
                    open_network(
                        NetConfig(genesis.network, keypair.seed, bootstrap=(bootstrap,)), Deaf()
                    )
                )
                for keypair in (outsider, insider)
            ]
            # Meshed on every topic: gossip to a peer outside a topic's mesh is never sent.
            await wait_for(
                lambda: all(min(h.mesh_sizes().values()) > 0 for h in hostiles),
                timeout=30,
                what="hostile peers to join every topic's mesh",
            )
            start = max(await ranks(peers))
            bad = bad_messages(genesis.network, outsider, insider, start + 1)
            for hostile, says in zip(hostiles, (bad["outsider"], bad["insider"]), strict=True):
                for index in range(max(len(payloads) for payloads in says.values())):
                    for topic, payloads in says.items():  # every topic before any ban
                        if index < len(payloads):
                            await hostile.publish(topic, payloads[index])
            await wait_for(lambda: _at_least(peers, start + 5), timeout=90, what="5 more ranks")
            statuses = [await peer.status() for peer in peers]
            counters = [row for s in statuses for row in s.counters]
            for name in ("liveness", "proposals", "votes", "confirmations", "mutations"):
                assert sum(c.reject for c in counters if c.topic == name) > 0, name
            ignored = sum(c.ignore for c in counters if c.topic == "liveness")
            assert ignored > 0, "far-future: ignored"
            reasons = " ".join(reason for s in statuses for reason, _ in s.rejected)
            for reason in ("undecodable", "not a prover", "bad signature", "invalid certificate"):
                assert reason in reasons, reason
            ids = {s.peer_id for s in statuses}
            for status in statuses:  # the honest peers never turned on each other
                assert ids - {status.peer_id} <= set(status.peers)


async def _at_least(peers: list[Peer], rank: int) -> bool:
    return min(await ranks(peers)) >= rank
