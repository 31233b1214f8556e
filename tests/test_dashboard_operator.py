"""What an operator reads on the dashboard: names, steady columns, the legend, log errors, a
plain stalled line, and how to join and stop; at 80x24, 100x30 and 200x50."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2pnode.dashboard import Unreachable, peer_view
from p2pnode.dashboard import render as views
from p2pnode.dashboard.model import Reading
from p2pnode.peer.status import PeerStatus
from tests.test_dashboard import NOW, assert_fits, busy_testnet, render

SIZES = [(80, 24), (100, 30), (200, 50)]
FOOTER = "join: p2pnode run --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…   Ctrl-C stops"


def named() -> list[Reading]:
    return [
        replace(r, name=f"peer{i}") if isinstance(r, PeerStatus) else r
        for i, r in enumerate(busy_testnet())
    ]


def frozen(readings: list[Reading], since: float) -> list[Reading]:
    """Peers 2 and 3 stopped answering; 0 and 1 see no final frame for `since` seconds and
    are connected to each other only."""
    kept = [r for r in readings if isinstance(r, PeerStatus)][:2]
    ids = [r.peer_id for r in kept]
    alive = [
        replace(r, since_finalized=since, peers=tuple(i for i in ids if i != r.peer_id))
        for r in kept
    ]
    down = [
        Unreachable(f"http://127.0.0.1:{8082 + i}", "no reply within 1s", NOW - 9) for i in range(2)
    ]
    return [*alive, *down]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_peers_are_called_by_their_names_with_the_legend_and_the_footer(
    width: int, height: int
) -> None:
    text = render(views.testnet_view(named(), width, height, now=NOW, footer=FOOTER), width, height)
    assert_fits(text, width, height)
    header = next(line for line in text.splitlines() if "peer0" in line)
    assert [name in header for name in ("peer0", "peer1", "peer2", "peer3")] == [True] * 4
    if width < views.WIDE:  # wide, the short id follows the name
        assert "12D3…n4v7" not in header
    assert "provers: L live" in text, "the legend fits at every size"
    assert text.rstrip("\n").splitlines()[-1].startswith(FOOTER[: width - 1].rstrip("…")[:60])
    assert "stalled" not in text


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_columns_keep_their_place_whatever_the_cells_hold(width: int, height: int) -> None:
    """Column widths followed the widest cell, so they jumped between refreshes."""
    before = named()
    after = [
        replace(r, state="liveness_check", state_time=12.3) if isinstance(r, PeerStatus) else r
        for r in before
    ]
    starts = []
    for readings in (before, after):
        text = render(views.testnet_view(readings, width, height, now=NOW), width, height)
        header = next(line for line in text.splitlines() if "peer0" in line)
        starts.append([header.index(f"peer{i}") for i in range(4)])
    assert starts[0] == starts[1]


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_a_testnet_without_final_frames_says_it_is_stalled_and_why(width: int, height: int) -> None:
    """With 2 of 4 provers frozen, the view showed `liveness 3/3` and `synced`."""
    text = render(views.testnet_view(frozen(named(), 25.0), width, height, now=NOW), width, height)
    assert_fits(text, width, height)
    line = next(line for line in text.splitlines() if line.startswith("stalled"))
    wanted = "stalled: no final frame for 25 s: 2 of 4 peers unreachable, no quorum (2 of 3)"
    assert line.rstrip() == wanted


def test_a_short_wait_is_not_a_stall() -> None:
    text = render(views.testnet_view(frozen(named(), 19.0), 100, 30, now=NOW), 100, 30)
    assert "stalled" not in text


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_one_stalled_peer_says_so_with_its_health_problems(width: int, height: int) -> None:
    peer = frozen(named(), 41.0)[0]
    text = render(peer_view(peer, width, height, now=NOW, footer="Ctrl-C to quit"), width, height)
    assert_fits(text, width, height)
    assert "stalled: no final frame for 41 s" in text
    assert "stalled: no final frame for 41 s: no quorum (2 of 3)" in text
    assert text.rstrip("\n").splitlines()[-1].startswith("Ctrl-C to quit")


def test_errors_in_the_peer_s_log_show_though_the_engine_had_none() -> None:
    """`errors —` while node.log had errors."""
    readings = named()
    first = readings[0]
    assert isinstance(first, PeerStatus)
    readings[0] = replace(first, log_errors=3, last_log_error="the store is read-only")
    text = render(views.testnet_view(readings, 200, 50, now=NOW), 200, 50)
    assert "3: the store is read-only" in text
