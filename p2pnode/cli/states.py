"""`p2pnode states`: the engine's transition table, as text or as a Mermaid state diagram."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from p2pnode.consensus.states import State
from p2pnode.consensus.table import TRANSITIONS, Transition


def _label(transition: Transition) -> str:
    guard = transition.guard
    return transition.event.value + ("" if guard is None else f" [{guard.value}]")


def table_text(transitions: Sequence[Transition] = TRANSITIONS) -> str:
    """One line per transition, in the order the engine tries them: from, event, to."""
    rows = [("from", "event [guard]", "to")]
    rows += [(t.source.value, _label(t), t.target.value) for t in transitions]
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return "\n".join(
        f"{source:<{widths[0]}}  {label:<{widths[1]}}  {target}" for source, label, target in rows
    )


def mermaid(transitions: Sequence[Transition] = TRANSITIONS) -> str:
    """A Mermaid state diagram of the table: one edge per pair of states, naming every event
    that takes it (guards in brackets), the initial state marked."""
    edges: dict[tuple[State, State], list[str]] = {}
    for transition in transitions:
        edges.setdefault((transition.source, transition.target), []).append(_label(transition))
    lines = ["stateDiagram-v2", f"    [*] --> {State.STOPPED.value}"]
    for (source, target), labels in edges.items():
        lines.append(f"    {source.value} --> {target.value}: {', '.join(labels)}")
    return "\n".join(lines)


def states(args: argparse.Namespace) -> int:
    print(mermaid() if args.mermaid else table_text())
    return 0
