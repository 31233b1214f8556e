"""The dashboard: parsing statuses defensively, views that fit the terminal, live polling."""

from __future__ import annotations

import hashlib
import io
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console, RenderableType

from p2pnode.api.client import ClientError, json_object
from p2pnode.api.server import Reply, Request, StatusServer, json_reply
from p2pnode.dashboard import Unreachable, fetch, peer_view
from p2pnode.dashboard import render as views
from p2pnode.dashboard.live import watch
from p2pnode.dashboard.model import Reading
from p2pnode.peer.status import PeerStatus
from p2pnode.peer.status_read import parse_status
from tests.status_sample import ME, PROVERS, sample_json

SIZES = [(80, 24), (160, 48)]
NOW = 1795825820.0


sample = sample_json


def frame_id(rank: int) -> str:
    return hashlib.sha256(f"frame {rank}".encode()).hexdigest()


CYCLE = [
    ("collecting", "liveness_check", "collection_done"),
    ("liveness_check", "proving", "prover_signal"),
    ("proving", "publishing", "proof_complete"),
    ("publishing", "voting", "publish_complete"),
    ("voting", "finalizing", "quorum_reached"),
    ("finalizing", "verifying", "aggregation_done"),
    ("verifying", "collecting", "verification_done"),
]


def busy() -> dict[str, Any]:
    """The sample after a longer run: a full rounds table, votes, confirmations, rejections."""
    data = sample()
    data["finalized_rank"] = data["best_peer_rank"] = 24
    data["recent_rounds"] = [
        {
            "rank": rank,
            "id": frame_id(rank),
            "prover": PROVERS[rank % 4],
            "mutations": rank % 3,
            "signers": 3 + rank % 2,
            "attempt": 1 if rank == 20 else 0,
            "duration_ms": 400 + rank,
        }
        for rank in range(24, 8, -1)
    ]
    data["transition_log"] = [[NOW - 10 + i * 0.3, *CYCLE[i % len(CYCLE)]] for i in range(32)]
    data["round"].update(
        rank=25,
        votes={PROVERS[0]: "aa" * 32, PROVERS[1]: "aa" * 32, PROVERS[2]: "bb" * 32},
        voted=True,
        confirmations={"0": [PROVERS[3]]},
    )
    del data["round"]["votes_for"]  # as an older peer: vote ids only, no frame per voter
    data["counters"]["votes"]["reject"] = 2
    data["rejected"] = {"votes: bad signature": 2}
    return data


def render(renderable: RenderableType, width: int, height: int) -> str:
    console = Console(
        record=True,
        width=width,
        height=height,
        force_terminal=True,
        color_system=None,
        file=io.StringIO(),
    )
    console.print(renderable)
    return console.export_text()


def assert_fits(text: str, width: int, height: int) -> None:
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height, text
    assert max(len(line.rstrip()) for line in lines) <= width, text


def show(data: dict[str, Any], width: int, height: int) -> str:
    text = render(
        peer_view(parse_status(data, "http://127.0.0.1:1"), width, height, now=NOW), width, height
    )
    assert_fits(text, width, height)
    return text


def variant(
    change: Callable[[dict[str, Any]], None], base: Callable[[], dict[str, Any]] = busy
) -> dict[str, Any]:
    data = base()
    change(data)
    return data


def busy_testnet() -> list[Reading]:
    readings: list[Reading] = []
    for index, prover in enumerate(PROVERS):
        data = busy()
        data["peer_id"] = prover
        readings.append(parse_status(data, f"http://127.0.0.1:{8080 + index}"))
    return readings


# --- the model -----------------------------------------------------------------------------


def test_the_sample_parses_without_problems() -> None:
    status = parse_status(sample(), "http://127.0.0.1:1")
    assert status.problems == ()
    assert status.peer_id == ME
    assert (status.finalized_rank, status.best_peer_rank, status.sync) == (6, 6, "synced")
    assert status.round.quorum == 3
    assert [row.rank for row in status.recent_rounds] == [6, 5, 4]
    assert status.transition_log[-1].target == "voting"


def test_votes_are_grouped_by_vote_id() -> None:
    """Equal vote ids are votes for one frame: the groups show a split without knowing frames."""
    status = parse_status(busy())
    assert status.round.vote_groups == (2, 1)
    assert not status.round.has_quorum
    assert status.round.votes_on("9f76") is None


