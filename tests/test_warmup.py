"""The discriminant of the top prover's coming proof is derived from its liveness, once."""

from __future__ import annotations

from dataclasses import replace

import pytest
import trio
import trio.testing

from p2pnode.chain import vdf
from p2pnode.chain.genesis import LeaderOrder, frame_challenge, leader_order
from p2pnode.chain.messages import Liveness
from p2pnode.chain.types import Frame
from p2pnode.chain.warmup import Warmup
from tests import chainkit

KEYS = chainkit.keypairs(41, 42, 43, 44)
GENESIS = chainkit.make_genesis("warmup-test", KEYS)
FOLLOWER = chainkit.keypairs(45)[0].public
ROOT, OTHER_ROOT = b"\x01" * 32, b"\x02" * 32


def live(prover: bytes, root: bytes = ROOT, rank: int = 1) -> Liveness:
    return Liveness(rank, prover, root, b"\x00" * 64)  # judged valid by the inbound path


@pytest.fixture
def prepared(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The challenges whose discriminants were derived."""
    challenges: list[bytes] = []

    async def prepare(challenge: bytes, bits: int) -> None:
        assert bits == vdf.DISCRIMINANT_BITS  # the genesis's
        challenges.append(challenge)

    monkeypatch.setattr(vdf, "prepare", prepare)
    return challenges


async def announce(warmup: Warmup, *announcements: Liveness) -> None:
    for message in announcements:
        warmup.on_liveness(message)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(warmup.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def test_the_top_prover_s_liveness_warms_its_challenge_once_per_rank(
    prepared: list[bytes],
) -> None:
    tip: list[Frame] = [GENESIS.frame()]
    warmup = Warmup(GENESIS, FOLLOWER, lambda: tip[0], LeaderOrder(GENESIS, lambda rank: None))
    top = leader_order(GENESIS, 1, lambda rank: None)[0].key
    await announce(warmup, live(top), live(top, OTHER_ROOT))
    assert prepared == [frame_challenge(GENESIS, 1, tip[0].id, top, ROOT)]
    tip[0] = replace(tip[0], round=1, parent=tip[0].id)  # the next rank is warmed again
    top = leader_order(GENESIS, 2, lambda rank: None)[0].key
    await announce(warmup, live(top, rank=2))
    assert prepared[1:] == [frame_challenge(GENESIS, 2, tip[0].id, top, ROOT)]


async def test_other_provers_own_and_stale_announcements_warm_nothing(
    prepared: list[bytes],
) -> None:
    tip = GENESIS.frame()
    top, second, *_ = [p.key for p in leader_order(GENESIS, 1, lambda rank: None)]
    nothing = LeaderOrder(GENESIS, lambda rank: None)
    await announce(
        Warmup(GENESIS, top, lambda: tip, nothing), live(top)
    )  # its own proof is vouched
    await announce(Warmup(GENESIS, FOLLOWER, lambda: tip, nothing), live(second), live(top, rank=2))
    assert prepared == []


async def test_prepare_leaves_the_discriminant_for_the_verification() -> None:
    challenge = frame_challenge(GENESIS, 9, b"\x09" * 32, FOLLOWER, ROOT)
    await vdf.prepare(challenge)
    before = vdf._discriminant.cache_info().hits
    vdf._discriminant(challenge, vdf.DISCRIMINANT_BITS)
    assert vdf._discriminant.cache_info().hits == before + 1
