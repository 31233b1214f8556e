"""A peer's home folder: its key, the network's genesis, its settings and its store."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from p2pnode.chain.crypto import Keypair, load_keypair, save_keypair
from p2pnode.chain.genesis import Genesis, GenesisError
from p2pnode.peer.settings import NodeSettings, SettingsError, load_settings

KEY_FILE = "identity.key"
GENESIS_FILE = "genesis.json"
CONFIG_FILE = "config.toml"
STORE_FILE = "store.sqlite"
LOG_FILE = "node.log"
STATUS_URL_FILE = "status.url"
LOCK_FILE = "lock"


class HomeError(Exception):
    """The home folder cannot be used; the message says what is wrong, in one line."""


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

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

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

    def settings(
        self, environ: Mapping[str, str] | None = None, assignments: Iterable[str] = ()
    ) -> NodeSettings:
        """The peer's settings: its config.toml, then the environment, then --set flags."""
        try:
            return load_settings(self.config_file, environ, assignments)
        except SettingsError as err:
            raise HomeError(str(err)) from None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the home for one peer process: an exclusive lock on its lock file, which the OS
        releases when the process ends however it ends. HomeError names the pid that holds it.

        Two peers on one home would sign with one key and write one store.
        """
        try:
            descriptor = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as err:
            raise HomeError(f"cannot open {self.lock_file}: {err.strerror}") from None
        try:
            if not _try_lock(descriptor):
                holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
                raise HomeError(
                    f"{self.path} is in use by another p2pnode run (pid {holder or '?'})"
                )
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def in_use(self) -> bool:
        """Whether a peer process holds the home now (see `locked`)."""
        try:
            descriptor = os.open(self.lock_file, os.O_RDONLY)
        except OSError:
            return False  # no lock file: never run, or not a home
        try:
            return not _try_lock(descriptor)
        finally:
            os.close(descriptor)


def _try_lock(descriptor: int) -> bool:
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def write_config(
    home: Home,
    listen: list[str],
    bootstrap: list[str],
    extra: Mapping[str, object] | None = None,
) -> None:
    """The home's config.toml: where the peer listens, whom it joins, and `extra` [node]
    settings (e.g. {"echo": False})."""
    node = {"listen": listen, "bootstrap": bootstrap, **(extra or {})}
    header = (
        "# p2pnode peer settings. `p2pnode config --home HOME` prints every setting, its\n"
        "# value and where it comes from; `p2pnode config` alone, the defaults.\n"
    )
    home.config_file.write_text(header + tomli_w.dumps({"node": node}), encoding="utf-8")


def create_home(path: Path, keypair: Keypair | None = None) -> tuple[Home, Keypair]:
    """A new home with a new key (file mode 0600); an existing key is never overwritten."""
    home = Home(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as err:
        raise HomeError(f"cannot create {path}: {err.strerror}") from None
    if home.key_file.exists():
        raise HomeError(f"{home.key_file} already exists; refusing to overwrite a key")
    keypair = keypair or Keypair.generate()
    save_keypair(home.key_file, keypair)
    return home, keypair