def test_votes_for_when_the_peer_says_which_frame() -> None:
    data = busy()
    proposed = data["round"]["proposals"][ME]
    data["round"]["votes_for"] = {PROVERS[0]: proposed, PROVERS[1]: proposed, PROVERS[2]: "x"}
    status = parse_status(data)
    assert status.round.votes_on(proposed) == 2
    text = show(data, 80, 24)
    assert "votes" in text.splitlines()[3].split()  # the provers table grew a votes column
    row = next(line for line in text.splitlines() if line.startswith("12D3…NA2R *"))
    assert row.split()[3:5] == [proposed[:8], "2"]


@pytest.mark.parametrize(
    "data",
    [
        {},
        [1, 2, 3],
        None,
        {"peer_id": 5, "round": "x", "counters": [1], "recent_rounds": [{"rank": "x"}, 3]},
        {"transition_log": [[1], "x", [None, 1, 2, 3]], "errors": [[None], "plain", 7]},
        {"round": {"votes": [1], "confirmations": {"x": [1], "0": "y"}, "live": [1, "a"]}},
        {"mesh": {"a": "b"}, "counters": {"votes": {"accept": "many"}}, "sync": "sideways"},
        {"finalized_rank": 3.0, "best_peer_rank": True, "since_finalized": "soon"},
    ],
)
def test_malformed_statuses_become_placeholders(data: object) -> None:
    status = parse_status(data, "http://127.0.0.1:1")
    assert status.problems
    for width, height in SIZES:
        assert_fits(render(peer_view(status, width, height, now=NOW), width, height), width, height)
    text = render(views.testnet_view([status, status], 80, 24, now=NOW), 80, 24)
    assert_fits(text, 80, 24)


def test_a_partial_status_says_what_is_missing() -> None:
    data = sample()
    del data["mesh"], data["round"]["live"]
    text = show(data, 80, 24)
    assert "partial status: mesh, round.live" in text


def test_newer_fields_are_ignored() -> None:
    data = sample()
    data["something_new"] = {"deep": [1, 2]}
    data["round"]["quorum"] = 4
    status = parse_status(data)
    assert status.problems == ()
    assert status.round.quorum == 4


# --- one peer --------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_peer_view_shows_the_essentials(width: int, height: int) -> None:
    text = show(sample(), width, height)
    who = ME if width >= 150 else "12D3…NA2R" if width < 120 else "12D3…KTNA2R"
    for expected in [
        who,
        "testnet",
        "prover",
        "voting",
        "final 6",
        "synced",
        "6/6" if width < 120 else "own 6 / best 6",
    ]:
        assert expected in text
    assert "peers 3" in text
    assert "liveness 4/3" in text
    assert "proposals 2" in text
    assert "votes 0/3" in text
    for rank in ("6", "5", "4"):
        assert any(line.split()[:1] == [rank] for line in text.splitlines())
    own = next(line.split() for line in text.splitlines() if "12D3" in line and " * " in line)
    at = own.index("*")
    assert own[at + 1] == "✓"  # live
    assert own[at + 2].startswith("9f7609a0")  # the frame it proposed
    # No vote for its proposal yet, no vote, confirmation or equivocation of its own; one win.
    assert own[at + 3 : at + 8] == ["0", "·", "·", "·", "1"]
    words = " ".join(text.split())
    assert ("confirms 23 2 0" if width < 120 else "confirmations 23 2 0") in words
    assert "proposals 19 7 0" in words
    assert "publishing→voting publish_complete" in text
    assert "liveness_check→liveness_check" not in text  # a re-evaluation, not a change


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_busy_peer_view_fits_and_fills(width: int, height: int) -> None:
    text = show(busy(), width, height)
    lines = text.rstrip("\n").split("\n")
    assert "votes 2+1/3" in text
    assert "2 votes: bad signature" in text
    ranks_shown = sum(1 for line in lines if [w[:4] for w in line.split()[1:2]] == ["12D3"])
    if height == 24:
        assert len(lines) == 24
        assert ranks_shown >= 6
    else:
        assert ranks_shown == 16  # every round the status holds
        assert text.count("→") == 32  # and every transition


def test_catching_up_shows_own_and_best_rank() -> None:
    def change(data: dict[str, Any]) -> None:
        data.update(best_peer_rank=40, sync="catching up", state="collecting")

    text = show(variant(change), 80, 24)
    assert "catching up 24/40" in text
    assert "collecting" in text
    assert "own 24 / best 40" in show(variant(change), 160, 48)


def test_stalled_is_computed_when_an_older_peer_does_not_say() -> None:
    def change(data: dict[str, Any]) -> None:
        del data["sync"]
        data.update(since_finalized=45.0, state_time=44.0)

    text = show(variant(change), 80, 24)
    assert "stalled 24/24" in text
    assert "last final 45s ago" in text
    assert "voting 44s" in text


