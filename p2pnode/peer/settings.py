"""A peer's settings: defaults < the home's config.toml < P2PNODE_… environment < flags."""

from __future__ import annotations

import difflib
import enum
import ipaddress
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_origin, get_type_hints

import multiaddr

from p2pnode.chain.types import key_of_peer_id
from p2pnode.consensus import Limits, Timeouts
from p2pnode.net.addresses import is_loopback_ip, is_wildcard
from p2pnode.peer.logsetup import LogFormat, LogLevel, LogSettings, LogTarget

ENV_PREFIX = "P2PNODE_"


class SettingsError(ValueError):
    """A setting is unknown, missing or out of range; the message names it."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    minimum_provers: int | None
    """None: the quorum of the prover set, n - f."""
    timeouts: Timeouts
    limits: Limits


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """How a peer runs: its addresses, its self-delivery mode and its engine settings."""

    name: str = ""
    """The peer's name in dashboards and its status; empty: its home folder's name."""
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    bootstrap: tuple[str, ...] = ()
    announce: tuple[str, ...] = ()
    """Multiaddrs to share instead of the listen ones (a public IP, a NAT's port mapping)."""
    echo: bool = True
    """py-libp2p delivers a peer's own publications back to it; False suppresses that and has
    the engine count its own messages instead."""
    rebroadcast: float = 2.0
    """Seconds after its last progress that a stalled prover re-sends its latest messages:
    twice the typical round when that is longer, but never more than twice this."""
    status: str = "127.0.0.1:0"
    """Loopback host:port of the status endpoint (JSON status, metrics, submits); port 0 picks
    a free port, written to the home's status.url."""
    metrics: str = ""
    """IP:port (any IP: 0.0.0.0 for every interface) of a server of /metrics and /health
    only, for a monitoring system on the network; empty: none (the status endpoint serves
    both on loopback)."""
    genesis_sha256: str | None = None
    """The sha256 (hex) the genesis must have; None takes what the first bootstrap peer serves."""
    named: tuple[str, ...] = ()
    """Peer ids of followers the operator runs or trusts: a tier of their own, like provers
    (never refused a connection or held to the strangers' budgets), not provers."""
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT
    """text, or json: one JSON object per line."""
    log_to: LogTarget = LogTarget.FILE
    """file: the home's node.log, rotated; stdout: for journald or a container."""
    log_max_mb: float = 10.0
    log_keep: int = 5
    engine: EngineSettings = field(
        default_factory=lambda: EngineSettings(None, Timeouts(), Limits())
    )

    @property
    def log(self) -> LogSettings:
        return LogSettings(
            self.log_level, self.log_format, self.log_to, self.log_max_mb, self.log_keep
        )


def _kind(annotation: Any) -> type:
    """The TOML value type of a NodeSettings field: list, bool, int, float or str."""
    if get_origin(annotation) is tuple:
        return list
    if annotation in (bool, int, float):
        return annotation  # type: ignore[no-any-return]
    return str


def _node_fields() -> dict[str, type]:
    """Every [node] setting and its value type, from NodeSettings' fields."""
    hints = get_type_hints(NodeSettings)
    return {f.name: _kind(hints[f.name]) for f in fields(NodeSettings) if f.name != "engine"}


def setting_paths() -> dict[str, type]:
    """Every setting as 'section.key' (or 'consensus.timeouts.key') and its value type."""
    paths = {f"node.{name}": kind for name, kind in _node_fields().items()}
    paths["consensus.minimum_provers"] = int
    for kind, section in ((Timeouts, "timeouts"), (Limits, "limits")):
        for item in fields(kind):
            paths[f"consensus.{section}.{item.name}"] = float if kind is Timeouts else int
    return paths


def env_name(path: str) -> str:
    return ENV_PREFIX + path.upper().replace(".", "_")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean node.bootstrap?)' for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# -- reading ---------------------------------------------------------------------------------


