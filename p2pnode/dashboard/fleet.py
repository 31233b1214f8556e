"""The testnet view's building blocks: peers side by side, shared rounds, the prover matrix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.text import Text

from p2pnode.dashboard import fmt, layout, parts
from p2pnode.dashboard.layout import Block, Cell
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.peer.health import provers_reached
from p2pnode.peer.status import STALLED_AFTER, PeerStatus, RoundSummary

LABEL_WIDTH = 12
COLUMN_WIDTH = 15
"""Enough for `liveness_check 1.2s` cut short and `catching up 6/9`: the widest common cells."""
WIDE_COLUMN = 24
"""From this column width on, cells use their long forms."""
MAX_COLUMN = 36
"""Wider peer columns would only hold blank space."""


def _round_cell(s: PeerStatus, wide: bool) -> Text:
    text = Text(str(s.round.rank))
    if s.round.attempt:
        text.append(f" attempt {s.round.attempt}", style="yellow")
    return text


def _peers_cell(s: PeerStatus, wide: bool) -> Text:
    return Text(f"{len(s.peers)} · mesh ") + fmt.mesh_text(s)


def _messages_cell(s: PeerStatus, wide: bool) -> Text:
    if s.rejects:
        return Text(f"{s.rejects} rejected", style="bold red")
    total = sum(v.accept for v in s.counters)
    return Text(f"{total} accepted", style="green" if total else "dim")


def _errors_cell(s: PeerStatus, wide: bool) -> Text:
    """Errors in the peer's log (the engine's own go there too), else the engine's."""
    count = s.log_errors or len(s.errors)
    if not count:
        return Text(fmt.NONE, style="dim")
    last = s.last_log_error or (s.errors[-1].message if s.errors else "")
    return Text(f"{count}: {last}", style="red")


def _final_cell(s: PeerStatus, wide: bool) -> Text:
    since = fmt.since_text(s.since_finalized, " ago" if wide else "")
    return Text(f"{s.finalized_rank} · ") + since


def _votes_cell(s: PeerStatus, wide: bool) -> Text:
    text = fmt.votes_text(s.round.vote_groups, s.round.quorum)
    if s.round.equivocators:
        text.append(f" {len(s.round.equivocators)} equiv", style="bold red")
    return text


def _lock_cell(s: PeerStatus, wide: bool) -> Text:
    return fmt.lock_text(s.round.locked_on, s.round.lock_attempt, 12 if wide else 8)


CellFn = Callable[[PeerStatus, bool], Text]
ROWS: tuple[tuple[str, CellFn], ...] = (
    ("role", lambda s, wide: Text(s.role)),
    ("state", lambda s, wide: fmt.state_text(s.state, s.state_time)),
    ("final", _final_cell),
    ("sync", lambda s, wide: fmt.sync_text(s, long=wide)),
    ("peers", _peers_cell),
    ("round", _round_cell),
    ("liveness", lambda s, wide: fmt.liveness_text(len(s.round.live), s.round.minimum_provers)),
    ("proposals", lambda s, wide: Text(str(len(s.round.proposals)))),
    ("votes", _votes_cell),
    ("lock", _lock_cell),
    ("messages", _messages_cell),
    ("errors", _errors_cell),
    ("hop", lambda s, wide: Text(fmt.millis(s.hop_latency_ms))),
)
# Which rows stay when the terminal is short: the first ones of this list.
PRIORITY = (
    "state",
    "final",
    "sync",
    "round",
    "liveness",
    "votes",
    "proposals",
    "peers",
    "role",
    "messages",
    "errors",
    "lock",
    "hop",
)


def column_width(width: int, peers: int) -> int:
    """As wide as the terminal allows, between the narrow minimum and a useful maximum."""
    share = (width - LABEL_WIDTH) // max(1, peers) - 2
    return max(COLUMN_WIDTH, min(MAX_COLUMN, share))


