"""Seeded random gossipsub RPCs: every field of every part, valid, tampered or junk."""

from __future__ import annotations

import random

from libp2p.pubsub.pb import rpc_pb2

from p2pnode.chaos.raw import Attacker


class RpcFuzzer:
    """Draws RPCs for one attacker; `topics` are the victim's, mixed with made-up ones."""

    def __init__(self, rng: random.Random, evil: Attacker, topics: list[str]) -> None:
        self.rng = rng
        self.evil = evil
        self.topics = topics

    def _bytes(self, most: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 8, 32, self.rng.randint(0, most))))

    def _topic(self) -> str:
        roll = self.rng.random()
        if roll < 0.7:
            return self.rng.choice(self.topics)
        if roll < 0.9:
            return f"/made/up/{self.rng.randint(0, 10**6)}"
        return "x" * self.rng.randint(0, 300)

    def _message(self) -> rpc_pb2.Message:
        msg = self.evil.message(self._topic(), self._bytes(2048))
        for name in ("from_id", "seqno", "signature", "key", "data"):
            if self.rng.random() < 0.15:
                setattr(msg, name, self._bytes())
        if self.rng.random() < 0.1:
            msg.topicIDs.extend(self._topic() for _ in range(self.rng.randint(0, 3)))
        return msg

    def _ids(self) -> list[bytes]:
        return [self._bytes(40) for _ in range(self.rng.choice((0, 1, 5, 500)))]

    def _control(self) -> rpc_pb2.ControlMessage:
        rng, control = self.rng, rpc_pb2.ControlMessage()
        for _ in range(rng.randint(0, 3)):
            kind = rng.randrange(5)
            if kind == 0:
                control.ihave.append(
                    rpc_pb2.ControlIHave(topicID=self._topic(), messageIDs=self._ids())
                )
            elif kind == 1:
                control.iwant.append(rpc_pb2.ControlIWant(messageIDs=self._ids()))
            elif kind == 2:
                control.graft.append(rpc_pb2.ControlGraft(topicID=self._topic()))
            elif kind == 3:
                peers = [rpc_pb2.PeerInfo(peerID=self._bytes(), signedPeerRecord=self._bytes())]
                backoff = rng.choice((0, 1, 60, 2**63 - 1))
                control.prune.append(
                    rpc_pb2.ControlPrune(topicID=self._topic(), peers=peers, backoff=backoff)
                )
            else:
                control.idontwant.append(rpc_pb2.ControlIDontWant(messageIDs=self._ids()))
        return control

    def rpc(self) -> rpc_pb2.RPC:
        rng, rpc = self.rng, rpc_pb2.RPC()
        if rng.random() < 0.3:
            count = rng.choice((1, 2, 50))
            rpc.subscriptions.extend(
                rpc_pb2.RPC.SubOpts(subscribe=rng.random() < 0.7, topicid=self._topic())
                for _ in range(count)
            )
        if rng.random() < 0.6:
            rpc.publish.extend(self._message() for _ in range(rng.choice((1, 1, 2, 10))))
        if rng.random() < 0.4:
            rpc.control.CopyFrom(self._control())
        if rng.random() < 0.05:
            rpc.senderRecord = self._bytes(300)
        return rpc

    def junk(self) -> bytes:
        """Bytes that are not an RPC: a bad length, a truncated frame, or garbage."""
        kind = self.rng.randrange(3)
        if kind == 0:
            return b"\xff" * 10  # a varint that never ends
        if kind == 1:
            return bytes([100]) + self._bytes(50)[:10]  # announces 100 bytes, sends fewer
        return bytes([20]) + self.rng.randbytes(20)
