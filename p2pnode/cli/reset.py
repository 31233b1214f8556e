"""`p2pnode reset`: wipe a home's store, keeping its key, genesis and config."""

from __future__ import annotations

import argparse
from pathlib import Path

from p2pnode.cli.errors import UsageError
from p2pnode.peer.home import Home

STORE_SUFFIXES = ("", "-wal", "-shm", "-journal")
"""The store's sqlite file and the files sqlite keeps beside it."""


def reset(args: argparse.Namespace) -> int:
    """Remove the store of a stopped peer's home; it syncs the chain again when it next runs.
    A prover's store also holds what it signed, so a prover is reset only with --unsafe."""
    home = Home(Path(args.home))
    peer = home.keypair().prover.identity()  # a clear error if this is no home
    if home.has_genesis() and not args.unsafe:
        genesis = home.genesis()
        if peer in {p.identity() for p in genesis.provers}:
            raise UsageError(
                f"{home.path} is a prover of {genesis.network}: its store holds the votes it "
                "signed, and without them it could sign another frame in a rank it voted in "
                "(equivocate); stop its peer for a few ranks first, and give --unsafe"
            )
    with home.locked():  # never under a running peer
        files = [Path(f"{home.store_file}{suffix}") for suffix in STORE_SUFFIXES]
        removed = [path.name for path in files if path.exists()]
        for path in files:
            path.unlink(missing_ok=True)
    if not removed:
        print(f"{home.path} holds no store: nothing to remove")
        return 0
    print(f"removed {', '.join(removed)} from {home.path}; kept the key, genesis and config")
    return 0
