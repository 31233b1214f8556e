"""Tiers and the budgets strangers share: by IP prefix, never by identity (explicit clocks)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing
from libp2p.network.exceptions import SwarmException

from p2pnode.net.admission import STREAM_COST, Admission, Refused
from p2pnode.net.contracts import NetConfig
from p2pnode.net.tiers import UNKNOWN_PREFIX, Seats, Shares, Tier, Tiers, prefix


@pytest.mark.parametrize(
    ("ip", "network"),
    [
        ("127.0.0.1", "127.0.0.0/24"),
        ("127.0.0.77", "127.0.0.0/24"),
        ("10.1.2.3", "10.1.2.0/24"),
        ("::ffff:10.1.2.3", "10.1.2.0/24"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", UNKNOWN_PREFIX),
        (None, UNKNOWN_PREFIX),
    ],
)
def test_a_stranger_is_budgeted_by_its_slash_24_or_slash_64(ip: str | None, network: str) -> None:
    assert prefix(ip) == network


def test_provers_and_named_peers_are_their_own_tiers() -> None:
    tiers = Tiers(provers={"p"}, named={"n", "p"})
    assert [tiers.of(peer) for peer in ("p", "n", "s")] == [
        Tier.PROVER,
        Tier.NAMED,
        Tier.STRANGER,
    ]
    assert not tiers.is_stranger("n")
    assert tiers.is_stranger("s")


def test_established_seats_refuse_a_full_prefix_and_even_out_between_prefixes() -> None:
    seats = Seats(total=4, per_prefix=3, displace_own=False)
    assert [seats.take(f"a{i}", "A")[0] for i in range(4)] == [True, True, True, False]
    assert seats.take("b0", "B") == (True, None)
    # All four seats taken: B holds fewer than A, so A's oldest makes room.
    assert seats.take("b1", "B") == (True, "a0")
    assert "a0" not in seats
    # Now A and B hold two each: a newcomer of either is refused, not churned in.
    assert seats.take("b2", "B") == (False, None)
    assert seats.take("a9", "A") == (False, None)
    seats.leave("a1")
    assert seats.take("a9", "A") == (True, None)
    assert seats.take("b1", "B") == (True, None), "a seated key is seated"


def test_handshake_seats_give_way_oldest_first_within_a_prefix_then_the_largest() -> None:
    seats = Seats(total=4, per_prefix=3, displace_own=True)
    for key in ("a0", "a1", "a2"):
        assert seats.take(key, "A") == (True, None)
    assert seats.take("a3", "A") == (True, "a0"), "a full prefix displaces its own oldest"
    assert seats.take("b0", "B") == (True, None)
    assert seats.take("c0", "C") == (True, "a1"), "a full house displaces the largest's oldest"
    assert seats.held_by("A") == 2
    assert len(seats) == 4


def test_a_handshake_that_speaks_outlasts_the_silent_ones_that_came_before_it() -> None:
    spoke = {"honest"}
    seats = Seats(total=8, per_prefix=2, displace_own=True, quiet=lambda key: key not in spoke)
    assert seats.take("silent0", "A") == (True, None)
    assert seats.take("honest", "A") == (True, None)
    for n in range(1, 50):
        _, displaced = seats.take(f"silent{n}", "A")
        assert displaced == f"silent{n - 1}", "the quiet go first, however old the honest is"
    assert "honest" in seats


def test_shares_pace_a_prefix_by_its_rate_and_all_strangers_by_the_total() -> None:
    shares = Shares(rate=100, burst=100, prefix_rate=40, prefix_burst=40)
    assert shares.charge("A", 0.0, 40) == 0.0
    assert shares.charge("A", 0.0, 20) == pytest.approx(0.5), "20 owed at 40/s"
    assert shares.charge("B", 0.0, 40) == 0.0, "another prefix has its own share"
    # The total (100) is now owed 0 after 100 spent; a third prefix's 40 waits for it.
    assert shares.charge("C", 0.0, 40) == pytest.approx(0.4)
    assert not shares.take("D", 0.0)
    assert shares.take("D", 1.0), "a second later the total has refilled"


def _config(**overrides: object) -> NetConfig:
    return NetConfig(network="test", seed=bytes(32), **overrides)  # type: ignore[arg-type]


async def test_admission_never_refuses_or_paces_provers_and_paces_strangers_by_prefix(
    autojump_clock: trio.testing.MockClock,
) -> None:
    kicked: list[str] = []
    config = _config(
        max_strangers=2, max_strangers_per_prefix=1, stranger_rate=100, stranger_prefix_rate=10
    )
    admission = Admission(config, Tiers(provers={"p1", "p2", "p3"}), kicked.append)
    assert all(admission.connected(p, "127.0.0.1") for p in ("p1", "p2", "p3"))
    assert admission.connected("s1", "127.0.0.1")
    assert not admission.connected("s2", "127.0.0.1"), "one stranger per prefix here"
    assert admission.connected("s3", "10.0.0.1")
    # Two strangers in all: a third network's newcomer takes the oldest seat of a largest one.
    assert admission.connected("s4", "10.0.1.1")
    assert kicked == ["s1"]
    assert admission.refused[Refused.STRANGER_SEATS] == 1
    assert admission.refused[Refused.STRANGER_DISPLACED] == 1
    assert admission.strangers() == 2
    admission.disconnected("s3")
    assert admission.connected("s2", "127.0.0.1"), "a seat that was left is free again"

    start = trio.current_time()
    for _ in range(10):
        await admission.pace("p1", 100)
    assert trio.current_time() == start, "a prover never waits"
    await admission.pace("s2", 20)  # the burst: 20
    assert trio.current_time() == start
    await admission.pace("s2", 10)
    assert trio.current_time() - start == pytest.approx(1.0), "10 more at 10/s"
    assert admission.refused[Refused.PACED] == 1


class _Stream:
    """What `paced_streams` reads of a stream: its peer; and whether it was reset."""

    def __init__(self, peer: str) -> None:
        self.muxed_conn = SimpleNamespace(peer_id=SimpleNamespace(to_base58=lambda: peer))
        self.was_reset = False

    async def reset(self) -> None:
        self.was_reset = True


async def test_a_network_s_stream_flood_never_refuses_another_network_s_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Streams a stranger opens are paced by its network's share, and refused past a second's
    wait on that share alone: refused ones were charged too, and one network's flood held
    the strangers' total at its floor, so every other stranger's streams were refused."""
    config = _config(stranger_rate=100, stranger_prefix_rate=50)
    admission = Admission(config, Tiers(provers={"p1"}), lambda _: None)
    for peer, ip in (("flooder", "10.0.0.1"), ("follower", "10.0.1.1"), ("p1", "10.0.0.2")):
        assert admission.connected(peer, ip)
    handled: list[str] = []

    async def handler(stream: Any) -> None:
        handled.append(stream.muxed_conn.peer_id.to_base58())

    paced: Any = admission.paced_streams(handler)  # called with stand-ins for streams
    flood = [_Stream("flooder") for _ in range(1000)]
    async with trio.open_nursery() as nursery:
        for stream in flood:
            nursery.start_soon(paced, stream)
        await trio.sleep(0)
        follower, prover = _Stream("follower"), _Stream("p1")
        start = trio.current_time()
        await paced(follower)
        await paced(prover)
        assert trio.current_time() - start <= 1.0
    assert not follower.was_reset
    assert not prover.was_reset
    assert handled.count("follower") == handled.count("p1") == 1
    refused = sum(stream.was_reset for stream in flood)
    assert refused == admission.refused[Refused.STREAMS] > 900
    # What got through is what the network's share paid for: a burst and a second's rate.
    assert handled.count("flooder") <= (2 * 50 + 50 * 1.0) / STREAM_COST + 1