def _literal(raw: str, kind: type, name: str) -> Any:
    """A value given as text (environment, --set): TOML syntax, or plain text for strings."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if kind is str:
            return raw
        if kind is list:
            return [item.strip() for item in raw.split(",") if item.strip()]
        raise SettingsError(f"{name}: cannot read {raw!r} as a {kind.__name__}") from None


def _nest(path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    nested: dict[str, Any] = {last: value}
    for parent in reversed(parents):
        nested = {parent: nested}
    return nested


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings given as P2PNODE_SECTION_KEY variables (e.g. P2PNODE_CONSENSUS_TIMEOUTS_VOTING).
    A P2PNODE_NODE_… or P2PNODE_CONSENSUS_… variable that names no setting is an error: a
    misspelt one would be ignored."""
    names = {env_name(path) for path in setting_paths()}
    for variable in sorted(environ):
        sections = (env_name("node."), env_name("consensus."))
        if variable.startswith(sections) and variable not in names:
            raise SettingsError(f"{variable} names no setting{did_you_mean(variable, names)}")
    document: dict[str, Any] = {}
    for path, kind in setting_paths().items():
        raw = environ.get(env_name(path))
        if raw is not None:
            document = merge(document, _nest(path, _literal(raw, kind, env_name(path))))
    return document


def from_assignments(assignments: Iterable[str]) -> dict[str, Any]:
    """Settings given as --set section.key=value flags."""
    paths = setting_paths()
    document: dict[str, Any] = {}
    for assignment in assignments:
        path, equals, raw = assignment.partition("=")
        path = path.strip()
        if not equals:
            raise SettingsError(f"--set {assignment!r}: expected section.key=value")
        if path not in paths:
            raise SettingsError(f"--set: unknown setting {path}{did_you_mean(path, paths)}")
        document = merge(document, _nest(path, _literal(raw.strip(), paths[path], path)))
    return document


def read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"cannot read {path}: {getattr(err, 'strerror', err)}") from None
    except tomllib.TOMLDecodeError as err:
        raise SettingsError(f"{path} is not valid TOML: {err}") from None


# -- checking --------------------------------------------------------------------------------


def _table(
    document: Mapping[str, Any], name: str, known: set[str], parent: str = ""
) -> Mapping[str, Any]:
    path = f"{parent}.{name}" if parent else name
    value = document.get(name, {})
    if not isinstance(value, Mapping):
        raise SettingsError(f"{path} must be a table")
    unknown = sorted(set(value) - known)
    if unknown:
        wrong = f"{path}.{unknown[0]}"
        raise SettingsError(f"unknown setting {wrong}{did_you_mean(wrong, setting_paths())}")
    return value


def _build(kind: type[Any], table: Mapping[str, Any], where: str) -> Any:
    for name, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsError(f"{where}.{name} must be a number, got {value!r}")
    try:
        return kind(**table)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"{where}: {err}") from None


def engine_settings(document: Mapping[str, Any]) -> EngineSettings:
    """The consensus section of a settings document, checked."""
    section = _table(document, "consensus", {"minimum_provers", "timeouts", "limits"})
    minimum = section.get("minimum_provers")
    if minimum is not None and (
        isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1
    ):
        raise SettingsError(
            f"consensus.minimum_provers must be a positive integer, got {minimum!r}"
        )
    timeouts = _table(section, "timeouts", {f.name for f in fields(Timeouts)}, "consensus")
    limits = _table(section, "limits", {f.name for f in fields(Limits)}, "consensus")
    return EngineSettings(
        minimum,
        _build(Timeouts, timeouts, "consensus.timeouts"),
        _build(Limits, limits, "consensus.limits"),
    )


LISTEN_ADDRESS = re.compile(r"^/ip[46]/[^/]+/tcp/\d{1,5}$")
"""What a peer can listen on: an IP address and a TCP port (names would resolve to anything)."""


