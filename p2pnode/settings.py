"""Engine settings from TOML: the `[consensus.timeouts]` and `[consensus.limits]` tables."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from p2pnode.consensus import Limits, Timeouts


class SettingsError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    minimum_provers: int | None
    """None: the quorum of the prover set, n - f."""
    timeouts: Timeouts
    limits: Limits


def _build(kind: type[Any], table: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise SettingsError(f"unknown setting {where}.{unknown[0]}")
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}.{name} must be a number, got {value!r}")
    try:
        return kind(**table)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{where}: {err}") from None


def engine_settings(document: Mapping[str, Any]) -> EngineSettings:
    """Read the consensus section of a parsed settings document."""
    section = document.get("consensus", {})
    if not isinstance(section, Mapping):
        raise SettingsError("consensus must be a table")
    unknown = sorted(set(section) - {"minimum_provers", "timeouts", "limits"})
    if unknown:
        raise SettingsError(f"unknown setting consensus.{unknown[0]}")
    minimum = section.get("minimum_provers")
    if minimum is not None and (
        isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1
    ):
        raise SettingsError(
            f"consensus.minimum_provers must be a positive integer, got {minimum!r}"
        )
    return EngineSettings(
        minimum,
        _build(Timeouts, section.get("timeouts", {}), "consensus.timeouts"),
        _build(Limits, section.get("limits", {}), "consensus.limits"),
    )


def load_engine_settings(path: Path) -> EngineSettings:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SettingsError(f"cannot read {path}: {err.strerror}") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path} is not valid TOML: {err}") from None
    return engine_settings(document)
