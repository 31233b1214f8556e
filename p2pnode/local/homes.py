"""Generating a local testnet: N prover homes sharing one genesis, bootstrap addresses filled in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from p2pnode.chain.crypto import Keypair
from p2pnode.chain.genesis import DEFAULT_DIFFICULTY, DEFAULT_VDF_BITS, Genesis, wall_clock_ms
from p2pnode.peer.home import Home, create_home, write_config


def peer_address(port: int, keypair: Keypair) -> str:
    return f"/ip4/127.0.0.1/tcp/{port}/p2p/{keypair.prover.identity()}"


def generate_testnet(
    out: Path,
    peers: int,
    *,
    network: str = "testnet",
    base_port: int = 4001,
    difficulty: int = DEFAULT_DIFFICULTY,
    vdf_bits: int = DEFAULT_VDF_BITS,
    extra_config: Mapping[str, object] | None = None,
    other_provers: Sequence[Keypair] = (),
) -> tuple[Genesis, list[Home]]:
    """Write `peers` homes under `out` (peer0, peer1, ...); every peer bootstraps from peer0.

    Peer I listens on `base_port` + I; with `base_port` 0 each listens on a port the system
    picks, and the homes name no bootstrap peer (whoever starts them passes peer0's address).
    `other_provers` join the prover set without a home (run elsewhere, or not at all).
    """
    keypairs = [Keypair.generate() for _ in range(peers)]
    provers = [k.prover for k in [*keypairs, *other_provers]]
    genesis = Genesis.create(network, provers, difficulty, wall_clock_ms(), vdf_bits)
    bootstrap = [peer_address(base_port, keypairs[0])] if base_port else []
    homes = []
    for index, keypair in enumerate(keypairs):
        home, _ = create_home(out / f"peer{index}", keypair)
        genesis.save(home.genesis_file)
        listen = [f"/ip4/127.0.0.1/tcp/{base_port + index if base_port else 0}"]
        write_config(home, listen, [] if index == 0 else bootstrap, extra_config)
        homes.append(home)
    return genesis, homes
