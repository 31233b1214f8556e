"""The README names tests as evidence: each test file and test it names exists."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).parent
README = (TESTS.parent / "README.md").read_text()
TOKEN = re.compile(r"`((?:tests/)?test_\w+\.py|…::test_\w+|test_\w+\.py::test_\w+|test_\w+)`")


def defines(file: Path, test: str) -> bool:
    return re.search(rf"^(?:async )?def {test}\(", file.read_text(), re.MULTILINE) is not None


def missing(token: str) -> bool:
    """Whether the test file or test a README token names is not there. `…::` stands for
    `test_attacks.py::` (the README says so); a bare name may be in any test file."""
    file, _, test = token.removeprefix("tests/").rpartition("::")
    if not file and test.endswith(".py"):
        return not (TESTS / test).exists()
    if not file:
        return not any(defines(path, test) for path in TESTS.glob("test_*.py"))
    path = TESTS / ("test_attacks.py" if file == "…" else file)
    return not path.exists() or not defines(path, test)


def test_every_test_the_readme_cites_exists() -> None:
    tokens = TOKEN.findall(README)
    assert len(tokens) > 50
    assert [token for token in tokens if missing(token)] == []
