"""The multiaddrs a peer shares (wildcards expanded, loopback only when alone) and dials (by
scope: another host's loopback is never dialled)."""

from __future__ import annotations

import array
import fcntl
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

SIOCGIFCONF = 0x8912
"""Linux: every IPv4 address of every interface, secondary ones included."""
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
_IFREQ_SIZE = 40 if struct.calcsize("P") == 8 else 32
_IFCONF = "iP"
"""struct ifconf: the buffer's length, then a pointer to it (native alignment pads between)."""
IF_INET6 = Path("/proc/net/if_inet6")
_UNUSABLE_INET6 = 0x40 | 0x08
"""IFA_F_TENTATIVE and IFA_F_DADFAILED: addresses the kernel will not use yet, or at all."""
LOOPBACK_IPS = ("127.0.0.1", "::1")


class AddressError(ValueError):
    """A multiaddr that cannot be shared as this peer's; the message names it."""


def _ip(multiaddr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP of an /ip4/… or /ip6/… multiaddr; None for any other (a DNS name, say)."""
    parts = multiaddr.split("/")
    if len(parts) < 3 or parts[1] not in ("ip4", "ip6"):
        return None
    try:
        return ipaddress.ip_address(parts[2])
    except ValueError:
        return None


def ip_of(multiaddr: str) -> str | None:
    """The IP of an /ip4/… or /ip6/… multiaddr as text; None for any other."""
    ip = _ip(multiaddr)
    return None if ip is None else str(ip)


def is_wildcard(multiaddr: str) -> bool:
    """/ip4/0.0.0.0/… or /ip6/::/…: every address of the host, which no other host can dial."""
    ip = _ip(multiaddr)
    return ip is not None and ip.is_unspecified


def _is_loopback(multiaddr: str) -> bool:
    ip = _ip(multiaddr)
    return ip is not None and ip.is_loopback


def expand(addrs: Sequence[str], interface_ips: Iterable[str]) -> list[str]:
    """`addrs` with each wildcard replaced by the interface IPs of its family, loopback last.

    IPv6 link-local addresses are left out: dialling one needs its interface's name, which a
    multiaddr from another host cannot know. Duplicates are dropped; the order is otherwise
    kept, so the first address is the one to try first.
    """
    ips = [ipaddress.ip_address(text) for text in interface_ips]
    dialable = [ip for ip in ips if not (ip.version == 6 and ip.is_link_local)]
    expanded: list[str] = []
    for addr in addrs:
        wildcard = _ip(addr)
        if wildcard is None or not wildcard.is_unspecified:
            expanded.append(addr)
            continue
        _, family, _, rest = addr.split("/", 3)
        expanded += [f"/{family}/{ip}/{rest}" for ip in dialable if ip.version == wildcard.version]
    # Someone on another host tries the addresses in order: loopback ones only work locally.
    return sorted(dict.fromkeys(expanded), key=_is_loopback)


def _is_host_scope(multiaddr: str) -> bool:
    """Loopback or link-local: an address that means something on one host or one link only."""
    ip = _ip(multiaddr)
    return ip is not None and (ip.is_loopback or ip.is_link_local)


def scoped(addrs: Sequence[str], local_ips: Iterable[str]) -> tuple[str, ...]:
    """What of a peer's addresses this host may dial (go-libp2p's address scopes): never a
    wildcard, and loopback or link-local ones only for a peer on this host, one whose every
    other address is this host's own. Dialled from elsewhere, another host's 127.0.0.1 is
    this host: peers in their own namespaces dialled themselves for minutes."""
    ours = {str(ipaddress.ip_address(ip)) for ip in local_ips}
    kept = [addr for addr in addrs if not is_wildcard(addr)]
    elsewhere = [addr for addr in kept if not _is_host_scope(addr)]
    here = all(str(_ip(addr)) in ours for addr in elsewhere if _ip(addr) is not None)
    here = here and all(_ip(addr) is not None for addr in elsewhere)  # a DNS name is elsewhere
    return tuple(kept if here else elsewhere)


def with_peer(addr: str, peer_id: str) -> str:
    """`addr` ending in /p2p/<peer_id>; AddressError if it names another peer."""
    _, marker, named = addr.rpartition("/p2p/")
    if not marker:
        return f"{addr.rstrip('/')}/p2p/{peer_id}"
    if named != peer_id:
        raise AddressError(f"{addr} names another peer than this one ({peer_id})")
    return addr


def shared(
    listening: Sequence[str], peer_id: str, announce: Sequence[str], interface_ips: Iterable[str]
) -> list[str]:
    """What this peer tells others to dial, each with /p2p/<peer_id>: `announce` when given,
    else the addresses it listens on with wildcards expanded."""
    if announce:
        return [with_peer(addr, peer_id) for addr in announce]
    expanded = expand(listening, interface_ips)
    # Loopback addresses only where there is nothing else: a peer on this host dials the
    # others as well, and one elsewhere would reach itself there.
    beyond = [addr for addr in expanded if not _is_loopback(addr)]
    return [with_peer(addr, peer_id) for addr in beyond or expanded]


def interface_ips() -> list[str]:
    """The IPv4 and IPv6 addresses of this host's interfaces that are up (Linux); only
    loopback if they cannot be read."""
    try:
        table = IF_INET6.read_text(encoding="ascii")
    except OSError:
        table = ""  # IPv6 is off
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            named = _ipv4(sock) + _ipv6(table)
            found = [ip for name, ip in named if _is_up(sock, name)]
    except (OSError, ValueError) as err:
        log.debug("cannot list the interface addresses: %s", err)
        found = []
    return found or list(LOOPBACK_IPS)


def _ipv4(sock: socket.socket) -> list[tuple[str, str]]:
    """(interface, address) of every IPv4 address, on interfaces up or down."""
    size = 64 * _IFREQ_SIZE
    while True:
        buffer = array.array("B", bytes(size))
        request = struct.pack(_IFCONF, size, buffer.buffer_info()[0])
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFCONF, request)
        used = int(struct.unpack(_IFCONF, reply)[0])
        if used < size:  # a full buffer may have cut the list short
            break
        size *= 2
    data = buffer.tobytes()
    # Each struct ifreq: a 16-byte name, then a sockaddr_in whose address starts 4 bytes in.
    return [
        (_name(data[at : at + 16]), socket.inet_ntoa(data[at + 20 : at + 24]))
        for at in range(0, used, _IFREQ_SIZE)
    ]


def _ipv6(table: str) -> list[tuple[str, str]]:
    """(interface, address) of the usable addresses in /proc/net/if_inet6, whose lines are:
    hex address, index, prefix, scope, flags, interface."""
    found = []
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and not int(fields[4], 16) & _UNUSABLE_INET6:
            found.append((fields[5], str(ipaddress.IPv6Address(bytes.fromhex(fields[0])))))
    return found


def _is_up(sock: socket.socket, interface: str) -> bool:
    """Whether the interface is up: an address of one that is down cannot be reached."""
    request = interface.encode()[:15].ljust(_IFREQ_SIZE, b"\0")
    try:
        reply = fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request)
    except OSError:  # gone since it was listed
        return False
    return bool(struct.unpack_from("h", reply, 16)[0] & IFF_UP)


def _name(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def why_unbound(addr: str) -> str:
    """Why a TCP listen address could not be bound, asked of the kernel after py-libp2p failed
    to listen on it (py-libp2p logs the reason but reports only a missing listener)."""
    ip, parts = _ip(addr), addr.split("/")
    if ip is None or len(parts) < 5 or parts[3] != "tcp" or not parts[4].isdigit():
        return "not an /ip4 or /ip6 TCP address"
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((str(ip), int(parts[4])))
    except OSError as err:
        return (err.strerror or str(err)).lower()
    return "py-libp2p could not listen there (see the log)"


LOOPBACK_V4 = ipaddress.IPv4Network("127.0.0.0/8")
LOOPBACK_V6 = ipaddress.IPv6Address("::1")


def is_loopback_ip(host: str) -> bool:
    """An IP literal of this machine: 127.0.0.0/8 or ::1. A name is never one (DNS could
    answer anything for it)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        return address == LOOPBACK_V6 and address.scope_id is None
    return address in LOOPBACK_V4  # built once: every status request asks
