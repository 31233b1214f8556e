"""Short texts and meaningful colours for the dashboard's cells."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text

from p2pnode.dashboard.model import Unreachable
from p2pnode.peer.status import STALLED_AFTER, PeerStatus

ELLIPSIS = "…"
NONE = "—"
YES = "✓"
NO = "·"

# Colour says how things go, nothing else: green is healthy, yellow needs a look, red is wrong.
SYNC_STYLE = {"synced": "green", "catching up": "yellow", "stalled": "bold red"}
VERDICT_STYLE = {"accept": "green", "ignore": "yellow", "reject": "red"}
SHORT_TOPICS = {"confirmations": "confirms"}
"""Topic names for narrow terminals, where every cell counts."""
_ROUND_STATES = frozenset(
    {"collecting", "liveness_check", "proving", "publishing", "voting", "finalizing", "verifying"}
)
_STATE_SLOW = 10.0
"""Seconds in one round state after which it is worth a look (rounds take well under one)."""


def short_id(peer_id: str, keep: int = 4) -> str:
    """12D3…Abc9: peer ids share their head, so the tail is what tells them apart."""
    if len(peer_id) <= 2 * keep + 1:
        return peer_id
    return f"{peer_id[:4]}{ELLIPSIS}{peer_id[-keep:]}"


def who(peer_id: str, names: Mapping[str, str], keep: int = 4) -> str:
    """A peer's name (peer0, as its operator calls it) where known, else its short id."""
    return names.get(peer_id) or short_id(peer_id, keep)


def names_of(readings: Iterable[object]) -> dict[str, str]:
    """Peer id -> name of the peers whose status tells their name."""
    return {r.peer_id: r.name for r in readings if isinstance(r, PeerStatus) and r.name}


def short_frame(frame_id: str, keep: int = 8) -> str:
    """A hash's head, as git shows commits."""
    return frame_id[:keep] if frame_id else NONE


def address_text(addrs: tuple[str, ...]) -> str:
    """The address to dial first, without the /p2p/ suffix (the peer id is shown already),
    and how many more there are."""
    if not addrs:
        return NONE
    first = addrs[0].split("/p2p/", 1)[0]
    return first if len(addrs) == 1 else f"{first} +{len(addrs) - 1}"


def seconds(value: float | None) -> str:
    """0.3s, 12s, 3m04s, 2h05m: short and still readable at a glance."""
    if value is None:
        return NONE
    if value < 0:
        value = 0.0
    if value < 10:
        return f"{value:.1f}s"
    if value < 60:
        return f"{value:.0f}s"
    if value < 3600:
        return f"{int(value // 60)}m{int(value % 60):02d}s"
    return f"{int(value // 3600)}h{int(value % 3600 // 60):02d}m"


def millis(value: float | None) -> str:
    """438ms, 1.1s: never more than five cells."""
    if value is None:
        return NONE
    return f"{value:.0f}ms" if value < 1000 else seconds(value / 1000)


def count(value: int) -> str:
    """99999, 123k, 1.2M: counters that run for days keep to five cells."""
    if value < 100_000:
        return str(value)
    if value < 1_000_000:
        return f"{value // 1000}k"
    return f"{value / 1_000_000:.1f}M"


def state_text(state: str, in_state: float | None = None) -> Text:
    """The engine state; red when it is not running, yellow when a round state drags on."""
    if state in _ROUND_STATES:
        slow = in_state is not None and in_state > _STATE_SLOW
        style = "yellow" if slow else "cyan"
    elif state in {"starting", "loading"}:
        style = "yellow"
    else:
        style = "red"
    text = Text(state, style=style)
    if in_state is not None:
        text.append(f" {seconds(in_state)}", style=style if style != "cyan" else "")
    return text


def sync_text(status: PeerStatus, *, long: bool = False) -> Text:
    """synced / catching up / stalled, with own vs best-peer rank."""
    text = Text(status.sync, style=SYNC_STYLE.get(status.sync, "yellow"))
    own, best = status.finalized_rank, status.best_peer_rank
    text.append(f" own {own} / best {best}" if long else f" {own}/{best}")
    return text


def since_text(value: float | None, suffix: str = "") -> Text:
    """Time since the last final frame: red once the peer would call itself stalled."""
    if value is None:
        return Text(NONE, style="dim")  # none since this peer started
    style = "green" if value < 5 else "yellow" if value < STALLED_AFTER else "bold red"
    return Text(seconds(value) + suffix, style=style)


def liveness_text(live: int, minimum: int) -> Text:
    return Text(f"{live}/{minimum}", style="green" if live >= minimum else "yellow")


def votes_text(groups: tuple[int, ...], quorum: int) -> Text:
    """Votes against the quorum; `2+1/3` means voters split between two frames."""
    style = "green" if groups and groups[0] >= quorum else "yellow" if len(groups) > 1 else ""
    return Text("+".join(str(g) for g in groups or (0,)) + f"/{quorum}", style=style)


def mesh_text(status: PeerStatus, *, long: bool = False) -> Text:
    """Mesh sizes per topic; an empty mesh means a topic's messages cannot flow: red."""
    sizes = [n for _, n in status.mesh]
    if not sizes:
        return Text(NONE, style="dim")
    if long:
        text = Text()
        for topic, n in status.mesh:
            text.append(f"{topic} ")
            text.append(str(n), style="red" if n == 0 else "")
            text.append(" ")
        text.rstrip()
        return text
    low, high = min(sizes), max(sizes)
    return Text(str(low) if low == high else f"{low}..{high}", style="red" if low == 0 else "")


def lock_text(locked_on: str | None, lock_attempt: int | None, keep: int = 8) -> Text:
    if locked_on is None:
        return Text(NONE, style="dim")
    suffix = "" if lock_attempt is None else f"@{lock_attempt}"
    return Text(short_frame(locked_on, keep) + suffix, style="magenta")


def mark(flag: bool, style: str = "green") -> Text:
    return Text(YES, style=style) if flag else Text(NO, style="dim")


def unreachable_text(peer: Unreachable, now: float) -> Text:
    text = Text("ended" if peer.ended else "unreachable", style="bold red")
    if peer.since is not None:
        # Whole seconds: the column is narrow and the exact age does not matter.
        age = now - peer.since
        text.append(f" {age:.0f}s" if age < 60 else f" {seconds(age)}", style="red")
    return text


def url_label(url: str) -> str:
    """host:port of a status url, dropping the scheme and a loopback host."""
    rest = url.split("://", 1)[-1].rstrip("/")
    for loopback in ("127.0.0.1:", "localhost:"):
        if rest.startswith(loopback):
            return ":" + rest[len(loopback) :]
    return rest
