"""Engine settings from TOML: defaults, overrides and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.consensus import Limits, Timeouts
from p2pnode.settings import SettingsError, engine_settings, load_engine_settings

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_the_default_file_holds_every_default() -> None:
    settings = load_engine_settings(CONFIG / "default.toml")
    assert settings.timeouts == Timeouts()
    assert settings.limits == Limits()
    assert settings.minimum_provers is None


def test_overrides_apply() -> None:
    settings = engine_settings(
        {"consensus": {"minimum_provers": 3, "timeouts": {"proving": 5}, "limits": {}}}
    )
    assert settings.timeouts.proving == 5
    assert settings.minimum_provers == 3


@pytest.mark.parametrize(
    ("document", "named"),
    [
        ({"consensus": {"timeouts": {"provng": 1.0}}}, "consensus.timeouts.provng"),
        ({"consensus": {"timeouts": {"voting": -1}}}, "voting"),
        ({"consensus": {"timeouts": {"voting": "fast"}}}, "consensus.timeouts.voting"),
        ({"consensus": {"limits": {"ranks_ahead": 1.5}}}, "ranks_ahead"),
        ({"consensus": {"minimum_provers": 0}}, "consensus.minimum_provers"),
        ({"consensus": {"quorum": 3}}, "consensus.quorum"),
        ({"consensus": 3}, "consensus"),
    ],
)
def test_invalid_settings_are_reported_by_name(document: dict[str, object], named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace(".", r"\.")):
        engine_settings(document)


def test_unreadable_or_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_engine_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[consensus\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_engine_settings(broken)
