"""Monitoring: health from the status, metric names, the public metrics server's bounds."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path
from typing import cast

import pytest
import trio
import trio.testing

from p2pnode.api.routes import FRESH, read_only_routes
from p2pnode.api.server import (
    MAX_PER_IP,
    PUBLIC_BURST,
    PUBLIC_RATE,
    Reply,
    Request,
    StatusServer,
    json_reply,
)
from p2pnode.peer.health import health_problems
from p2pnode.peer.metrics import Metrics
from p2pnode.peer.node import Node
from p2pnode.peer.settings import SettingsError, node_settings
from p2pnode.peer.status import PeerStatus
from tests.status_sample import OTHERS, SAMPLE
from tests.test_cli import first_lines, run_solo
from tests.test_status_endpoint import BOUND, get_status, raw

FAMILIES = {
    "p2pnode_build_info": "gauge",
    "p2pnode_peer_info": "gauge",
    "p2pnode_healthy": "gauge",
    "p2pnode_consensus_rank": "gauge",
    "p2pnode_consensus_since_final_seconds": "gauge",
    "p2pnode_consensus_attempt": "gauge",
    "p2pnode_consensus_state": "gauge",
    "p2pnode_consensus_state_seconds": "gauge",
    "p2pnode_consensus_round_duration_seconds": "histogram",
    "p2pnode_consensus_round_duration_seconds_created": "gauge",
    "p2pnode_p2p_peers": "gauge",
    "p2pnode_p2p_mesh_peers": "gauge",
    "p2pnode_p2p_messages_total": "counter",
    "p2pnode_p2p_dropped_total": "counter",
    "p2pnode_p2p_limited_total": "counter",
    "p2pnode_mempool_mutations": "gauge",
}
"""Every p2pnode metric and its type: renaming one breaks dashboards and alerts."""


def _families(exposition: str) -> dict[str, str]:
    kinds = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            kinds[name] = kind
    return kinds


def test_the_metrics_are_the_checked_list_prefixed_beside_the_process_ones() -> None:
    exposition = Metrics(lambda: SAMPLE).exposition().decode()
    kinds = _families(exposition)
    ours = {name: kind for name, kind in kinds.items() if name.startswith("p2pnode_")}
    assert ours == FAMILIES
    others = set(kinds) - set(ours)
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"} <= others
    assert all(name.startswith(("process_", "python_")) for name in others)
    build = next(line for line in exposition.splitlines() if line.startswith("p2pnode_build_info"))
    assert 'version="0.1.0"' in build
    assert "commit=" in build
    assert "p2pnode_healthy 1.0" in exposition.splitlines()


def test_a_registry_is_the_peer_s_own() -> None:
    """Two peers in one process (the tests, the simulator) do not share a metric."""
    first, second = Metrics(lambda: SAMPLE), Metrics(lambda: SAMPLE)
    first.round_duration.observe(1.0)
    assert "p2pnode_consensus_round_duration_seconds_count 0.0" in second.exposition().decode()


def test_a_peer_connected_to_a_quorum_and_finalizing_is_healthy() -> None:
    assert health_problems(SAMPLE) == ()


@pytest.mark.parametrize(
    ("change", "problems"),
    [
        (
            {"peers": OTHERS[:1]},
            ("connected to 1 of 3 other provers: a quorum is 3 provers",),
        ),
        ({"since_finalized": 41.2}, ("no final frame for 41 s",)),
        ({"since_finalized": None}, ("no final frame since the peer started",)),
        (
            {"sync": "catching up", "best_peer_rank": 90},
            ("catching up: rank 6 of 90 known",),
        ),
        ({"role": "follower", "peers": ()}, ("connected to no peer",)),
        ({"role": "follower", "peers": OTHERS[:1]}, ()),
        (
            {"peers": (), "since_finalized": 31.0},
            (
                "connected to 0 of 3 other provers: a quorum is 3 provers",
                "no final frame for 31 s",
            ),
        ),
    ],
)
def test_health_names_every_problem(change: dict[str, object], problems: tuple[str, ...]) -> None:
    assert health_problems(dataclasses.replace(SAMPLE, **change)) == problems  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["0.0.0.0:9100", "[::]:9100", "10.1.2.3:0", ""])
def test_a_metrics_address_may_be_any_ip(value: str) -> None:
    assert node_settings({"node": {"metrics": value}}).metrics == value


@pytest.mark.parametrize("value", ["metrics.example:9100", "0.0.0.0", "9100", 9100])
def test_a_metrics_address_that_is_not_an_ip_and_port_is_refused(value: object) -> None:
    with pytest.raises(SettingsError, match=r"node\.metrics must be an IP and port"):
        node_settings({"node": {"metrics": value}})


async def _ok(_: Request) -> Reply:
    return json_reply({"ok": True})


async def test_a_public_server_answers_any_host_but_holds_few_connections_per_ip() -> None:
    server = StatusServer({("GET", "/status"): _ok}, public=True)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            assert await raw(server, get_status("monitor.example:9100")) == 200
            held = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(MAX_PER_IP)]
            # The server took all of them before it takes the next one (accepts are in order).
            await held[-1].send_all(b"GET ")
            # Another address of the same /24 is the same network: turned away too.
            assert await _turned_away(server, "127.0.0.2")
            assert server.turned_away == 1
            for stream in held:
                await stream.aclose()
            assert await raw(server, get_status("10.0.0.1")) == 200
            nursery.cancel_scope.cancel()
    assert server.refused == 0


async def _turned_away(server: StatusServer, local_address: str = "127.0.0.1") -> bool:
    """Whether a connection to `server` is reset or closed before any reply (a reset may
    come while it connects)."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port, local_address=local_address)
        async with stream:
            await stream.send_all(get_status("x"))
            return await stream.receive_some(100) == b""
    except (OSError, trio.BrokenResourceError):
        return True


