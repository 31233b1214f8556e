"""Operating a peer: the systemd unit, and `p2pnode reset` of a stopped peer's store."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from p2pnode.peer.home import Home
from p2pnode.peer.settings import load_settings
from tests.test_cli import one_line_error, p2pnode

UNIT = Path(__file__).parent.parent / "config" / "p2pnode.service"


def _directives(text: str) -> dict[str, list[str]]:
    """Each `Key=value` of a unit file, by `Section.Key` (a key may repeat)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(f"{section}.{key}", []).append(value)
    return found


def test_the_unit_runs_the_peer_of_its_home_logging_json_to_the_journal() -> None:
    unit = _directives(UNIT.read_text())
    assert unit["Service.ExecStart"] == ["/opt/p2pnode/.venv/bin/p2pnode run"]
    assert unit["Service.KillSignal"] == ["SIGTERM"], "the peer's graceful stop"
    assert unit["Service.Restart"] == ["on-failure"]
    environment = dict(line.split("=", 1) for line in unit["Service.Environment"])
    assert environment["P2PNODE_HOME"].startswith("/var/lib/p2pnode/")
    settings = load_settings(None, environment)  # every variable names a valid setting
    assert (settings.log_to.value, settings.log_format.value) == ("stdout", "json")
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_systemd_accepts_the_unit_where_systemd_analyze_is_installed(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    text = UNIT.read_text().replace(
        "/opt/p2pnode/.venv/bin/p2pnode", str(Path(sys.executable).parent / "p2pnode")
    )
    text = text.replace("User=p2pnode", "User=root").replace("Group=p2pnode", "Group=root")
    (tmp_path / "p2pnode.service").write_text(text)
    if analyze is None:  # nothing to run it with: the structure test above still holds
        return
    broken = tmp_path / "broken.service"
    broken.write_text(text.replace("ExecStart=/", "ExecStart="))
    for path, accepted in ((tmp_path / "p2pnode.service", True), (broken, False)):
        result = subprocess.run(
            [analyze, "verify", str(path)], capture_output=True, text=True, check=False
        )
        assert (result.returncode == 0) is accepted, result.stderr


def test_reset_removes_the_store_and_keeps_the_key_genesis_and_config(tmp_path: Path) -> None:
    home = tmp_path / "follower"
    assert p2pnode("init", "--home", str(home)).returncode == 0
    genesis = tmp_path / "other" / "genesis.json"
    assert p2pnode("init", "--home", str(genesis.parent), "--network", "n").returncode == 0
    shutil.copy(genesis, home / "genesis.json")
    for name in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm"):
        (home / name).write_bytes(b"frames")
    kept = {
        name: (home / name).read_bytes() for name in ("identity.key", "genesis.json", "config.toml")
    }
    done = p2pnode("reset", "--home", str(home))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"removed store.sqlite, store.sqlite-wal, store.sqlite-shm from {home}; "
        "kept the key, genesis and config\n"
    )
    assert sorted(p.name for p in home.iterdir()) == sorted([*kept, "lock"])
    assert {name: (home / name).read_bytes() for name in kept} == kept
    again = p2pnode("reset", "--home", str(home))
    assert again.stdout == f"{home} holds no store: nothing to remove\n"


def test_a_prover_is_reset_only_when_told_it_is_unsafe(solo: Path) -> None:
    (solo / "store.sqlite").write_bytes(b"frames and own votes")
    one_line_error(p2pnode("reset", "--home", str(solo)), "is a prover of solo", "--unsafe")
    assert (solo / "store.sqlite").exists()
    assert p2pnode("reset", "--home", str(solo), "--unsafe").returncode == 0
    assert not (solo / "store.sqlite").exists()


def test_a_running_peer_s_store_is_not_reset(solo: Path) -> None:
    (solo / "store.sqlite").write_bytes(b"in use")
    with Home(solo).locked():
        one_line_error(p2pnode("reset", "--home", str(solo), "--unsafe"), "in use by another")
    assert (solo / "store.sqlite").exists()


def test_reset_of_a_folder_that_is_no_home_is_one_line(tmp_path: Path) -> None:
    one_line_error(p2pnode("reset", "--home", str(tmp_path)), "no key in")
