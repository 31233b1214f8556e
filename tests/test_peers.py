"""Real peers as separate processes over libp2p on loopback: they finalize one chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pnode.home import create_home, write_config
from p2pnode.testnet import generate_testnet
from tests.peers import Cluster, Peer, chain, cluster, free_port_block, ranks, wait_for

DIFFICULTY = 300


async def finalized_at_least(peers: list[Peer], rank: int) -> bool:
    return min(await ranks(peers)) >= rank


async def start_testnet(tmp_path: Path, group: Cluster, count: int = 4) -> list[Peer]:
    base = free_port_block(count)
    _, homes = generate_testnet(tmp_path, count, base_port=base, difficulty=DIFFICULTY)
    return [await group.start(home) for home in homes]


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
            port = free_port_block(1)
            bootstrap = (await provers[0].status())["peer_id"]
            address = f"/ip4/127.0.0.1/tcp/{_port_of(provers[0])}/p2p/{bootstrap}"
            write_config(home, [f"/ip4/127.0.0.1/tcp/{port}"], [address])
            follower = await group.start(home)
            status = await follower.status()
            assert status["role"] == "follower"
            target = max(await ranks(provers)) + 3
            await wait_for(
                lambda: finalized_at_least([follower], target), timeout=90, what="the follower"
            )
            theirs, mine = await chain(provers[0]), await chain(follower)
            common = sorted(set(theirs) & set(mine))
            assert len(common) >= 3
            assert all(theirs[r] == mine[r] for r in common)
            assert home.genesis_file.exists(), "the genesis was fetched and kept"


def _port_of(peer: Peer) -> int:
    listen = peer.home.config_file.read_text().split('listen = ["', 1)[1].split('"', 1)[0]
    return int(listen.rsplit("/", 1)[1])


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
            revived = await group.start(victim.home)
            target = max(await ranks(others)) + 2
            await wait_for(
                lambda: finalized_at_least([revived, *others], target),
                timeout=90,
                what="the restarted prover to catch up",
            )
            for peer in [revived, *others]:
                status = await peer.status()
                rejected = status["rejected"]
                assert isinstance(rejected, dict)
                assert not any("equivocating" in reason for reason in rejected), rejected
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
            base = free_port_block(4)
            extra = "" if echo else "echo = false\n"
            _, homes = generate_testnet(
                tmp_path, 4, base_port=base, difficulty=DIFFICULTY, extra_config=extra
            )
            pair = [await group.start(home) for home in homes[:2]]
            await wait_for(lambda: _both_live(pair), timeout=60, what="two live provers")
            await trio.sleep(5)  # an observation window: nothing may happen in it
            for peer in pair:
                status = await peer.status()
                assert status["finalized_rank"] == 0
                assert status["state"] == "liveness_check"
                round_ = status["round"]
                assert isinstance(round_, dict)
                assert len(round_["live"]) == 2
            others = [await group.start(home) for home in homes[2:]]
            await wait_for(
                lambda: finalized_at_least([*pair, *others], 3), timeout=90, what="rank 3"
            )


async def _both_live(peers: list[Peer]) -> bool:
    for peer in peers:
        round_ = (await peer.status())["round"]
        if not isinstance(round_, dict) or len(round_["live"]) < 2:
            return False
    return True
