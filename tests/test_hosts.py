"""Peers on separate hosts: wildcard listen addresses shown and shared as the host's own,
`announce` instead of them, and four provers in four network namespaces joined that way."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.identity_utils import create_identity_from_seed

from p2pnode.chain.types import peer_id_text
from p2pnode.chaos.cluster import Cluster
from p2pnode.chaos.cluster import Peer as ClusterPeer
from p2pnode.chaos.netns import Fabric, Link, ip
from p2pnode.cli import build_parser, commands, main
from p2pnode.dashboard import peer_view
from p2pnode.local.homes import generate_testnet
from p2pnode.net import NetConfig, Topic, Verdict, decode_record, open_network
from p2pnode.net.addresses import (
    AddressError,
    _ipv6,
    expand,
    interface_ips,
    scoped,
    shared,
    with_peer,
)
from p2pnode.peer.home import Home, create_home, write_config
from p2pnode.peer.settings import SettingsError, load_settings, node_settings
from p2pnode.peer.status import PeerStatus
from p2pnode.peer.status_read import parse_status
from tests.peers import wait_for
from tests.test_dashboard import render, sample

ID = "12D3KooWJsTQoZuDA3mWGHkxo867cMEf3QTAkodxp39bG9KTNA2R"
HOST_IPS = ["127.0.0.1", "10.1.2.3", "fe80::1", "2001:db8::5", "::1", "192.168.7.9"]


# -- expanding wildcards --------------------------------------------------------------------


def test_a_wildcard_becomes_each_address_of_its_family_loopback_last() -> None:
    addrs = [f"/ip4/0.0.0.0/tcp/4001/p2p/{ID}"]
    assert expand(addrs, HOST_IPS) == [
        f"/ip4/10.1.2.3/tcp/4001/p2p/{ID}",
        f"/ip4/192.168.7.9/tcp/4001/p2p/{ID}",
        f"/ip4/127.0.0.1/tcp/4001/p2p/{ID}",
    ]


def test_an_ip6_wildcard_leaves_out_link_local_addresses() -> None:
    assert expand(["/ip6/::/tcp/9"], HOST_IPS) == ["/ip6/2001:db8::5/tcp/9", "/ip6/::1/tcp/9"]


def test_other_addresses_stay_but_loopback_goes_last_and_duplicates_once() -> None:
    addrs = ["/ip4/127.0.0.1/tcp/1", "/dns4/example.org/tcp/2", "/ip4/0.0.0.0/tcp/3"]
    addrs.append("/ip4/10.1.2.3/tcp/3")
    assert expand(addrs, ["127.0.0.1", "10.1.2.3"]) == [
        "/dns4/example.org/tcp/2",
        "/ip4/10.1.2.3/tcp/3",
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/127.0.0.1/tcp/3",
    ]


def test_announced_addresses_replace_the_listen_ones_and_get_the_peer_id() -> None:
    listening = [f"/ip4/0.0.0.0/tcp/4001/p2p/{ID}"]
    announce = ["/ip4/203.0.113.7/tcp/4001", f"/dns4/node.example.org/tcp/4001/p2p/{ID}"]
    assert shared(listening, ID, announce, HOST_IPS) == [
        f"/ip4/203.0.113.7/tcp/4001/p2p/{ID}",
        f"/dns4/node.example.org/tcp/4001/p2p/{ID}",
    ]
    assert shared(["/ip4/0.0.0.0/tcp/5"], ID, (), ["10.9.9.9"]) == [f"/ip4/10.9.9.9/tcp/5/p2p/{ID}"]


def test_a_wildcard_listener_shares_loopback_only_when_it_has_nothing_else() -> None:
    assert shared(["/ip4/0.0.0.0/tcp/5"], ID, (), ["127.0.0.1", "10.9.9.9"]) == [
        f"/ip4/10.9.9.9/tcp/5/p2p/{ID}"
    ]
    assert shared(["/ip4/0.0.0.0/tcp/5"], ID, (), ["127.0.0.1"]) == [
        f"/ip4/127.0.0.1/tcp/5/p2p/{ID}"
    ]


@pytest.mark.parametrize(
    ("addrs", "dialled"),
    [
        # Another host's loopback is this host: never dialled.
        (["/ip4/10.9.9.9/tcp/5", "/ip4/127.0.0.1/tcp/5"], ["/ip4/10.9.9.9/tcp/5"]),
        (["/dns4/peer.example/tcp/5", "/ip4/127.0.0.1/tcp/5"], ["/dns4/peer.example/tcp/5"]),
        (["/ip6/fe80::2/tcp/5", "/ip4/10.9.9.9/tcp/5"], ["/ip4/10.9.9.9/tcp/5"]),
        # A peer on this host (all else is ours, or there is nothing else): all of it.
        (["/ip4/127.0.0.1/tcp/5"], ["/ip4/127.0.0.1/tcp/5"]),
        (
            ["/ip4/10.1.2.3/tcp/5", "/ip4/127.0.0.1/tcp/5"],
            ["/ip4/10.1.2.3/tcp/5", "/ip4/127.0.0.1/tcp/5"],
        ),
        # A wildcard reaches whatever listens here, ourselves included: never.
        (["/ip4/0.0.0.0/tcp/5", "/ip4/10.9.9.9/tcp/5"], ["/ip4/10.9.9.9/tcp/5"]),
        (["/ip4/0.0.0.0/tcp/5"], []),
    ],
)
def test_a_peer_elsewhere_is_dialled_at_its_global_addresses_only(
    addrs: list[str], dialled: list[str]
) -> None:
    assert list(scoped(addrs, HOST_IPS)) == dialled


def test_an_address_of_another_peer_is_refused() -> None:
    with pytest.raises(AddressError, match="another peer"):
        with_peer("/ip4/203.0.113.7/tcp/4001/p2p/12D3KooWSomeoneElse", ID)


def test_the_host_addresses_are_read_with_the_standard_library() -> None:
    listed = json.loads(
        subprocess.run(["ip", "-j", "addr"], capture_output=True, check=True).stdout
    )
    expected = {
        info["local"]
        for link in listed
        if "UP" in link["flags"]
        for info in link.get("addr_info", [])
        if not info.get("tentative") and not info.get("dadfailed")
    }
    assert set(interface_ips()) == expected
    table = (
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "20010db8000000000000000000000005 02 40 00 80     eth0\n"
        "20010db8000000000000000000000006 02 40 00 c0     eth0\n"  # tentative: not yet usable
    )
    assert _ipv6(table) == [("lo", "::1"), ("eth0", "2001:db8::5")]


def test_addresses_of_an_interface_that_is_down_are_left_out() -> None:
    namespace = f"p2ph{os.getpid()}-if"
    ip("netns", "add", namespace)
    try:
        ip("-n", namespace, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
        ip("-n", namespace, "addr", "add", "10.55.0.1/24", "dev", "v0")
        ip("-n", namespace, "link", "set", "lo", "up")
        assert "10.55.0.1" not in _interface_ips_in(namespace)
        ip("-n", namespace, "link", "set", "v0", "up")
        assert "10.55.0.1" in _interface_ips_in(namespace)
    finally:
        ip("netns", "delete", namespace)


def _interface_ips_in(namespace: str) -> list[str]:
    code = "import json, p2pnode.net.addresses as a; print(json.dumps(a.interface_ips()))"
    command = ["ip", "netns", "exec", namespace, sys.executable, "-c", code]
    found = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    assert isinstance(found, list)
    return [str(address) for address in found]


# -- the announce setting -------------------------------------------------------------------


def test_announce_comes_from_the_file_the_environment_or_a_flag(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[node]\nannounce = ["/ip4/203.0.113.7/tcp/4001"]\n')
    assert load_settings(config).announce == ("/ip4/203.0.113.7/tcp/4001",)
    environ = {"P2PNODE_NODE_ANNOUNCE": "/ip4/198.51.100.1/tcp/1, /dns/a.example/tcp/2"}
    from_env = load_settings(config, environ)
    assert from_env.announce == ("/ip4/198.51.100.1/tcp/1", "/dns/a.example/tcp/2")
    flagged = load_settings(config, environ, ['node.announce=["/ip6/2001:db8::1/tcp/3"]'])
    assert flagged.announce == ("/ip6/2001:db8::1/tcp/3",)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("not a multiaddr", "is not a multiaddr"),
        ("/ip4/300.1.1.1/tcp/1", "is not a multiaddr"),
        ("/ip4/203.0.113.7/udp/1", "is not /ip4|ip6|dns/HOST/tcp/PORT"),
        ("/ip4/0.0.0.0/tcp/4001", "wildcard"),
    ],
)
def test_a_bad_announce_address_is_one_line_naming_the_setting(address: str, why: str) -> None:
    with pytest.raises(SettingsError, match=r"node\.announce") as raised:
        node_settings({"node": {"announce": [address]}})
    assert why in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_run_flag_beats_the_environment_and_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = new_home(tmp_path / "a", "/ip4/0.0.0.0/tcp/4001")
    monkeypatch.setenv("P2PNODE_NODE_ANNOUNCE", "/ip4/198.51.100.1/tcp/1")
    flags = ["--announce", "/ip4/203.0.113.7/tcp/4001", "--announce", "/dns/a.example/tcp/2"]
    args = build_parser().parse_args(["run", "--home", str(home.path), *flags])
    settings = commands._run_settings(args, home)
    assert settings.announce == ("/ip4/203.0.113.7/tcp/4001", "/dns/a.example/tcp/2")
    assert main(["run", "--home", str(home.path), "--announce", "/ip4/0.0.0.0/tcp/1"]) == 1
    error = capsys.readouterr().err.strip()
    assert "node.announce" in error
    assert "\n" not in error


# -- p2pnode id -----------------------------------------------------------------------------


def new_home(
    path: Path, listen: str, extra: Mapping[str, object] | None = None
) -> tuple[Home, str]:
    home, keypair = create_home(path)
    write_config(home, [listen], [], extra)
    return home, keypair.prover.identity()


def printed(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(list(args)) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line.split()[1] for line in lines if line.startswith("address: ")]


def test_id_with_a_wildcard_listen_prints_the_host_addresses_not_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home, _ = new_home(tmp_path / "a", "/ip4/0.0.0.0/tcp/4001")
    shown = printed(capsys, "id", "--home", str(home.path))
    assert shown, "no address printed"
    assert not [address for address in shown if "0.0.0.0" in address]
    others = {ip for ip in interface_ips() if "." in ip and not ip.startswith("127.")}
    assert others, "this test needs an IPv4 interface besides loopback"
    assert {address.split("/")[2] for address in shown} == others


def test_id_prints_exactly_the_announced_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    announce = {"announce": ["/ip4/203.0.113.7/tcp/4001"]}
    home, peer = new_home(tmp_path / "a", "/ip4/0.0.0.0/tcp/4001", announce)
    assert printed(capsys, "id", "--home", str(home.path)) == [
        f"/ip4/203.0.113.7/tcp/4001/p2p/{peer}"
    ]
    monkeypatch.setenv("P2PNODE_NODE_ANNOUNCE", f"/dns4/a.example/tcp/9/p2p/{peer}")
    assert printed(capsys, "id", "--home", str(home.path)) == [f"/dns4/a.example/tcp/9/p2p/{peer}"]


def test_id_refuses_an_announced_address_of_another_peer_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, _ = new_home(tmp_path / "a", "/ip4/0.0.0.0/tcp/4001")
    monkeypatch.setenv("P2PNODE_NODE_ANNOUNCE", f"/ip4/203.0.113.7/tcp/1/p2p/{ID}")
    assert main(["id", "--home", str(home.path)]) == 1
    error = capsys.readouterr().err.strip()
    assert "node.announce" in error
    assert "another peer" in error
    assert "\n" not in error


# -- what a running peer shares ---------------------------------------------------------------


class Records:
    """A judge that accepts everything and keeps the peer records announced to it."""

    def __init__(self) -> None:
        self.addrs: dict[str, tuple[str, ...]] = {}

    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        record = decode_record(data, origin) if topic is Topic.PEERS else None
        if record is not None:
            self.addrs[origin] = record.addrs
        return Verdict.ACCEPT


def _seed(index: int) -> bytes:
    return hashlib.sha256(b"test-hosts peer %d" % index).digest()


PROVERS = frozenset(
    peer_id_text(create_identity_from_seed(_seed(index)).public_key.to_bytes())
    for index in range(2)
)
"""Both peers are provers: only a prover's announcements are learned (and made)."""


