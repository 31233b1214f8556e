"""Each setting's effective value and where it came from: default, file, environment or flag."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pnode.peer.settings import (
    NodeSettings,
    env_name,
    from_assignments,
    from_environment,
    load_settings,
    read_file,
    setting_paths,
)


@dataclass(frozen=True, slots=True)
class Setting:
    path: str
    """section.key, as config.toml, --set and P2PNODE_… name it."""
    value: Any
    """As TOML would write it (a list, a number, a string), or None: unset."""
    source: str
    """"default", the config file's path, the environment variable or "--set"."""


def effective_settings(
    config: Path | None, environ: Mapping[str, str], assignments: Iterable[str] = ()
) -> list[Setting]:
    """Every setting, in the order of setting_paths(), with its value and its source.
    Raises SettingsError as `load_settings` does."""
    assignments = list(assignments)
    settings = load_settings(config, environ, assignments)
    sources = (
        (from_assignments(assignments), lambda _: "--set"),
        (from_environment(environ), env_name),
        (
            read_file(config) if config is not None and config.exists() else {},
            lambda _: str(config),
        ),
    )
    found = []
    for path in setting_paths():
        source = next((name(path) for doc, name in sources if _holds(doc, path)), "default")
        found.append(Setting(path, _value(settings, path), source))
    return found


def _holds(document: Mapping[str, Any], path: str) -> bool:
    node: Any = document
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _value(settings: NodeSettings, path: str) -> Any:
    section, *rest = path.split(".")
    if section == "node":
        value = getattr(settings, rest[0])
    elif rest == ["minimum_provers"]:
        value = settings.engine.minimum_provers
    else:
        value = getattr(getattr(settings.engine, rest[0]), rest[1])
    if isinstance(value, enum.Enum):
        return value.value
    return list(value) if isinstance(value, tuple) else value
