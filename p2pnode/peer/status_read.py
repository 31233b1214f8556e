"""Reading a peer's status JSON back into its record, defensively: never raises."""

from __future__ import annotations

import math
from collections.abc import Mapping

from p2pnode.consensus.rules import max_faults
from p2pnode.peer.phases import Phase, RoundPhases
from p2pnode.peer.status import (
    SYNC_STATES,
    CurrentRound,
    ErrorRow,
    PeerStatus,
    RoundSummary,
    TransitionRow,
    Verdicts,
    sync_state,
)

UNKNOWN = "?"


class _Fields:
    """Typed reads of one JSON object that note, instead of raising, what was unusable."""

    def __init__(self, data: Mapping[str, object], prefix: str, problems: list[str]) -> None:
        self.data, self.prefix, self.problems = data, prefix, problems

    def _bad(self, key: str) -> None:
        self.problems.append(self.prefix + key)

    def integer(self, key: str, default: int = 0) -> int:
        value = self.data.get(key)
        # JSON has one number type: a whole float is an int from a differently typed peer.
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        self._bad(key)
        return default

    def opt_integer(self, key: str) -> int | None:
        return None if self.data.get(key) is None else self.integer(key)

    def number(self, key: str) -> float | None:
        value = self.data.get(key)
        number = _finite(value)
        if number is None and (value is not None or key not in self.data):
            self._bad(key)
        return number

    def text(self, key: str, default: str = UNKNOWN) -> str:
        value = self.data.get(key)
        if isinstance(value, str):
            return value
        self._bad(key)
        return default

    def opt_text(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) else None

    def flag(self, key: str) -> bool:
        value = self.data.get(key)
        if isinstance(value, bool):
            return value
        self._bad(key)
        return False

    def opt_texts(self, key: str) -> tuple[str, ...]:
        """Like `texts`, but () without a problem when the key is absent (an older peer)."""
        return self.texts(key) if key in self.data else ()

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self._bad(key)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    def array(self, key: str) -> list[object]:
        value = self.data.get(key)
        if isinstance(value, list):
            return value
        self._bad(key)
        return []

    def mapping(self, key: str) -> dict[str, object]:
        value = self.data.get(key)
        if isinstance(value, dict):
            return value
        self._bad(key)
        return {}

    def pairs(self, key: str) -> tuple[tuple[str, str], ...]:
        return tuple((k, v) for k, v in self.mapping(key).items() if isinstance(v, str))

    def counts(self, key: str) -> tuple[tuple[str, int], ...]:
        items = self.mapping(key).items()
        return tuple((k, v) for k, v in items if isinstance(v, int) and not isinstance(v, bool))

    def sub(self, key: str) -> _Fields:
        return _Fields(self.mapping(key), f"{self.prefix}{key}.", self.problems)


def parse_status(data: object, url: str = "") -> PeerStatus:
    """The status a peer served; unusable fields become placeholders named in `problems`."""
    problems: list[str] = []
    f = _Fields(data if isinstance(data, dict) else {}, "", problems)
    if not isinstance(data, dict):
        problems.append("(not a JSON object)")
    finalized, best = f.integer("finalized_rank"), f.integer("best_peer_rank")
    since = f.number("since_finalized")
    provers = f.texts("provers")
    sync = f.opt_text("sync")
    # Counts of the log: absent from an older peer's status, which is no problem.
    logs = f.sub("log") if "log" in f.data else _Fields({}, "log.", [])
    if sync not in SYNC_STATES:
        sync = sync_state(finalized, max(best, finalized), since)
    return PeerStatus(
        url=url,
        peer_id=f.text("peer_id"),
        network=f.text("network"),
        role=f.text("role"),
        state=f.text("state"),
        state_time=f.number("state_time") or 0.0,
        finalized_rank=finalized,
        finalized_id=f.text("finalized_id", ""),
        best_peer_rank=max(best, finalized),
        sync=sync,
        since_finalized=since,
        peers=f.texts("peers"),
        mesh=f.counts("mesh"),
        counters=_verdicts(f.mapping("counters")),
        rejected=f.counts("rejected"),
        mempool=f.integer("mempool"),
        transitions=f.integer("transitions"),
        hop_latency_ms=f.number("hop_latency_ms"),
        hop_latency_p99_ms=f.number("hop_latency_p99_ms"),
        provers=provers,
        recent_rounds=tuple(_rows(f.array("recent_rounds"), problems)),
        transition_log=tuple(_transitions(f.array("transition_log"))),
        errors=tuple(_errors(f.array("errors"))),
        round=_round(f.sub("round"), provers),
        addrs=f.opt_texts("addrs"),
        recent=_recent(f.array("recent")),
        sync_rejected=f.integer("sync_rejected"),
        malformed=f.counts("malformed"),
        banned=f.texts("banned"),
        limited=f.counts("limited"),
        work=f.counts("work"),
        name=f.opt_text("name") or "",
        log_warnings=logs.integer("warnings"),
        log_errors=logs.integer("errors"),
        last_log_error=logs.opt_text("last_error") or "",
        problems=tuple(dict.fromkeys(problems)),
    )