def net_config(index: int, **fields: Any) -> NetConfig:
    return NetConfig(
        network="hosts", seed=_seed(index), expected_peers=2, provers=PROVERS, **fields
    )


async def test_announce_replaces_what_a_running_peer_shares_in_its_peer_records() -> None:
    heard = Records()
    with trio.fail_after(30):
        async with open_network(net_config(0), heard) as listener:
            first = listener.addrs()[0]
            assert "/ip4/127.0.0.1/tcp/0/" not in first  # the bound port, read back
            announce = ("/ip4/203.0.113.7/tcp/4001",)
            config = net_config(1, bootstrap=(first,), announce=announce)
            async with open_network(config, Records()) as announcer:
                expected = (f"/ip4/203.0.113.7/tcp/4001/p2p/{announcer.peer_id}",)
                assert tuple(announcer.addrs()) == expected
                while announcer.peer_id not in heard.addrs:
                    await trio.sleep(0.05)
                assert heard.addrs[announcer.peer_id] == expected


# -- the dashboard ----------------------------------------------------------------------------


def test_the_dashboard_shows_the_address_to_dial_first() -> None:
    data = sample()
    data["addrs"] = [f"/ip4/10.1.2.3/tcp/4001/p2p/{ID}", f"/ip4/127.0.0.1/tcp/4001/p2p/{ID}"]
    status = parse_status(data, "http://127.0.0.1:1")
    assert status.problems == ()
    text = render(peer_view(status, 80, 24, now=0.0), 80, 24)
    assert "at /ip4/10.1.2.3/tcp/4001 +1" in " ".join(text.split())
    assert "0.0.0.0" not in text