def test_a_follower_is_not_among_the_provers() -> None:
    def change(data: dict[str, Any]) -> None:
        data.update(role="follower", peer_id="12D3KooWFollowerFollowerFollowerFollowerFollowerAbc9")

    text = show(variant(change), 80, 24)
    assert "12D3…Abc9" in text
    assert "follower" in text
    assert " *" not in text  # no prover row is this peer's own


def test_a_retry_with_a_lock() -> None:
    def change(data: dict[str, Any]) -> None:
        data["round"].update(attempt=2, locked_on="7ace2b6b" + "0" * 56, lock_attempt=1)

    text = show(variant(change), 80, 24)
    assert "attempt 2" in text
    assert "lock 7ace2b6b@1" in text


def test_equivocators_are_marked() -> None:
    def change(data: dict[str, Any]) -> None:
        data["round"]["equivocators"] = [PROVERS[2]]
        data["rejected"] = {"votes: equivocating vote": 3}

    text = show(variant(change), 80, 24)
    assert "1 equivocating" in text
    row = next(line for line in text.splitlines() if line.startswith("12D3…Vf5G"))
    assert "✗" in row
    assert "3 votes: equivocating vote" in text


def test_errors_are_listed_with_transitions() -> None:
    def change(data: dict[str, Any]) -> None:
        data["errors"] = [[NOW - 0.5, "proof provider crashed"]]

    assert "proof provider crashed" in show(variant(change), 80, 24)
    assert "proof provider crashed" in show(variant(change), 160, 48)


def test_one_unreachable_peer() -> None:
    text = render(
        peer_view(Unreachable("http://127.0.0.1:9", "cannot connect", NOW - 3), 80, 24, now=NOW),
        80,
        24,
    )
    assert ":9" in text
    assert "unreachable 3s" in text
    assert "cannot connect" in text


@pytest.mark.parametrize(("width", "height"), [(60, 16), (40, 10), (100, 12), (200, 60), (120, 20)])
def test_odd_sizes_still_fit(width: int, height: int) -> None:
    show(busy(), width, height)
    assert_fits(
        render(views.testnet_view(busy_testnet(), width, height, now=NOW), width, height),
        width,
        height,
    )


# --- the testnet -----------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_testnet_view_shows_all_peers(width: int, height: int) -> None:
    readings = busy_testnet()
    readings[3] = Unreachable("http://127.0.0.1:8083", "cannot connect", NOW - 2)
    text = render(views.testnet_view(readings, width, height, now=NOW), width, height)
    assert_fits(text, width, height)
    for who in ("12D3…n4v7", "12D3…NA2R", "12D3…Vf5G", ":8083"):
        assert who in text
    assert "unreachable 2s" in text
    assert "cannot connect" in text
    assert "1 unreachable" in text
    assert "synced" in text
    assert ("24/24" if width < 120 else "own 24 / best 24") in text
    assert "2+1/3" in text  # votes against the quorum
    assert "L·V··" in text  # the prover matrix
    assert "L··C·" in text
    assert "2 rejected" in text
    assert frame_id(24)[:8] in text  # the newest shared round


def test_testnet_shows_a_fork_and_peers_behind() -> None:
    readings = busy_testnet()
    data = busy()
    data["recent_rounds"][0]["id"] = "ff" * 32
    data.update(finalized_rank=24, best_peer_rank=30, sync="catching up")
    readings[1] = parse_status(data)
    behind = busy()
    behind.update(finalized_rank=20, recent_rounds=behind["recent_rounds"][4:])
    readings[2] = parse_status(behind)
    text = render(views.testnet_view(readings, 160, 48, now=NOW), 160, 48)
    assert "forked: 2" in text
    assert "catching up" in text
    assert "final 20..24" in text
    assert "3/4" in text  # rank 24 is final at three peers of four


def test_more_peers_than_columns_says_so() -> None:
    readings = busy_testnet() * 2
    text = render(views.testnet_view(readings, 80, 24, now=NOW), 80, 24)
    assert_fits(text, 80, 24)
    assert "8 peers" in text
    assert "showing 4" in text


# --- polling live peers ----------------------------------------------------------------------


async def serve(nursery: trio.Nursery, routes: dict[tuple[str, str], Any]) -> str:
    port = await nursery.start(StatusServer(routes).serve, "127.0.0.1", 0)
    return f"http://127.0.0.1:{port}"


