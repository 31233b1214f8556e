"""Starting peer processes: a peer that cannot start is reported with what it said."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from p2pnode.local.processes import PeerExitedError, serving, spawn, stop_all
from p2pnode.peer.home import Home


async def test_a_peer_that_exits_on_start_is_reported_with_its_last_words(tmp_path: Path) -> None:
    home, log = Home(tmp_path / "never-made"), tmp_path / "process.log"
    process = spawn(home, log=log)
    try:
        with trio.fail_after(60), pytest.raises(PeerExitedError, match=r"exited with 1: .*no key"):
            await serving(home, process, log)
    finally:
        stop_all([process])
    assert process.returncode == 1