# -- four hosts ---------------------------------------------------------------------------------

FIXED_PORT = 4001
"""peer0 listens on a fixed port (its namespace is new: nothing else can hold it), so that
`p2pnode id` can print its address before it starts; so does the last peer, which announces
its address; the others take whatever port is free."""
RANKS = 3


async def printed_in(namespace: str, home: Home) -> list[str]:
    """The addresses `p2pnode id` prints when run on the namespace's host."""
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "p2pnode", "id"]
    done = await trio.run_process(
        [*command, "--home", str(home.path)], capture_stdout=True, capture_stderr=True
    )
    lines = done.stdout.decode().splitlines()
    return [line.split()[1] for line in lines if line.startswith("address: ")]


async def write_homes(out: Path, links: list[Link]) -> list[Home]:
    """Four provers listening on every interface; the last announces its address; all but
    peer0 join by the non-loopback address `p2pnode id` prints on peer0's host."""
    _, homes = generate_testnet(out, len(links))
    write_config(homes[0], [f"/ip4/0.0.0.0/tcp/{FIXED_PORT}"], [])
    shown = await printed_in(links[0].namespace, homes[0])
    routable = [address for address in shown if "/ip4/127." not in address]
    assert routable[0].startswith(f"/ip4/{links[0].address}/tcp/{FIXED_PORT}/p2p/"), shown
    for home in homes[1:-1]:
        write_config(home, ["/ip4/0.0.0.0/tcp/0"], routable[:1])
    announce = {"announce": [f"/ip4/{links[-1].address}/tcp/{FIXED_PORT}"]}
    write_config(homes[-1], [f"/ip4/0.0.0.0/tcp/{FIXED_PORT}"], routable[:1], announce)
    return homes