def _addresses(node: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = node.get(name, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"node.{name} must be a list of multiaddrs")
    for address in value:
        if not address.startswith("/"):
            raise SettingsError(f"node.{name}: {address!r} is not a multiaddr")
        if name == "listen" and not LISTEN_ADDRESS.match(address):
            raise SettingsError(f"node.listen: {address!r} is not /ip4/ADDRESS/tcp/PORT")
    return tuple(value)


DIALABLE_ADDRESS = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/\d{1,5}(/p2p/[^/]+)?$")
"""What another host can dial: an IP address or a DNS name, a TCP port, maybe the peer id."""


def _bootstrap(node: Mapping[str, Any], default: tuple[str, ...]) -> tuple[str, ...]:
    """Peers to join: each a dialable address with the peer's id, wherever it was given (the
    `--bootstrap` flag was checked; the config, the environment and `--set` ran with 0 peers)."""
    addresses = _addresses(node, "bootstrap", default)
    for address in addresses:
        try:
            multiaddr.Multiaddr(address)
        except Exception:  # the library raises several unrelated types
            raise SettingsError(f"node.bootstrap: {address!r} is not a multiaddr") from None
        if not DIALABLE_ADDRESS.match(address) or "/p2p/" not in address:
            raise SettingsError(
                f"node.bootstrap: {address!r} needs the peer's id: /ip4/HOST/tcp/PORT/p2p/12D3KooW…"
            )
    return addresses


def _announce(node: Mapping[str, Any]) -> tuple[str, ...]:
    addresses = _addresses(node, "announce", ())
    for address in addresses:
        try:
            multiaddr.Multiaddr(address)
        except Exception:  # the library raises several unrelated types
            raise SettingsError(f"node.announce: {address!r} is not a multiaddr") from None
        if not DIALABLE_ADDRESS.match(address):
            raise SettingsError(f"node.announce: {address!r} is not /ip4|ip6|dns/HOST/tcp/PORT")
        if is_wildcard(address):
            raise SettingsError(f"node.announce: {address!r} is a wildcard no other host can dial")
    return addresses


PORT = re.compile(r"[0-9]{1,5}")


def split_endpoint(value: str) -> tuple[str, int]:
    """host:port or [v6]:port as (host, port); ValueError if the port is not one."""
    host, _, port = value.rpartition(":")
    if not PORT.fullmatch(port) or int(port) > 65535:
        raise ValueError(f"bad port in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def _is_loopback_endpoint(value: str) -> bool:
    try:
        host, _ = split_endpoint(value)
    except ValueError:
        return False
    return is_loopback_ip(host)


SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")


def _genesis_sha256(node: Mapping[str, Any]) -> str | None:
    value = node.get("genesis_sha256")
    if value is not None and not (isinstance(value, str) and SHA256_HEX.fullmatch(value)):
        raise SettingsError("node.genesis_sha256 must be 64 hex digits, the sha256 of a genesis")
    return value.lower() if value is not None else None


def _echo(node: Mapping[str, Any], default: bool) -> bool:
    echo = node.get("echo", default)
    if not isinstance(echo, bool):
        raise SettingsError("node.echo must be true or false")
    return echo


def _rebroadcast(node: Mapping[str, Any], default: float) -> float:
    value = node.get("rebroadcast", default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (value > 0 and math.isfinite(value))
    ):
        raise SettingsError("node.rebroadcast must be a positive number of seconds")
    return float(value)


def _status(node: Mapping[str, Any], default: str) -> str:
    status = node.get("status", default)
    if not isinstance(status, str) or not _is_loopback_endpoint(status):
        raise SettingsError(
            "node.status must be a loopback IP and port, e.g. 127.0.0.1:8080 or [::1]:8080"
        )
    return status


def _metrics(node: Mapping[str, Any], default: str) -> str:
    value = node.get("metrics", default)
    if value == "":
        return ""
    try:
        host, _ = split_endpoint(value if isinstance(value, str) else "")
        ipaddress.ip_address(host)
    except ValueError:
        raise SettingsError(
            "node.metrics must be an IP and port, e.g. 0.0.0.0:9100 or [::]:9100, or empty"
        ) from None
    return str(value)


def _named(node: Mapping[str, Any]) -> tuple[str, ...]:
    value = node.get("named", [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SettingsError("node.named must be a list of peer ids (12D3KooW...)")
    for peer in value:
        try:
            key_of_peer_id(peer)
        except ValueError:
            raise SettingsError(f"node.named: {peer!r} is not a peer id (12D3KooW...)") from None
    return tuple(value)


def _choice(name: str) -> Callable[[Mapping[str, Any], enum.Enum], enum.Enum]:
    def check(node: Mapping[str, Any], default: enum.Enum) -> enum.Enum:
        value = node.get(name, default.value)
        kind = type(default)
        try:  # in any case, and `warn` for warning as Python's logging takes it
            return kind({"warn": "warning"}.get(str(value).lower(), str(value).lower()))
        except ValueError:
            choices = " or ".join(repr(item.value) for item in kind)
            raise SettingsError(f"node.{name} must be {choices}, got {value!r}") from None

    return check


def _log_max_mb(node: Mapping[str, Any], default: float) -> float:
    value = node.get("log_max_mb", default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.01 <= value <= 1e5:
        raise SettingsError("node.log_max_mb must be a number of MB from 0.01 to 100000")
    return float(value)


def _log_keep(node: Mapping[str, Any], default: int) -> int:
    value = node.get("log_keep", default)
    # 0 would never rotate: RotatingFileHandler rolls over only when it keeps a file.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
        raise SettingsError("node.log_keep must be a whole number of files from 1 to 1000")
    return value


NAME = re.compile(r"[\w.-]{0,32}")


def _name(node: Mapping[str, Any], default: str) -> str:
    value = node.get("name", default)
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise SettingsError(
            "node.name must be up to 32 letters, digits, '.', '-' or '_' (empty: the home's name)"
        )
    return value


_CHECKS: dict[str, Callable[[Mapping[str, Any], Any], Any]] = {
    "name": _name,
    "listen": lambda node, default: _addresses(node, "listen", default),
    "bootstrap": _bootstrap,
    "announce": lambda node, default: _announce(node),
    "echo": _echo,
    "rebroadcast": _rebroadcast,
    "status": _status,
    "metrics": _metrics,
    "genesis_sha256": lambda node, default: _genesis_sha256(node),
    "named": lambda node, default: _named(node),
    "log_level": _choice("log_level"),
    "log_format": _choice("log_format"),
    "log_to": _choice("log_to"),
    "log_max_mb": _log_max_mb,
    "log_keep": _log_keep,
}
"""How each [node] setting is read and checked, given the section and the field's default."""


def node_settings(document: Mapping[str, Any]) -> NodeSettings:
    """A whole settings document, checked: every problem is reported by the setting's name."""
    unknown = sorted(set(document) - {"node", "consensus"})
    if unknown:
        wrong = unknown[0]
        placed = [p for p in setting_paths() if p.rsplit(".", 1)[-1] == wrong]
        if placed:  # a setting above every section
            section = placed[0].rsplit(".", 1)[0]
            raise SettingsError(
                f"unknown section [{wrong}] (did you mean {wrong} under [{section}]?)"
            )
        close = difflib.get_close_matches(wrong, ["node", "consensus"], n=1, cutoff=0.75)
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        raise SettingsError(f"unknown section [{wrong}]{hint}")
    defaults = NodeSettings()
    node = _table(document, "node", set(_node_fields()))
    values = {name: _CHECKS[name](node, getattr(defaults, name)) for name in _node_fields()}
    return NodeSettings(**values, engine=engine_settings(document))


def load_settings(
    config: Path | None,
    environ: Mapping[str, str] | None = None,
    assignments: Iterable[str] = (),
) -> NodeSettings:
    """Defaults, then the config file (if any), then the environment, then --set flags."""
    document = read_file(config) if config is not None and config.exists() else {}
    document = merge(document, from_environment(environ or {}))
    document = merge(document, from_assignments(assignments))
    return node_settings(document)
