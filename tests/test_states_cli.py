"""`p2pnode states`: the transition table and its Mermaid diagram come from the table itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from p2pnode.cli import main
from p2pnode.cli.states import mermaid
from p2pnode.consensus.states import State
from p2pnode.consensus.table import TRANSITIONS

EDGE = re.compile(r"^    (\w+) --> (\w+): (.+)$")


def _edges(diagram: str) -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for line in diagram.splitlines():
        found = EDGE.match(line)
        if found:
            source, target, labels = found.groups()
            edges[(source, target)] = labels.split(", ")
    return edges


def test_the_diagram_draws_every_transition_on_its_edge(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["states", "--mermaid"]) == 0
    diagram = capsys.readouterr().out
    assert diagram.startswith("stateDiagram-v2\n    [*] --> stopped\n")
    edges = _edges(diagram)
    drawn = {(s, t, label) for (s, t), labels in edges.items() for label in labels}
    expected = set()
    for transition in TRANSITIONS:
        guard = "" if transition.guard is None else f" [{transition.guard.value}]"
        label = transition.event.value + guard
        expected.add((transition.source.value, transition.target.value, label))
    assert drawn == expected
    assert {state for edge in edges for state in edge} == {state.value for state in State}


def test_the_table_lists_every_transition_in_the_order_the_engine_tries_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["states"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["from", "event", "[guard]", "to"]
    listed = [row.split() for row in rows]
    assert [(row[0], row[1], row[-1]) for row in listed] == [
        (t.source.value, t.event.value, t.target.value) for t in TRANSITIONS
    ]


def test_the_readme_shows_the_diagram_of_the_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"```mermaid\n{mermaid()}\n```" in readme