class _Socket:
    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.closed = False

    def get_remote_address(self) -> tuple[str, int]:
        return (self.ip, 4001)

    async def close(self) -> None:
        self.closed = True


async def test_a_network_whose_strangers_send_junk_gets_fewer_connections_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handled: list[str] = []

    async def handle(stream: _Socket, maddr: object) -> None:
        handled.append(stream.ip)

    admission = Admission(_config(inbound_rate=1.0), Tiers(provers={"p"}), lambda peer: None)
    gate = admission.gate(handle)
    admission.connected("p", "10.0.0.1")
    admission.connected("s", "10.0.0.2")
    for _ in range(5):
        admission.charge("s")  # five rejected messages of a stranger of 10.0.0.0/24
        admission.charge("p")  # a prover's rejects cost no network anything
    refused = _Socket("10.0.0.3")
    await gate(refused, None)
    assert refused.closed, "its network owes three connections' worth (a burst of two)"
    await gate(_Socket("10.0.0.1"), None)
    await gate(_Socket("10.9.9.9"), None)
    assert handled == ["10.0.0.1", "10.9.9.9"], "a prover's address, another network"
    assert admission.refused[Refused.INBOUND_RATE] == 1
    await trio.sleep(4)
    await gate(_Socket("10.0.0.3"), None)
    assert handled[-1] == "10.0.0.3", "paid back at one a second"


