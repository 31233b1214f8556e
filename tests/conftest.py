"""Shared test settings and fixtures."""

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests must not depend on wall-clock speed: no deadline, fixed example budget.
settings.register_profile("p2pnode", deadline=None, max_examples=200, derandomize=True)
settings.load_profile("p2pnode")


@pytest.fixture
def solo(tmp_path: Path) -> Path:
    """A home of a one-prover network, able to finalize alone."""
    home = tmp_path / "solo"
    command = ["init", "--home", str(home), "--network", "solo", "--difficulty", "100"]
    made = subprocess.run(
        [sys.executable, "-m", "p2pnode", *command], capture_output=True, text=True, check=False
    )
    assert made.returncode == 0, made.stderr
    return home