def _verdicts(counters: Mapping[str, object]) -> tuple[Verdicts, ...]:
    rows = []
    for topic, counts in sorted(counters.items()):
        if isinstance(counts, dict):
            c = _Fields(counts, "", [])
            rows.append(
                Verdicts(topic, c.integer("accept"), c.integer("ignore"), c.integer("reject"))
            )
    return tuple(rows)


def _recent(items: list[object]) -> tuple[tuple[int, str], ...]:
    return tuple(
        (item[0], item[1])
        for item in items
        if isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and not isinstance(item[0], bool)
        and isinstance(item[1], str)
    )


def _rows(items: list[object], problems: list[str]) -> list[RoundSummary]:
    rows = []
    for item in items:
        if not isinstance(item, dict):
            continue
        r = _Fields(item, "recent_rounds[].", problems)
        rank = r.integer("rank", -1)
        rows.append(
            RoundSummary(
                rank=rank,
                frame_id=r.text("id", ""),
                prover=r.text("prover"),
                mutations=r.integer("mutations"),
                signers=r.integer("signers"),
                attempt=r.integer("attempt"),
                duration_ms=r.integer("duration_ms"),
                phases=_phases(rank, item.get("phases")),
            )
        )
    # Newest first, whatever order the peer sent them in.
    return sorted(rows, key=lambda row: row.rank, reverse=True)


def _phases(rank: int, value: object) -> RoundPhases | None:
    """A round's phase breakdown; None unless every phase is a count of milliseconds."""
    if not isinstance(value, dict):
        return None
    millis = {phase: value.get(phase.value) for phase in Phase}
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in millis.values()):
        return None
    return RoundPhases(rank, {phase: int(str(m)) for phase, m in millis.items()})


def _finite(value: object) -> float | None:
    """`value` as a finite float; None for anything else (NaN, infinities, an int too large
    for a float, which JSON allows and a dashboard cannot show)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _transitions(items: list[object]) -> list[TransitionRow]:
    rows = []
    for item in items:
        if isinstance(item, list) and len(item) >= 4:
            source, target, event = (str(v) for v in item[1:4])
            rows.append(TransitionRow(_finite(item[0]), source, target, event))
    return rows


def _errors(items: list[object]) -> list[ErrorRow]:
    rows = []
    for item in items:
        if isinstance(item, list) and len(item) >= 2:
            rows.append(ErrorRow(_finite(item[0]), str(item[1])))
        elif isinstance(item, str):
            rows.append(ErrorRow(None, item))
    return rows


def _round(r: _Fields, provers: tuple[str, ...]) -> CurrentRound:
    leaders = r.texts("provers")
    # Quorum is n - f of the provers, for a peer whose status does not say it.
    count = len(leaders or provers)
    quorum = r.opt_integer("quorum") or (count - max_faults(count) if count else 0)
    votes_for = r.data.get("votes_for")
    return CurrentRound(
        rank=r.integer("rank"),
        attempt=r.integer("attempt"),
        minimum_provers=r.integer("minimum_provers"),
        quorum=quorum,
        provers=leaders,
        live=r.texts("live"),
        proposals=r.pairs("proposals"),
        votes=r.pairs("votes"),
        votes_for=r.pairs("votes_for") if isinstance(votes_for, dict) else None,
        confirmations=_confirmations(r.mapping("confirmations")),
        voted=r.flag("voted"),
        locked_on=r.opt_text("locked_on"),
        lock_attempt=r.opt_integer("lock_attempt"),
        equivocators=r.texts("equivocators"),
    )


def _confirmations(value: Mapping[str, object]) -> tuple[tuple[int, tuple[str, ...]], ...]:
    rows = []
    for attempt, senders in value.items():
        # ASCII digits only ("²" is a digit to str.isdigit), and few enough for an int.
        if (
            attempt.isascii()
            and attempt.isdigit()
            and len(attempt) <= 19
            and isinstance(senders, list)
        ):
            rows.append((int(attempt), tuple(s for s in senders if isinstance(s, str))))
    return tuple(sorted(rows))