def test_one_peer_s_connections_share_its_seat_and_give_it_up_with_the_last() -> None:
    admission = Admission(
        _config(max_strangers=2, max_strangers_per_prefix=1), Tiers(), lambda peer: None
    )
    assert admission.connected("s", "10.0.0.1", 1)
    assert admission.connected("s", "10.0.0.9", 2), "the same key again: the same seat"
    admission.disconnected("s", 1)
    assert admission.strangers() == 1, "its other connection still holds the seat"
    assert not admission.connected("t", "10.0.0.2", 3), "so 10.0.0.0/24 is still full"
    admission.disconnected("t", 3)
    admission.disconnected("s", 9)
    assert admission.strangers() == 1, "a connection never counted frees nothing"
    admission.disconnected("s", 2)
    assert admission.strangers() == 0
    assert admission.connected("t", "10.0.0.2")
    assert admission.seated("t")
    assert admission.seated("never told of"), "not told of yet: not kicked for it"


class _Raw(_Socket):
    async def read(self, n: int | None = None) -> bytes:
        return b""


async def test_a_prover_s_handshake_is_never_displaced_however_many_networks_dial(
    autojump_clock: trio.testing.MockClock,
) -> None:
    admission = Admission(
        _config(max_handshakes=2, max_handshakes_per_prefix=1), Tiers(provers={"p"}), print
    )
    admission.connected("p", "10.0.0.1")  # the prover's address is known from then on
    done = trio.Event()
    outcomes: dict[str, str] = {}

    async def upgrade(raw: _Raw, maddr: object) -> str:
        await done.wait()
        return "upgraded"

    guarded = admission.guard(upgrade)

    async def handshake(ip: str) -> None:
        try:
            outcomes[ip] = await guarded(_Raw(ip), None)
        except SwarmException as err:
            outcomes[ip] = str(err)

    async with trio.open_nursery() as nursery:
        for ip in ["10.0.0.1", *(f"10.{n}.0.1" for n in range(1, 11))]:
            nursery.start_soon(handshake, ip)
            await trio.sleep(0.01)
        done.set()
    assert outcomes["10.0.0.1"] == "upgraded"
    assert sum(o == "upgraded" for o in outcomes.values()) == 3, "the prover and two seats"
    assert admission.refused[Refused.HANDSHAKE_DISPLACED] == 8


async def test_a_stranger_from_a_prover_s_address_is_held_to_the_rate_once_known(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A prover's address is never refused at accept; the strangers that share it (a host or
    a NAT) pay the rate once their key is known, and their junk costs them more of it."""
    admission = Admission(_config(inbound_rate=1.0), Tiers(provers={"p"}), print)
    assert admission.connected("p", "10.0.0.1")
    admitted = [admission.connected(f"s{n}", "10.0.0.1") for n in range(4)]
    assert admitted == [True, True, False, False], "a burst of two, then one a second"
    assert admission.connected("p", "10.0.0.1"), "the prover itself, always"
    await trio.sleep(1)
    admission.charge("s0")
    assert not admission.connected("s9", "10.0.0.1"), "the second paid a reject's debt"


async def test_the_address_of_an_ipv6_socket_is_read_from_the_socket() -> None:
    """py-libp2p's `get_remote_address` answers None for an IPv6 peer (a 4-tuple): every IPv6
    stranger (and prover) fell into one 'unknown' prefix, one inbound rate for all."""
    from libp2p.io.trio import TrioTCPStream
    from libp2p.network.connection.raw_connection import RawConnection

    from p2pnode.net.fixes import socket_ip

    listeners = await trio.open_tcp_listeners(0, host="::1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        accepted: list[trio.SocketStream] = []

        async def accept() -> None:
            accepted.append(await listeners[0].accept())

        nursery.start_soon(accept)
        client = await trio.open_tcp_stream("::1", port)
    stream = TrioTCPStream(accepted[0])
    assert stream.get_remote_address() is None, "py-libp2p's answer, still"
    assert socket_ip(stream) == "::1"
    assert socket_ip(RawConnection(stream, False)) == "::1"
    assert prefix(socket_ip(stream)) == "::/64"
    for closing in (client, accepted[0], *listeners):
        await closing.aclose()


async def test_a_made_up_author_that_is_not_connected_costs_no_network_anything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    handled: list[str] = []

    async def handle(stream: _Socket, maddr: object) -> None:
        handled.append(stream.ip)

    admission = Admission(_config(inbound_rate=1.0), Tiers(), print)
    for n in range(50):
        admission.charge(f"made-up {n}")  # rejects authored under fresh keys, never connected
    await admission.gate(handle)(_Socket("not an address"), None)  # the "unknown" prefix
    await admission.gate(handle)(_Socket("2001:db8::1"), None)
    assert handled == ["not an address", "2001:db8::1"]


def test_one_network_s_flood_owes_the_total_no_more_than_a_burst() -> None:
    shares = Shares(rate=100, burst=100, prefix_rate=40, prefix_burst=40)
    assert shares.charge("A", 0.0, 100_000) == pytest.approx((100_000 - 40) / 40), "in full"
    assert shares.charge("B", 0.0, 0) == pytest.approx(1.0), "the others wait a burst's worth"
