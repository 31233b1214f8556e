"""Network log lines are rate-limited by kind, and say how many were held back."""

from __future__ import annotations

import logging

from p2pnode.net.logs import Throttle


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, args, None)


def test_each_kind_gets_its_burst_per_period_and_then_says_how_many_were_held() -> None:
    now = [0.0]
    throttle = Throttle(burst=3, period=60.0, clock=lambda: now[0])
    flood = [_record("p2pnode.net.x", "bad RPC from %s", f"peer{i}") for i in range(100)]
    assert [throttle.filter(r) for r in flood] == [True] * 3 + [False] * 97
    other = _record("p2pnode.net.x", "banning %s", "peer9")
    assert throttle.filter(other), "another kind has a burst of its own"
    assert throttle.filter(_record("p2pnode.consensus", "final rank %d", 7)), "not the network's"
    now[0] = 60.0
    late = _record("p2pnode.net.x", "bad RPC from %s", "peer100")
    assert throttle.filter(late)
    assert late.getMessage() == "bad RPC from peer100 (97 more like it held back)"
    again = _record("p2pnode.net.x", "bad RPC from %s", "peer101")
    assert throttle.filter(again)
    assert again.getMessage() == "bad RPC from peer101"


def test_lines_formatted_before_logging_are_kinds_by_their_words() -> None:
    throttle = Throttle(burst=2, period=60.0, clock=lambda: 0.0)
    peers = [f"12D3KooW{index:040d}" for index in range(5)]
    lines = [
        _record("p2pnode.net.libp2p", f"Failed to open stream to peer {p}: 3 s") for p in peers
    ]
    assert [throttle.filter(r) for r in lines] == [True, True, False, False, False]


def test_the_peer_s_log_file_holds_a_flood_to_a_few_lines(tmp_path: object) -> None:
    from pathlib import Path

    from p2pnode.peer.logsetup import LogSettings, logging_to

    log_file = Path(str(tmp_path)) / "node.log"
    with logging_to(log_file, LogSettings()):
        for index in range(10_000):
            logging.getLogger("p2pnode.net.libp2p.pubsub").warning("IWANT from %d", index)
    assert len(log_file.read_text().splitlines()) == 10