def _get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_peer_serves_metrics_and_health_to_a_monitor_and_keeps_its_status_port(
    solo: Path,
) -> None:
    """The status port changed at every start; metrics could not be served beyond loopback;
    /health was 404."""
    config = solo / "config.toml"
    config.write_text(config.read_text() + 'metrics = "127.0.0.1:0"\n')  # into [node], the last
    first = run_solo(solo)
    try:
        assert first.stdout is not None
        lines = first_lines(first.stdout, 4)
        monitor = lines[3].split()[-1].removesuffix("/health")
        assert lines[3].startswith("metrics and health for monitoring: http://127.0.0.1:")
        status, metrics = _get(f"{monitor}/metrics", host="prometheus.example:9100")
        assert status == 200
        assert b"p2pnode_build_info{" in metrics
        deadline = time.monotonic() + 60
        while (health := _get(f"{monitor}/health", host="10.0.0.9"))[0] != 200:
            assert health[0] == 503, health
            assert json.loads(health[1])["problems"], health
            assert time.monotonic() < deadline, health
            time.sleep(0.6)  # another process: polled, within the server's 2 requests a second
        assert json.loads(health[1]) == {"healthy": True, "problems": []}
        assert _get(f"{monitor}/status")[0] == 404  # read-only routes only
        url = (solo / "status.url").read_text().strip()
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0
    again = run_solo(solo)
    try:
        assert again.stdout is not None
        assert f"status: {url}/status" in "".join(first_lines(again.stdout, 3))
    finally:
        again.send_signal(signal.SIGTERM)
        assert again.wait(timeout=20) == 0


class CountingNode:
    """The part of a peer the read-only routes use, counting how often each is worked out."""

    def __init__(self) -> None:
        self.asked = 0
        self.metrics = self

    def exposition(self) -> bytes:
        self.asked += 1
        return b"p2pnode_healthy 1.0\n"

    def status(self) -> PeerStatus:
        self.asked += 1
        return SAMPLE


async def test_a_public_server_works_its_answers_out_once_a_second(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every scrape built the whole status in the consensus loop: a loop of requests from
    strangers took a third of a core."""
    node = CountingNode()
    routes = read_only_routes(cast(Node, node), cached=True)
    for _ in range(100):
        await routes["GET", "/metrics"](Request(b""))
        await routes["GET", "/health"](Request(b""))
    assert node.asked == 2
    await trio.sleep(FRESH)
    reply = await routes["GET", "/health"](Request(b""))
    assert (node.asked, reply.status) == (3, 200)
    loopback = read_only_routes(cast(Node, node))
    await loopback["GET", "/metrics"](Request(b""))
    await loopback["GET", "/metrics"](Request(b""))
    assert node.asked == 5, "on loopback, always fresh"


async def test_a_public_server_answers_a_network_a_few_requests_a_second(
    mock_clock: trio.testing.MockClock,
) -> None:
    """A loop of requests from one stranger took a whole core of the peer's event loop."""
    server = StatusServer({("GET", "/status"): _ok}, public=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        answered = [await raw(server, get_status("x")) for _ in range(int(PUBLIC_BURST))]
        assert answered == [200] * int(PUBLIC_BURST)
        assert await _turned_away(server)
        mock_clock.jump(1 / PUBLIC_RATE)
        assert await raw(server, get_status("x")) == 200
        nursery.cancel_scope.cancel()
    assert server.turned_away == 1


async def test_a_public_server_accepts_a_few_connections_a_second_from_everyone(
    mock_clock: trio.testing.MockClock,
) -> None:
    """What comes faster waits in the kernel's backlog, costing the peer nothing."""
    rate, burst = 1.0, 4.0  # the defaults' shape, small enough to stay in the backlog
    server = StatusServer({("GET", "/status"): _ok}, public=True, accepts=(rate, burst))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, "127.0.0.1", 0)
        waiting = int(burst) + 3
        streams = [await trio.open_tcp_stream("127.0.0.1", server.port) for _ in range(waiting)]
        await trio.testing.wait_all_tasks_blocked()
        assert server.accepted == burst
        mock_clock.jump(3 / rate)
        await trio.testing.wait_all_tasks_blocked()
        assert server.accepted == waiting
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()


def test_a_remembered_status_port_taken_meanwhile_gives_way_to_a_free_one(solo: Path) -> None:
    """The home's last port is tried first; if another process holds it, the peer serves on
    a free port and says so in status.url, rather than failing to start."""
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (solo / "status.url").write_text(f"http://127.0.0.1:{port}\n")
        process = run_solo(solo)
        try:
            assert process.stdout is not None
            status_line = first_lines(process.stdout, 3)[2]
            url = (solo / "status.url").read_text().strip()
            assert url.startswith("http://127.0.0.1:")
            assert url != f"http://127.0.0.1:{port}"
            assert status_line.startswith(f"status: {url}/status")
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0
