"""Building blocks of one peer's view: header, round, provers, rounds, verdicts, events."""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Sequence

from rich.text import Text

from p2pnode.dashboard import fmt, layout
from p2pnode.dashboard.layout import Block, Cell
from p2pnode.peer.phases import Phase
from p2pnode.peer.status import ErrorRow, PeerStatus, RoundSummary, TransitionRow


def flow(parts: Sequence[Text], width: int) -> Block:
    """Fields two spaces apart, on as many lines as they need: a field is never split."""
    lines = [Text()]
    for part in parts:
        if lines[-1] and lines[-1].cell_len + 2 + part.cell_len > width:
            lines.append(Text())
        if lines[-1]:
            lines[-1].append("  ")
        lines[-1].append(part)
    return [layout.clip(text, width) for text in lines]


def field(label: str, value: Text | str) -> Text:
    text = Text(label + " ", style="dim")
    text.append(value)
    return text


def header(status: PeerStatus, width: int, *, wide: bool, full: bool = False) -> Block:
    """Who the peer is, how its engine and sync go, how connected it is."""
    who = Text(status.peer_id if full else fmt.short_id(status.peer_id, 6 if wide else 4))
    who.stylize("bold")
    final = Text(str(status.finalized_rank))
    if wide:
        final.append(f" {fmt.short_frame(status.finalized_id, 16)}", style="dim")
    first = flow(
        [
            who,
            Text(status.network),
            Text(status.role),
            fmt.state_text(status.state, status.state_time),
            field("final", final),
            fmt.sync_text(status, long=wide),
        ],
        width,
    )
    second = flow(
        [
            field("peers", str(len(status.peers))),
            field("mesh", fmt.mesh_text(status, long=full)),
            field("last final", fmt.since_text(status.since_finalized, " ago")),
            field("mempool", str(status.mempool)),
            field("hop", fmt.millis(status.hop_latency_ms)),
            *([field("transitions", str(status.transitions))] if wide else []),
            *([field("at", fmt.address_text(status.addrs))] if status.addrs else []),
        ],
        width,
    )
    lines = first + second
    if status.problems:
        shown = ", ".join(status.problems[:6])
        more = f" (+{len(status.problems) - 6})" if len(status.problems) > 6 else ""
        lines.append(layout.clip(Text(f"partial status: {shown}{more}", style="yellow"), width))
    return lines


def round_lines(status: PeerStatus, width: int) -> Block:
    """The round being decided: liveness, proposals, votes against quorum, vote and lock."""
    r = status.round
    title = Text(f"round {r.rank}", style="bold")
    if r.attempt:
        # A retry: the first attempt of this rank did not reach a quorum.
        title.append(f" attempt {r.attempt}", style="yellow")
    parts = [
        title,
        field("liveness", fmt.liveness_text(len(r.live), r.minimum_provers)),
        field("proposals", str(len(r.proposals))),
        field("votes", fmt.votes_text(r.vote_groups, r.quorum)),
        field("voted", fmt.mark(r.voted)),
        field("lock", fmt.lock_text(r.locked_on, r.lock_attempt)),
    ]
    if r.equivocators:
        parts.append(Text(f"{len(r.equivocators)} equivocating", style="bold red"))
    return flow(parts, width)


def prover_order(status: PeerStatus) -> list[str]:
    """Genesis order, then any prover only the round knows of."""
    known = list(status.provers)
    return known + [p for p in status.round.provers if p not in known]


def prover_table(
    status: PeerStatus, width: int, *, limit: int, wide: bool, full_ids: bool = False
) -> Block:
    """One row per prover: what this peer saw of it this round, and its recent final frames."""
    r = status.round
    with_votes = r.votes_for is not None
    proposals, wins = dict(r.proposals), Counter(row.prover for row in status.recent_rounds)
    live, voters, confirmers = set(r.live), r.voters, r.confirmers
    rows: list[list[Cell]] = []
    for prover in prover_order(status)[:limit]:
        name = Text(prover if full_ids else fmt.short_id(prover, 6 if wide else 4))
        if prover == status.peer_id:
            name.stylize("bold")
            name.append(" *", style="dim")
        frame = proposals.get(prover)
        cells: list[Cell] = [
            name,
            fmt.mark(prover in live),
            Text(fmt.short_frame(frame, 16 if wide else 8)) if frame else fmt.mark(False),
        ]
        if with_votes:
            cells.append(str(r.votes_on(frame) or 0) if frame else "")
        equivocating = prover in r.equivocators
        cells += [
            fmt.mark(prover in voters),
            fmt.mark(prover in confirmers),
            Text("✗", style="bold red") if equivocating else fmt.mark(False),
            str(wins[prover]),
        ]
        rows.append(cells)
    headers = ["prover", "live", "proposal", *(["votes"] if with_votes else [])]
    headers += ["voted", "conf", "equiv", "wins"]
    return layout.table(headers, rows, width, right=("votes", "wins"))


