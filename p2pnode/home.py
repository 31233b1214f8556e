"""A peer's home folder: its key, the network's genesis, its settings and its store."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pnode.chain.crypto import Keypair, load_keypair, save_keypair
from p2pnode.chain.genesis import Genesis, GenesisError
from p2pnode.settings import EngineSettings, SettingsError, engine_settings

KEY_FILE = "identity.key"
GENESIS_FILE = "genesis.json"
CONFIG_FILE = "config.toml"
STORE_FILE = "store.sqlite"
LOG_FILE = "node.log"
STATUS_URL_FILE = "status.url"


class HomeError(Exception):
    """The home folder cannot be used; the message says what is wrong, in one line."""


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How a peer runs: its addresses, its self-delivery mode and its engine settings."""

    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    echo: bool = True
    """py-libp2p delivers a peer's own publications back to it; False suppresses that and has
    the engine count its own messages instead."""
    rebroadcast: float = 2.0
    """Seconds between re-sends of this peer's latest messages while a round stalls."""
    status: str = "127.0.0.1:0"
    """Loopback host:port of the status endpoint (JSON status, metrics, submits); port 0 picks
    a free port, written to the home's status.url."""
    engine: EngineSettings = field(default_factory=lambda: engine_settings({}))


@dataclass(frozen=True, slots=True)
class Home:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / KEY_FILE

    @property
    def genesis_file(self) -> Path:
        return self.path / GENESIS_FILE

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def store_file(self) -> Path:
        return self.path / STORE_FILE

    @property
    def log_file(self) -> Path:
        return self.path / LOG_FILE

    @property
    def status_url_file(self) -> Path:
        return self.path / STATUS_URL_FILE

    def keypair(self) -> Keypair:
        try:
            return load_keypair(self.key_file)
        except FileNotFoundError:
            raise HomeError(
                f"no key in {self.path} (run: p2pnode init --home {self.path})"
            ) from None
        except (OSError, ValueError) as err:
            raise HomeError(f"cannot read the key {self.key_file}: {err}") from None

    def genesis(self) -> Genesis:
        try:
            return Genesis.load(self.genesis_file)
        except GenesisError as err:
            raise HomeError(str(err)) from None

    def has_genesis(self) -> bool:
        return self.genesis_file.exists()

    def settings(self) -> NodeSettings:
        document = self._config()
        node = document.get("node", {})
        if not isinstance(node, dict):
            raise HomeError("[node] must be a table")
        try:
            return node_settings(node, engine_settings(document))
        except SettingsError as err:
            raise HomeError(str(err)) from None

    def _config(self) -> dict[str, Any]:
        if not self.config_file.exists():
            return {}
        try:
            return tomllib.loads(self.config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise HomeError(f"cannot read {self.config_file}: {err}") from None
        except tomllib.TOMLDecodeError as err:
            raise HomeError(f"{self.config_file} is not valid TOML: {err}") from None


def node_settings(node: dict[str, Any], engine: EngineSettings) -> NodeSettings:
    known = {"listen", "bootstrap", "echo", "rebroadcast", "status"}
    unknown = sorted(set(node) - known)
    if unknown:
        raise SettingsError(f"unknown setting node.{unknown[0]}")
    defaults = NodeSettings()
    listen = node.get("listen", list(defaults.listen))
    bootstrap = node.get("bootstrap", [])
    for name, value in (("listen", listen), ("bootstrap", bootstrap)):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"node.{name} must be a list of multiaddrs")
    echo = node.get("echo", True)
    if not isinstance(echo, bool):
        raise SettingsError("node.echo must be true or false")
    rebroadcast = node.get("rebroadcast", defaults.rebroadcast)
    if (
        isinstance(rebroadcast, bool)
        or not isinstance(rebroadcast, int | float)
        or rebroadcast <= 0
    ):
        raise SettingsError("node.rebroadcast must be a positive number of seconds")
    status = node.get("status", defaults.status)
    if not isinstance(status, str) or not _is_loopback_endpoint(status):
        raise SettingsError("node.status must be a loopback host:port, e.g. 127.0.0.1:8080")
    return NodeSettings(tuple(listen), tuple(bootstrap), echo, float(rebroadcast), status, engine)


def _is_loopback_endpoint(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return host.startswith("127.") and port.isdigit() and int(port) < 65536


def split_endpoint(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def write_config(home: Home, listen: list[str], bootstrap: list[str], extra: str = "") -> None:
    lines = [
        "# p2pnode peer settings; see config/default.toml for every setting and its default.",
        "[node]",
        f"listen = {_toml_list(listen)}",
        f"bootstrap = {_toml_list(bootstrap)}",
    ]
    home.config_file.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")


def _toml_list(values: list[str]) -> str:
    return (
        "["
        + ", ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "]"
    )


def create_home(path: Path, keypair: Keypair | None = None) -> tuple[Home, Keypair]:
    """A new home with a new key (file mode 0600); an existing key is never overwritten."""
    home = Home(path)
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if home.key_file.exists():
        raise HomeError(f"{home.key_file} already exists; refusing to overwrite a key")
    keypair = keypair or Keypair.generate()
    save_keypair(home.key_file, keypair)
    return home, keypair
