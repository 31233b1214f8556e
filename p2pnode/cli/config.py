"""`p2pnode config`: every setting's effective value and where it came from."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from p2pnode.peer.home import Home, HomeError
from p2pnode.peer.settings import SettingsError
from p2pnode.peer.sources import Setting, effective_settings


def config(args: argparse.Namespace) -> int:
    """Print the settings a peer of --home would run with (the defaults without a home), each
    as `section.key = value  # source`, or --json."""
    path = Home(Path(args.home)).config_file if args.home else None
    if path is not None and not path.parent.is_dir():
        raise HomeError(f"no home at {path.parent}")
    try:
        found = effective_settings(path, os.environ, args.set)
    except SettingsError as err:
        raise HomeError(str(err)) from None
    if args.json:
        print(json.dumps({s.path: {"value": s.value, "source": s.source} for s in found}))
        return 0
    width = max(len(_assignment(s)) for s in found)
    for setting in found:
        print(f"{_assignment(setting):<{width}}  # {setting.source}")
    return 0


def _assignment(setting: Setting) -> str:
    if setting.value is None:
        return f"# {setting.path} (unset)"
    # JSON's strings, numbers, booleans and lists of them are TOML too, on one line.
    return f"{setting.path} = {json.dumps(setting.value)}"