async def test_four_provers_on_four_hosts_join_by_the_address_id_prints(tmp_path: Path) -> None:
    fabric = Fabric(f"p2ph{os.getpid()}")
    cluster: Cluster | None = None
    try:
        with trio.fail_after(240):
            links = fabric.build(4)
            cluster = running = Cluster(fabric, await write_homes(tmp_path, links))
            for peer in running.peers:
                running.spawn(peer)
            for peer in running.peers:
                assert await running.wait_started(peer, 90) is None, running.tail(peer)
            await wait_for(lambda: _settled(running), timeout=120, what="4 peers to agree")
            for peer in running.peers:
                _check_output(peer, announces=peer is running.peers[-1])
    finally:
        if cluster is not None:
            cluster.stop()
        errors = fabric.remove()
    assert errors == []


async def _settled(cluster: Cluster) -> bool:
    """Each peer shares its namespace's address, never a wildcard, and the last exactly the
    one it announces; each is connected to the three others (so their records were
    dialable), and all hold RANKS or more identical final frames."""
    chains = []
    for peer in cluster.peers:
        status = await cluster.status(peer)
        _check_shared(peer, status, announces=peer is cluster.peers[-1])
        assert status.problems == (), status.problems
        chains.append(dict(status.recent))
        if len(status.peers) < len(cluster.peers) - 1:
            return False
    if min(len(chain) for chain in chains) < RANKS:
        return False
    shared_ranks = set.intersection(*(set(chain) for chain in chains))
    assert all(len({chain[rank] for chain in chains}) == 1 for rank in shared_ranks), chains
    return len(shared_ranks) >= RANKS


def _check_shared(peer: ClusterPeer, status: PeerStatus, *, announces: bool) -> None:
    addrs = status.addrs
    if announces:
        assert addrs == (f"/ip4/{peer.link.address}/tcp/{FIXED_PORT}/p2p/{status.peer_id}",)
        return
    assert addrs[0].startswith(f"/ip4/{peer.link.address}/tcp/"), addrs
    assert not [a for a in addrs if "/127.0.0.1/" in a], "loopback goes nowhere beyond"
    assert not [a for a in addrs if "/0.0.0.0/" in a or "/tcp/0/" in a], addrs


def _check_output(peer: ClusterPeer, *, announces: bool) -> None:
    """The daemon's own lines name the addresses to dial, never a wildcard."""
    said = peer.output.read_text(errors="replace").splitlines()
    assert not [line for line in said if "0.0.0.0" in line], said
    marker = "announcing " if announces else "listening on "
    shown = [line.split(marker, 1)[1] for line in said if marker in line]
    assert shown, said
    assert shown[0].startswith(f"/ip4/{peer.link.address}/tcp/"), said
