"""scripts/venv.sh: an install that fails (chiavdf cannot build) or a Python too old ends
in one line saying what is needed, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

VENV_SH = Path(__file__).parent.parent / "scripts" / "venv.sh"


def _ensure(folder: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"source {VENV_SH} && ensure_venv '[test]' && echo installed"],
        cwd=folder,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def _fake_venv(folder: Path, pip_status: int) -> None:
    """A .venv whose python is a script: pip exits with `pip_status`."""
    bin_dir = folder / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f"#!/bin/sh\necho 'error: could not build chiavdf' >&2\nexit {pip_status}\n")
    python.chmod(0o755)
    (folder / "pyproject.toml").write_text("")


def test_a_failed_install_ends_in_one_line_naming_what_chiavdf_needs(tmp_path: Path) -> None:
    _fake_venv(tmp_path, pip_status=1)
    result = _ensure(tmp_path)
    assert result.returncode == 1
    assert "installed" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert lines[0] == "error: could not build chiavdf", "pip's own words come first"
    assert lines[-1].startswith("installing p2pnode into .venv failed (pip said why above)")
    assert "cmake and GMP" in lines[-1]
    assert not (tmp_path / ".venv" / ".p2pnode-installed[test]").exists(), "tried again next time"


def test_an_install_is_marked_and_not_repeated(tmp_path: Path) -> None:
    _fake_venv(tmp_path, pip_status=0)
    assert _ensure(tmp_path).stdout == "installed\n"
    assert (tmp_path / ".venv" / ".p2pnode-installed[test]").exists()


def test_a_python_older_than_3_11_is_named(tmp_path: Path) -> None:
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\nexit 1\n")  # sys.version_info < (3, 11)
    old.chmod(0o755)
    result = _ensure(tmp_path, {"PYTHON": str(old)})
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"p2pnode needs Python 3.11 or newer; {old} is not (set PYTHON=python3.11)"
    )
    assert not (tmp_path / ".venv").exists()