def closed_url() -> str:
    return "http://127.0.0.1:1"  # a privileged port nobody here listens on


def recorder(terminal: bool = False, width: int = 80, height: int = 24) -> Console:
    return Console(
        record=True,
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=terminal,
        color_system=None,
    )


class FakePeers:
    """Peers read in memory (virtual time): a status, a hung peer, or an unreachable one."""

    def __init__(self, statuses: dict[str, dict[str, Any] | None], stop: trio.Event) -> None:
        self.statuses = statuses
        self.hung: set[str] = set()
        self.hits: dict[str, int] = dict.fromkeys(statuses, 0)
        self.stop = stop
        self.stop_after: tuple[str, int] | None = None

    async def __call__(self, url: str, timeout: float) -> Reading:
        self.hits[url] += 1
        if self.stop_after == (url, self.hits[url]):
            self.stop.set()
        if url in self.hung:
            await trio.sleep(timeout)
            return Unreachable(url, f"no reply within {timeout:g}s")
        status = self.statuses[url]
        if status is None:
            return Unreachable(url, "cannot connect")
        logging.getLogger("p2pnode.test").warning("polled while shown")
        return parse_status(status, url)


@pytest.mark.parametrize("terminal", [False, True])
async def test_watch_one_peer_until_stopped(
    terminal: bool, autojump_clock: trio.testing.MockClock
) -> None:
    stop = trio.Event()
    peers = FakePeers({"http://127.0.0.1:1": sample()}, stop)
    peers.stop_after = ("http://127.0.0.1:1", 4)
    console = recorder(terminal)
    with trio.fail_after(10):
        await watch(["http://127.0.0.1:1"], refresh=0.02, console=console, stop=stop, read=peers)
    text = console.export_text()
    assert peers.hits["http://127.0.0.1:1"] == 4
    for expected in ("12D3…NA2R", "testnet", "voting", "synced 6/6", "liveness 4/3"):
        assert expected in text


async def test_watch_several_peers_with_one_unreachable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    other = sample()
    other["peer_id"] = PROVERS[0]
    stop = trio.Event()
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3"]
    peers = FakePeers(dict(zip(urls, [sample(), other, None], strict=True)), stop)
    peers.stop_after = (urls[0], 3)
    console = recorder(width=100, height=30)
    with trio.fail_after(10):
        await watch(urls, refresh=0.02, console=console, stop=stop, read=peers)
    text = console.export_text()
    assert "12D3…NA2R" in text
    assert "12D3…n4v7" in text
    assert "1 unreachable" in text
    assert "cannot connect" in text
    assert peers.hits[urls[1]] >= 2


async def test_a_slow_peer_delays_only_itself(autojump_clock: trio.testing.MockClock) -> None:
    stop = trio.Event()
    fast, hung = "http://127.0.0.1:1", "http://127.0.0.1:2"
    peers = FakePeers({fast: sample(), hung: sample()}, stop)
    peers.hung.add(hung)
    console = recorder(width=100, height=30)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_set_later, stop, 1.5)
            await watch([fast, hung], refresh=0.05, console=console, stop=stop, read=peers)
    assert peers.hits[fast] >= 20  # polled all along, not once per slow timeout
    assert peers.hits[hung] == 2  # one-second timeouts: asked at 0 and at 1 s
    assert "no reply within 1s" in console.export_text()


async def _set_later(event: trio.Event, delay: float) -> None:
    await trio.sleep(delay)
    event.set()


async def test_watch_returns_on_cancellation(autojump_clock: trio.testing.MockClock) -> None:
    peers = FakePeers({"http://127.0.0.1:1": None}, trio.Event())
    with trio.move_on_after(0.3) as scope:
        await watch(["http://127.0.0.1:1"], refresh=0.02, console=recorder(), read=peers)
    assert scope.cancelled_caught
    assert peers.hits["http://127.0.0.1:1"] > 1