def rounds_table(rows: Sequence[RoundSummary], width: int, *, limit: int, wide: bool) -> Block:
    """Recent final frames, newest first; a rank that needed a retry is yellow.

    Narrow, the attempt column goes: the rank's colour already tells a retry.
    """
    cells: list[list[Cell]] = []
    for row in rows[: max(limit, 0)]:
        style = "yellow" if row.attempt else ""
        cells.append(
            [
                Text(str(row.rank), style=style),
                fmt.short_id(row.prover, 6 if wide else 4),
                fmt.short_frame(row.frame_id, 16 if wide else 8),
                str(row.mutations),
                str(row.signers),
                *([Text(str(row.attempt), style=style)] if wide else []),
                fmt.millis(row.duration_ms),
                *(_phase_cells(row) if wide else []),
            ]
        )
    phases = [PHASE_HEADERS[phase] for phase in SHOWN_PHASES] if wide else []
    headers = ["rank", "prover", "frame", "muts", "votes", *(["att"] if wide else []), "took"]
    right = ("rank", "muts", "votes", "took", *phases)
    return layout.table([*headers, *phases], cells, width, right=right)


SHOWN_PHASES = (Phase.LIVENESS, Phase.PROVING, Phase.VOTING, Phase.CONFIRMATION)
PHASE_HEADERS = {
    Phase.LIVENESS: "live",
    Phase.PROVING: "prove",
    Phase.VOTING: "vote",
    Phase.CONFIRMATION: "conf",
}


def _phase_cells(row: RoundSummary) -> list[Cell]:
    """Where the round's time went on this peer: the slowest phase stands out."""
    if row.phases is None:
        return [fmt.NONE for _ in SHOWN_PHASES]
    millis = [row.phases.millis[phase] for phase in SHOWN_PHASES]
    slowest = max(millis)
    return [Text(fmt.millis(m), style="bold" if m == slowest and m else "") for m in millis]


def verdict_table(status: PeerStatus, width: int, *, reasons: int, wide: bool) -> Block:
    """Gossip verdicts per topic; then why messages were rejected, most frequent first."""
    rows: list[list[Cell]] = []
    for v in status.counters:
        topic = v.topic if wide else fmt.SHORT_TOPICS.get(v.topic, v.topic)
        reject = Text(fmt.count(v.reject), style="bold red" if v.reject else "dim")
        accept = Text(fmt.count(v.accept), style="green")
        rows.append([topic, accept, fmt.count(v.ignore), reject])
    names = ["accept", "ignore", "reject"] if wide else ["acc", "ign", "rej"]
    lines = layout.table(["messages", *names], rows, width, right=names)
    top = sorted(status.rejected, key=lambda kv: kv[1], reverse=True)
    for why, count in top[:reasons]:
        lines.append(layout.clip(Text(f"{count} {why}", style="red"), width))
    return lines


def verdict_height(status: PeerStatus, reasons: int) -> int:
    return 1 + len(status.counters) + min(reasons, len(status.rejected))


def verdict_summary(status: PeerStatus, width: int) -> Text:
    """All topics' verdicts on one line, for when the table does not fit."""
    text = Text("messages ", style="dim")
    for name in ("accept", "ignore", "reject"):
        total = sum(getattr(v, name) for v in status.counters)
        style = fmt.VERDICT_STYLE[name] if name != "reject" or total else "dim"
        text.append(f"{name} {total}  ", style=style)
    text.rstrip()
    return layout.clip(text, width)


Event = tuple[float, str, TransitionRow | ErrorRow]
"""When (the peer's clock), whose (a label, may be empty) and what."""


def events(status: PeerStatus, *, who: str = "") -> list[Event]:
    """Transitions and errors, to be merged, cut and only then formatted.

    A state's transition to itself (a vote or confirmation re-evaluated) changes nothing the
    operator sees, and in a busy round such entries would push out every real change.
    """
    changes = (t for t in status.transition_log if t.source != t.target)
    rows: list[Event] = [(t.at or 0.0, who, t) for t in changes]
    return rows + [(e.at or 0.0, who, e) for e in status.errors]


def event_lines(rows: Sequence[Event], now: float, width: int, limit: int, title: str) -> Block:
    """The newest `limit - 1` events under a title line; nothing when there is no room."""
    if limit < 2:
        return []
    newest = heapq.nlargest(limit - 1, rows, key=lambda row: row[0])
    lines = [Text(title, style="bold dim"), *(_event_text(row, now) for row in newest)]
    return [layout.clip(text, width) for text in lines]


def _event_text(event: Event, now: float) -> Text:
    at, who, what = event
    text = Text(f"{who}{fmt.seconds(_age(at or None, now)):>5} ", style="dim")
    if isinstance(what, ErrorRow):
        text.append(what.message, style="red")
        return text
    text.append(what.source)
    text.append("→", style="dim")
    text.append(fmt.state_text(what.target))
    text.append(f" {what.event}", style="dim")
    return text


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else now - at
