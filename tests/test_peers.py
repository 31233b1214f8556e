"""Real peers as separate processes over libp2p on loopback: they finalize one chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pnode.local.homes import generate_testnet
from p2pnode.peer.home import create_home, write_config
from tests.peers import (
    Cluster,
    Peer,
    chain,
    cluster,
    ranks,
    start_on_free_ports,
    wait_for,
)

DIFFICULTY = 300


async def finalized_at_least(peers: list[Peer], rank: int) -> bool:
    return min(await ranks(peers)) >= rank


async def start_testnet(tmp_path: Path, group: Cluster, count: int = 4) -> list[Peer]:
    _, homes = generate_testnet(tmp_path, count, difficulty=DIFFICULTY)
    return await start_on_free_ports(group, homes)


async def test_four_provers_finalize_one_chain(tmp_path: Path) -> None:
    """Four provers as processes finalize at least 20 consecutive ranks, the same everywhere."""
    with trio.fail_after(150):
        async with cluster() as group:
            peers = await start_testnet(tmp_path, group)
            await wait_for(lambda: finalized_at_least(peers, 20), timeout=120, what="rank 20")
            chains = [await chain(peer) for peer in peers]
            for rank in range(1, 21):
                assert len({c[rank] for c in chains}) == 1, f"peers disagree at rank {rank}"


async def test_a_follower_joins_by_one_multiaddr_and_follows(tmp_path: Path) -> None:
    """A fifth peer, not a prover, given only peer 0's multiaddr and no genesis, fetches the
    genesis, syncs every frame (checking its certificate) and keeps following."""
    with trio.fail_after(150):
        async with cluster() as group:
            provers = await start_testnet(tmp_path / "net", group)
            await wait_for(lambda: finalized_at_least(provers, 5), timeout=90, what="rank 5")
            home, _ = create_home(tmp_path / "follower")
            write_config(home, ["/ip4/127.0.0.1/tcp/0"], provers[0].addrs()[:1])
            follower = await group.start(home)
            status = await follower.status()
            assert status.role == "follower"
            target = max(await ranks(provers)) + 3
            await wait_for(
                lambda: finalized_at_least([follower], target), timeout=90, what="the follower"
            )
            theirs, mine = await chain(provers[0]), await chain(follower)
            common = sorted(set(theirs) & set(mine))
            assert len(common) >= 3
            assert all(theirs[r] == mine[r] for r in common)
            assert home.genesis_file.exists(), "the genesis was fetched and kept"


async def test_a_killed_prover_restarts_and_catches_up(tmp_path: Path) -> None:
    """kill -9 one of four provers: the other three keep finalizing; restarted, it catches up
    and no peer ever sees it sign two different votes."""
    with trio.fail_after(200):
        async with cluster() as group:
            peers = await start_testnet(tmp_path, group)
            await wait_for(lambda: finalized_at_least(peers, 5), timeout=90, what="rank 5")
            victim, others = peers[3], peers[:3]
            await group.kill(victim)
            reached = max(await ranks(others))
            await wait_for(
                lambda: finalized_at_least(others, reached + 5), timeout=90, what="three provers"
            )
            # Back on a port the system picks: the others learn it from its announcement.
            rejoin = ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", peers[0].addrs()[0]]
            revived = await group.start(victim.home, *rejoin)
            target = max(await ranks(others)) + 2
            await wait_for(
                lambda: finalized_at_least([revived, *others], target),
                timeout=90,
                what="the restarted prover to catch up",
            )
            for peer in [revived, *others]:
                rejected = (await peer.status()).rejected
                assert not any("equivocating" in reason for reason, _ in rejected), rejected
            chains = [await chain(peer) for peer in [revived, *others]]
            common = set.intersection(*(set(c) for c in chains))
            assert common  # the revived peer holds ranks the others hold: compared, not vacuous
            assert all(len({c[r] for c in chains}) == 1 for r in common)


@pytest.mark.parametrize("echo", [True, False], ids=["echo", "emit-on-send"])
async def test_both_self_delivery_modes_finalize_and_count_own_messages_once(
    tmp_path: Path, echo: bool
) -> None:
    """py-libp2p echoes a peer's own messages (flag off); `echo = false` suppresses the echo
    and turns the flag on. In both modes two of four provers stay short of the three live
    provers a round needs (a message counted twice would make three), and four finalize."""
    with trio.fail_after(150):
        async with cluster() as group:
            extra = {} if echo else {"echo": False}
            _, homes = generate_testnet(tmp_path, 4, difficulty=DIFFICULTY, extra_config=extra)
            pair = await start_on_free_ports(group, homes[:2])
            await wait_for(lambda: _both_live(pair), timeout=60, what="two live provers")
            # Every liveness that could count twice is judged (own echo included), and each
            # engine has moved (a liveness timeout) since: a double count would show by now.
            judged = 2 if echo else 1
            await wait_for(lambda: _judged(pair, judged), timeout=30, what="liveness judged")
            marks = [(await peer.status()).transitions for peer in pair]
            await wait_for(lambda: _moved_on(pair, marks), timeout=30, what="a later transition")
            for peer in pair:
                status = await peer.status()
                assert status.finalized_rank == 0
                assert status.state == "liveness_check"
                assert len(status.round.live) == 2
            bootstrap = pair[0].addrs()[:1]
            listen = ["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", *bootstrap]
            others = [await group.start(home, *listen) for home in homes[2:]]
            await wait_for(
                lambda: finalized_at_least([*pair, *others], 3), timeout=90, what="rank 3"
            )


async def _judged(peers: list[Peer], liveness: int) -> bool:
    for peer in peers:
        counters = {row.topic: row for row in (await peer.status()).counters}
        if "liveness" not in counters or counters["liveness"].accept < liveness:
            return False
    return True


async def _moved_on(peers: list[Peer], marks: list[int]) -> bool:
    for peer, mark in zip(peers, marks, strict=True):
        if (await peer.status()).transitions <= mark:
            return False
    return True


async def _both_live(peers: list[Peer]) -> bool:
    for peer in peers:
        if len((await peer.status()).round.live) < 2:
            return False
    return True