async def test_logs_go_to_the_file_while_shown(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    root, terminal = logging.getLogger(), logging.StreamHandler(sys.stderr)
    root.addHandler(terminal)
    log_file = tmp_path / "dashboard.log"
    stop = trio.Event()
    peers = FakePeers({"http://127.0.0.1:1": sample()}, stop)
    peers.stop_after = ("http://127.0.0.1:1", 3)
    try:
        with trio.fail_after(10):
            await watch(
                ["http://127.0.0.1:1"],
                refresh=0.02,
                console=recorder(),
                stop=stop,
                log_file=log_file,
                read=peers,
            )
        assert terminal in root.handlers  # given back afterwards
    finally:
        root.removeHandler(terminal)
    assert "polled while shown" in log_file.read_text()


async def test_fetch_turns_bad_replies_into_unreachable_peers() -> None:
    async def not_json(_: Request) -> Reply:
        return Reply(200, b"<html>")

    async def a_list(_: Request) -> Reply:
        return json_reply([1, 2])

    async def failing(_: Request) -> Reply:
        return json_reply({"error": "boom"}, 500)

    async def partial(_: Request) -> Reply:
        return json_reply({"peer_id": ME, "finalized_rank": 3})

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            readings = []
            for route in (not_json, a_list, failing, partial):
                url = await serve(nursery, {("GET", "/status"): route})
                readings.append(await fetch(url, timeout=2))
            readings.append(await fetch(closed_url(), timeout=2))
            readings.append(await fetch("not a url", timeout=2))
            nursery.cancel_scope.cancel()
    *bad, good, closed, nonsense = readings
    assert [type(r) for r in bad] == [Unreachable] * 3
    assert [r.reason for r in bad if isinstance(r, Unreachable)] == [
        "/status did not answer JSON",
        "/status did not answer a JSON object",
        'the peer answered 500: {"error":"boom"}',
    ]
    assert isinstance(good, PeerStatus)
    assert good.finalized_rank == 3
    assert "network" in good.problems
    assert isinstance(closed, Unreachable)
    assert closed.reason == "cannot connect"
    assert isinstance(nonsense, Unreachable)
    assert "not an http://host:port url" in nonsense.reason


def with_phases(data: dict[str, Any]) -> None:
    for row in data["recent_rounds"]:
        row["phases"] = {
            "liveness": 11,
            "proving": 222,
            "voting": 33,
            "confirmation": 44,
            "commit": 1,
            "other": 0,
        }
    data["recent_rounds"][1]["phases"] = {"liveness": "x"}  # an odd peer: shown as unknown


def test_the_wide_rounds_table_shows_where_each_round_went() -> None:
    status = parse_status(variant(with_phases), "http://127.0.0.1:1")
    assert status.recent_rounds[0].phases is not None
    assert status.recent_rounds[1].phases is None
    text = show(variant(with_phases), 160, 48)
    header = next(line.split() for line in text.splitlines() if "took" in line)
    at = header.index("took")
    assert header[at + 1 : at + 5] == ["live", "prove", "vote", "conf"]
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["24"], ["23"])]
    assert rows[0][at + 1 : at + 5] == ["11ms", "222ms", "33ms", "44ms"]
    assert rows[1][at + 1 : at + 5] == ["—"] * 4


EXTREMES = st.sampled_from([10**400, -(10**400), 2**63, float("nan"), float("inf"), -1])
HOSTILE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | EXTREMES,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.sampled_from(["²", "9" * 25, "-1"]), inner)
    ),
    max_leaves=12,
)
TOP_KEYS = sorted(sample_json())
ROUND_KEYS = sorted(sample_json()["round"])


@settings(max_examples=60)
@example(top={"since_finalized": 10**400, "state_time": float("nan")}, inner={})
@example(top={"hop_latency_ms": float("inf")}, inner={"confirmations": {"²": [], "9" * 5000: []}})
@example(
    top={"transition_log": [[float("nan"), "a", "b", "c"]], "errors": [[10**400, "x"]]}, inner={}
)
@given(
    top=st.dictionaries(st.sampled_from(TOP_KEYS), HOSTILE, max_size=6),
    inner=st.dictionaries(st.sampled_from(ROUND_KEYS), HOSTILE, max_size=4),
)
def test_any_json_in_any_field_breaks_neither_the_reader_nor_the_views(
    top: dict[str, Any], inner: dict[str, Any]
) -> None:
    """A peer of another version, or a broken one, may send anything in any field."""
    data = sample_json()
    data["round"].update(inner)
    data.update(top)
    status = parse_status(data, "http://127.0.0.1:1")
    for width, height in SIZES:
        render(peer_view(status, width, height, now=NOW), width, height)
        render(views.testnet_view([status, status], width, height, now=NOW), width, height)


@pytest.mark.parametrize(
    "body",
    [b'{"state_time": NaN}', b'{"since_finalized": -Infinity}', b"[" * 100_000 + b"]" * 100_000],
)
def test_a_reply_that_is_not_json_though_python_would_parse_it_is_refused(body: bytes) -> None:
    with pytest.raises(ClientError, match="/status did not answer JSON"):
        json_object("/status", body)
