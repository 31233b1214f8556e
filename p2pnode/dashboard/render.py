"""Pure functions from parsed statuses to rich renderables that fit a given terminal size."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group
from rich.text import Text

from p2pnode.dashboard import fleet, fmt, layout, parts
from p2pnode.dashboard.layout import Block
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.peer.status import PeerStatus

WIDE = 120
"""From this width on, blocks stand side by side at full detail."""
FULL_IDS = 150
"""From this width on, the header and the provers table show whole peer ids."""
WIDE_REASONS = 5
"""Rejection reasons listed under the verdicts in the wide view."""
SIDE_BY_SIDE = 76
"""Narrower than this, the verdict table becomes one summary line."""
EVENTS = "recent transitions and errors"


def peer_view(
    status: Reading, width: int, height: int, *, now: float | None = None, footer: str = ""
) -> Group:
    """One peer in full detail; rows are dropped, never wrapped, to fit width by height; a
    line says when the peer is stalled and why, and `footer` ends the view."""
    now = time.time() if now is None else now
    ends = [layout.clip(Text(footer, style="dim"), width)] if footer else []
    if isinstance(status, Unreachable):
        return Group(*_unreachable(status, width, now), *ends)
    height -= len(ends)
    wide = width >= WIDE
    lines = parts.header(status, width, wide=wide, full=width >= FULL_IDS)
    stalled = fleet.stalled([status])
    if stalled:
        lines.insert(1, layout.clip(Text(stalled, style="bold red"), width))
    lines += parts.round_lines(status, width)
    room = height - len(lines)
    top = max(1 + len(parts.prover_order(status)), parts.verdict_height(status, WIDE_REASONS))
    if wide and room >= top + 4:
        lines += _wide_body(status, room, width, now)
    else:
        lines += _narrow_body(status, room, width, now)
    return Group(*lines[: max(height, 0)], *ends)


def _narrow_body(status: PeerStatus, room: int, width: int, now: float) -> Block:
    """The provers, then the recent rounds beside the verdicts, then events."""
    provers = len(parts.prover_order(status))
    shown = min(provers, room - 1) if room >= 2 else 0
    lines = parts.prover_table(status, width, limit=shown, wide=False) if shown else []
    return lines + _narrow_rest(status, room - len(lines), width, now)


def _narrow_rest(status: PeerStatus, room: int, width: int, now: float) -> Block:
    """Recent rounds beside the verdicts, then as many events as are left room for."""
    rounds = len(status.recent_rounds)
    side = width >= SIDE_BY_SIDE
    verdicts = parts.verdict_height(status, 2) if side else 1
    evs = parts.events(status)
    middle_want = max(verdicts, 1 + rounds)
    # Rounds first, but at least a few events: they show where the engine is going.
    middle_min = min(middle_want, max(verdicts, 1 + min(rounds, 5)))
    ev_room = min(1 + len(evs), max(room - middle_want, min(room - middle_min, 6)))
    ev_room = ev_room if ev_room >= 2 else 0
    middle = min(room - ev_room, middle_want)
    lines: Block = []
    if side and middle >= verdicts:
        table = parts.rounds_table(status.recent_rounds, width, limit=middle - 1, wide=False)
        right = parts.verdict_table(status, width, reasons=2, wide=False)
        lines += layout.beside(table, right, width)
    elif middle >= 1:
        lines.append(parts.verdict_summary(status, width))
        if middle >= 2:
            lines += parts.rounds_table(status.recent_rounds, width, limit=middle - 2, wide=False)
    return lines + parts.event_lines(evs, now, width, ev_room, EVENTS)


def _wide_body(status: PeerStatus, room: int, width: int, now: float) -> Block:
    """The provers beside the verdicts, then the recent rounds beside transitions and errors."""
    count = len(parts.prover_order(status))
    provers = parts.prover_table(status, width, limit=count, wide=True, full_ids=width >= FULL_IDS)
    verdicts = parts.verdict_table(status, width, reasons=WIDE_REASONS, wide=True)
    top = layout.beside(provers, verdicts, width, gap=4)
    rest = room - len(top) - 1
    rounds = parts.rounds_table(status.recent_rounds, width, limit=rest - 1, wide=True)
    evs = parts.event_lines(parts.events(status), now, width, rest, EVENTS)
    return [*top, Text(""), *layout.beside(rounds, evs, width, gap=4)]


def _unreachable(peer: Unreachable, width: int, now: float) -> Block:
    title = Text(fmt.url_label(peer.url) + "  ", style="bold")
    title.append(fmt.unreachable_text(peer, now))
    return [layout.clip(title, width), layout.clip(Text(peer.reason, style="red"), width)]


def testnet_view(
    statuses: Sequence[Reading],
    width: int,
    height: int,
    *,
    now: float | None = None,  # noqa: PT028 (a view whose name merely starts like a test's)
    footer: str = "",  # noqa: PT028
) -> Group:
    """All peers side by side, then the testnet's recent rounds beside its latest events;
    a line says when the testnet is stalled and why, and `footer` ends the view."""
    now = time.time() if now is None else now
    shown = list(statuses[: fleet.columns_that_fit(width)])
    reachable = [s for s in statuses if isinstance(s, PeerStatus)]
    rounds = fleet.shared_rounds(reachable)
    stalled = fleet.stalled(statuses)
    ends = [layout.clip(Text(footer, style="dim"), width)] if footer else []
    height -= len(ends)
    room = height - 1 - (1 if stalled else 0)
    # The grid first, leaving a legend and a few recent rounds below; then the matrix, then
    # the topics.
    grid_room = room - 2 - (min(1 + len(rounds), 6) if rounds else 0)
    provers, topics = len(fleet.provers_of(shown)), len(fleet.topics_of(shown))
    rows = max(1, min(len(fleet.PRIORITY), grid_room - provers))
    provers = max(0, min(provers, grid_room - rows))
    # All topics or none: a lone topic row would look like the whole story.
    topics = topics if grid_room - rows - provers >= topics else 0
    column = fleet.column_width(width, len(shown))
    lines = [_title(statuses, reachable, len(shown), width)]
    if stalled:
        lines.append(layout.clip(Text(stalled, style="bold red"), width))
    lines += fleet.peer_grid(
        shown, now, width, column=column, rows=rows, provers=provers, topics=topics
    )
    if provers and height - len(lines) >= 2:
        legend = fleet.MATRIX_LEGEND + (fleet.TOPICS_LEGEND if topics else "")
        lines.append(layout.clip(Text(legend, style="dim"), width))
    lines += _testnet_rest(rounds, reachable, len(reachable), height - len(lines), width, now)
    return Group(*lines[: max(height, 0)], *ends)


def _title(
    statuses: Sequence[Reading], reachable: Sequence[PeerStatus], shown: int, width: int
) -> Text:
    networks = sorted({s.network for s in reachable}) or ["testnet"]
    text = Text(" ".join(networks), style="bold")
    down = len(statuses) - len(reachable)
    text.append(f"  {len(statuses)} peers")
    if down:
        text.append(f"  {down} unreachable", style="bold red")
    if reachable:
        ranks = sorted(s.finalized_rank for s in reachable)
        spread = str(ranks[0]) if ranks[0] == ranks[-1] else f"{ranks[0]}..{ranks[-1]}"
        text.append(f"  final {spread}")
        text.append(f"  quorum {reachable[0].round.quorum}")
    if shown < len(statuses):
        text.append(f"  showing {shown}: widen the terminal for all", style="yellow")
    return layout.clip(text, width)


def _testnet_rest(
    rounds: Sequence[fleet.SharedRound],
    reachable: Sequence[PeerStatus],
    peers: int,
    room: int,
    width: int,
    now: float,
) -> Block:
    """The shared rounds table, with the merged events beside it or, when narrow, under it."""
    if room < 2:
        return []
    evs = fleet.testnet_events(reachable)
    if width >= 100:
        names = fmt.names_of(reachable)
        table = fleet.shared_rounds_table(rounds, peers, width, limit=room - 1, names=names)
        lines = parts.event_lines(evs, now, width, room, "recent events")
        return layout.beside(table, lines, width)
    ev_room = min(1 + len(evs), max(0, room - 1 - len(rounds)), 6)
    ev_room = ev_room if ev_room >= 2 else 0
    names = fmt.names_of(reachable)
    table = fleet.shared_rounds_table(rounds, peers, width, limit=room - 1 - ev_room, names=names)
    return table + parts.event_lines(evs, now, width, ev_room, "recent events")