def columns_that_fit(width: int) -> int:
    # Cells are two spaces apart.
    return max(1, (width - LABEL_WIDTH) // (COLUMN_WIDTH + 2))


def peer_grid(
    readings: Sequence[Reading],
    now: float,
    width: int,
    *,
    column: int,
    rows: int,
    provers: int,
    topics: int,
) -> Block:
    """A column per peer: the header essentials and its current round, then the prover matrix
    and, when there is room, its verdicts per topic."""
    chosen, wide = set(PRIORITY[:rows]), column >= WIDE_COLUMN
    names = fmt.names_of(readings)
    lines: list[list[Cell]] = []
    for label, cell in (row for row in ROWS if row[0] in chosen):
        lines.append(
            [Text(label, style="dim"), *(_cell(r, label, cell, wide, now) for r in readings)]
        )
    for prover in provers_of(readings)[:provers]:
        lines.append(
            [Text(fmt.who(prover, names), style="bold"), *(_marks(r, prover) for r in readings)]
        )
    for topic in topics_of(readings)[:topics]:
        name = Text(topic if wide else fmt.SHORT_TOPICS.get(topic, topic), style="dim")
        lines.append([name, *(_verdicts(r, topic) for r in readings)])
    headers: list[Cell] = ["", *(_peer_header(r, wide) for r in readings)]
    # Every column as wide whatever it holds now: widths do not jump from one refresh to the next.
    fixed = dict.fromkeys(range(1, len(readings) + 1), column)
    fixed[0] = LABEL_WIDTH + 2 if wide else LABEL_WIDTH
    return layout.table(headers, lines, width, fixed=fixed)


def _peer_header(reading: Reading, wide: bool) -> Text:
    if isinstance(reading, Unreachable):
        return Text(fmt.url_label(reading.url), style="bold red")
    text = Text(reading.name or fmt.short_id(reading.peer_id, 8 if wide else 4), style="bold")
    if reading.name and wide:
        text.append(f" {fmt.short_id(reading.peer_id)}", style="dim")
    if wide:
        text.append(f" {fmt.url_label(reading.url)}", style="dim")
    return text


def _cell(reading: Reading, label: str, cell: CellFn, wide: bool, now: float) -> Text:
    if isinstance(reading, PeerStatus):
        return cell(reading, wide)
    # An unreachable peer says so in its state row and why in the next one.
    if label == "state":
        return fmt.unreachable_text(reading, now)
    if label == "final":
        return Text(reading.reason, style="red")
    return Text("")


def provers_of(readings: Sequence[Reading]) -> list[str]:
    """The watched provers in column order, so each sees itself on the diagonal; then the rest."""
    known = [p for r in readings if isinstance(r, PeerStatus) for p in parts.prover_order(r)]
    watched = [r.peer_id for r in readings if isinstance(r, PeerStatus) and r.peer_id in known]
    return list(dict.fromkeys([*watched, *known]))


def topics_of(readings: Sequence[Reading]) -> list[str]:
    topics = {v.topic for r in readings if isinstance(r, PeerStatus) for v in r.counters}
    return sorted(topics)


def _verdicts(reading: Reading, topic: str) -> Text:
    """accept / ignore / reject of one topic, each in its verdict's colour."""
    if not isinstance(reading, PeerStatus):
        return Text("")
    found = [v for v in reading.counters if v.topic == topic]
    if not found:
        return Text(fmt.NONE, style="dim")
    v, text = found[0], Text()
    text.append(str(v.accept), style="green")
    text.append(f" / {v.ignore} / ", style="dim")
    text.append(str(v.reject), style="bold red" if v.reject else "dim")
    return text


MATRIX_LEGEND = "provers: L live  P proposed  V voted  C confirmed  E equivocated"
TOPICS_LEGEND = "; topics: accept / ignore / reject"


def _marks(reading: Reading, prover: str) -> Text:
    """LPVCE: the letters of what `reading`'s peer saw `prover` do in its current round."""
    if not isinstance(reading, PeerStatus):
        return Text("")
    r = reading.round
    seen = (
        ("L", prover in r.live, "green"),
        ("P", prover in dict(r.proposals), "green"),
        ("V", prover in r.voters, "green"),
        ("C", prover in r.confirmers, "green"),
        ("E", prover in r.equivocators, "bold red"),
    )
    text = Text()
    for letter, flag, style in seen:
        text.append(letter if flag else fmt.NO, style=style if flag else "dim")
    return text


@dataclass(frozen=True, slots=True)
class SharedRound:
    """A rank as all reachable peers know it."""

    row: RoundSummary
    frames: int
    """Distinct frame ids the peers hold final at this rank: more than one is a fork."""
    holders: int
    """Peers whose final rank has reached it."""


def shared_rounds(statuses: Sequence[PeerStatus]) -> list[SharedRound]:
    by_rank: dict[int, list[RoundSummary]] = {}
    for status in statuses:
        for row in status.recent_rounds:
            by_rank.setdefault(row.rank, []).append(row)
    merged = []
    for rank in sorted(by_rank, reverse=True):
        rows = by_rank[rank]
        holders = sum(1 for s in statuses if s.finalized_rank >= rank)
        merged.append(SharedRound(rows[0], len({r.frame_id for r in rows}), holders))
    return merged


def shared_rounds_table(
    rounds: Sequence[SharedRound],
    peers: int,
    width: int,
    *,
    limit: int,
    names: Mapping[str, str] | None = None,
) -> Block:
    """Recent final frames of the whole testnet; `final` counts the peers holding each rank."""
    lines: list[list[Cell]] = []
    for shared in rounds[: max(limit, 0)]:
        row = shared.row
        retried = "yellow" if row.attempt else ""
        frame = Text(fmt.short_frame(row.frame_id))
        if shared.frames > 1:
            # Peers hold different final frames at one rank: safety is broken.
            frame = Text(f"forked: {shared.frames}", style="bold red")
        lines.append(
            [
                Text(str(row.rank), style=retried),
                fmt.who(row.prover, names or {}),
                frame,
                str(row.mutations),
                str(row.signers),
                Text(str(row.attempt), style=retried),
                fmt.millis(row.duration_ms),
                Text(
                    f"{shared.holders}/{peers}", style="" if shared.holders == peers else "yellow"
                ),
            ]
        )
    headers = ["rank", "prover", "frame", "muts", "votes", "att", "took", "final"]
    return layout.table(headers, lines, width, right=("rank", "muts", "votes", "took", "final"))


def testnet_events(statuses: Sequence[PeerStatus]) -> list[parts.Event]:
    """Every peer's events, each marked with the tail of its peer id."""
    rows: list[parts.Event] = []
    for status in statuses:
        rows += parts.events(status, who=(status.name or status.peer_id[-4:]) + " ")
    return rows


def stalled(readings: Sequence[Reading]) -> str | None:
    """`stalled: no final frame for 25 s: 2 of 4 peers unreachable, no quorum (2 of 3)` when
    no reachable peer saw a frame become final for STALLED_AFTER seconds; else None. The
    quorum part counts the provers the best connected peer reaches, itself included."""
    reachable = [r for r in readings if isinstance(r, PeerStatus)]
    if not reachable:
        return f"stalled: none of the {len(readings)} peers answers"
    since = [r.since_finalized for r in reachable]
    latest = min((s for s in since if s is not None), default=None)
    if latest is not None and latest <= STALLED_AFTER:
        return None
    if latest is None and max(r.state_time for r in reachable) <= STALLED_AFTER:
        return None  # just started
    told = "since start" if latest is None else f"for {latest:.0f} s"
    reasons = []
    down = len(readings) - len(reachable)
    if down:
        reasons.append(f"{down} of {len(readings)} peers unreachable")
    quorum = reachable[0].round.quorum
    reached = max(provers_reached(r) for r in reachable)
    if reached < quorum:
        reasons.append(f"no quorum ({reached} of {quorum})")
    return f"stalled: no final frame {told}" + (": " + ", ".join(reasons) if reasons else "")
