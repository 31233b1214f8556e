"""What a chaos run shows: one table row per fault, the failures in full, a verdict line, JSON."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from p2pnode.chaos.faults import Event, Fault


@dataclass(frozen=True, slots=True)
class Verdict:
    ok: bool
    line: str


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _clock(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def table(events: Sequence[Event]) -> Table:
    out = Table(title="p2pnode chaos")
    for column in ("fault", "when", "duration", "resume", "checks", "result"):
        out.add_column(
            column, justify="right" if column in ("when", "duration", "resume") else "left"
        )
    for event in events:
        failed = [check.name for check in event.checks if not check.ok]
        passed = len(event.checks) - len(failed)
        summary = f"{passed}/{len(event.checks)}" + (f" ✗ {', '.join(failed)}" if failed else "")
        out.add_row(
            f"{event.fault.value} {event.target}",
            f"+{_clock(event.at)}",
            _seconds(event.duration),
            _seconds(event.resume),
            summary,
            "[green]PASS[/]" if event.ok else "[red]FAIL[/]",
        )
    return out


def failures(events: Sequence[Event]) -> list[str]:
    """One line per failed check (the fault, the check, why), each followed by its evidence."""
    lines = []
    for event in events:
        for check in event.checks:
            if not check.ok:
                where = f"{event.fault.value} {event.target} (+{_clock(event.at)})"
                lines.append(f"FAIL {where}: {check.name}: {check.detail}")
                if check.evidence:
                    lines.append(check.evidence)
    return lines


def verdict(events: Sequence[Event], *, wall: float, seed: int, interrupted: bool) -> Verdict:
    """PASS only for a complete run in which every check passed."""
    faults = sum(event.fault not in (Fault.START, Fault.END) for event in events)
    total = sum(len(event.checks) for event in events)
    failed = Counter(check.name for event in events for check in event.checks if not check.ok)
    tail = f"in {_clock(wall)} (seed {seed})"
    counts = f"{sum(failed.values())} of {_count(total, 'check')} failed"
    if interrupted:
        return Verdict(
            False, f"INTERRUPTED after {_count(faults, 'fault')}, {counts} so far, {tail}"
        )
    complete = bool(events) and events[-1].fault is Fault.END
    if not failed and complete:
        return Verdict(True, f"PASS: {_count(faults, 'fault')}, all {total} checks passed {tail}")
    names = ", ".join(f"{name} x{count}" for name, count in failed.most_common())
    reason = names if failed else "the run did not complete"
    return Verdict(False, f"FAIL: {counts} ({reason}) over {_count(faults, 'fault')} {tail}")


def to_json(
    events: Sequence[Event], result: Verdict, *, wall: float, seed: int
) -> dict[str, object]:
    return {
        "ok": result.ok,
        "verdict": result.line,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "events": [
            {
                "fault": event.fault.value,
                "target": event.target,
                "at": round(event.at, 1),
                "duration": None if event.duration is None else round(event.duration, 2),
                "resume": None if event.resume is None else round(event.resume, 2),
                "ok": event.ok,
                "checks": [
                    {"name": c.name, "ok": c.ok, "detail": c.detail, "evidence": c.evidence}
                    for c in event.checks
                ],
            }
            for event in events
        ],
    }
