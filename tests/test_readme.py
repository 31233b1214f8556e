"""The README names tests as evidence: each test file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
README = (TESTS.parent / "README.md").read_text()
CITED = re.compile(r"`(test_\w+\.py|…)(?:::(test_\w+))?`")


def cited() -> list[tuple[str, str | None]]:
    """(file, test or None) for every `file.py`, `file.py::test` and `…::test` (a test in
    `test_attacks.py`, as the README says) it cites."""
    return [
        ("test_attacks.py" if file == "…" else file, test or None)
        for file, test in CITED.findall(README)
    ]


def test_every_test_the_readme_cites_exists() -> None:
    citations = cited()
    assert len(citations) > 20
    missing = [
        f"{file}::{test}" if test else file
        for file, test in citations
        if not (TESTS / file).exists()
        or (test is not None and not re.search(rf"def {test}\(", (TESTS / file).read_text()))
    ]
    assert missing == []
