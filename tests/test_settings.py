"""Engine settings from TOML: defaults, overrides and errors that name the setting."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from p2pnode.consensus import Limits, Timeouts
from p2pnode.peer import settings as settings_module
from p2pnode.peer.settings import (
    NodeSettings,
    SettingsError,
    engine_settings,
    env_name,
    load_settings,
    node_settings,
    read_file,
    setting_paths,
)

CONFIG = Path(__file__).resolve().parents[1] / "config"

PEER_A = "12D3KooWKu3SHG1t1ibfrQ5nr8718pxM6aFQ9anZvzcjaat4wPkR"
PEER_B = "12D3KooWDQTNMBqwyELv8DnPopWDAYKfHbP9eQ9vEPeBe6RQso28"


def test_the_default_file_holds_every_default() -> None:
    settings = load_settings(CONFIG / "default.toml")
    assert settings == NodeSettings()
    assert settings.engine.timeouts == Timeouts()
    assert settings.engine.limits == Limits()
    assert settings.engine.minimum_provers is None


def test_the_testnet_example_is_a_valid_config() -> None:
    settings = load_settings(CONFIG / "testnet.toml")
    assert settings.listen == ("/ip4/127.0.0.1/tcp/4002",)
    assert len(settings.bootstrap) == 1
    assert settings.engine.timeouts.attempt == 2.0


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
        read_file(tmp_path / "missing.toml")
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(tmp_path)  # a directory
    broken = tmp_path / "broken.toml"
    broken.write_text("[consensus\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken)


def test_the_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        '[node]\necho = true\nstatus = "127.0.0.1:7000"\n[consensus.timeouts]\nvoting = 3.0\n'
    )
    environ = {
        "P2PNODE_NODE_ECHO": "false",
        "P2PNODE_NODE_BOOTSTRAP": (
            f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}, /ip4/127.0.0.1/tcp/2/p2p/{PEER_B}"
        ),
        "P2PNODE_CONSENSUS_TIMEOUTS_VOTING": "2.5",
        "UNRELATED": "x",
    }
    settings = load_settings(config, environ, ["consensus.timeouts.voting=1.5"])
    assert settings.echo is False
    assert settings.bootstrap == (
        f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}",
        f"/ip4/127.0.0.1/tcp/2/p2p/{PEER_B}",
    )
    assert settings.engine.timeouts.voting == 1.5
    assert settings.status == "127.0.0.1:7000"


def test_every_setting_has_an_environment_name() -> None:
    names = {env_name(path) for path in setting_paths()}
    assert "P2PNODE_NODE_LISTEN" in names
    assert "P2PNODE_CONSENSUS_LIMITS_RANKS_AHEAD" in names
    assert len(names) == len(setting_paths())


def test_every_node_setting_is_a_field_with_a_type_and_a_check() -> None:
    """The [node] settings come from NodeSettings' fields: a new field is a new setting, with
    its environment name, its --set path and the check that reads it."""
    paths = setting_paths()
    node = {path.split(".", 1)[1] for path in paths if path.startswith("node.")}
    assert node == {f.name for f in fields(NodeSettings)} - {"engine"}
    assert node == set(settings_module._CHECKS)
    assert (paths["node.echo"], paths["node.rebroadcast"], paths["node.listen"]) == (
        bool,
        float,
        list,
    )
    assert paths["node.genesis_sha256"] is str


def test_the_default_file_documents_every_setting() -> None:
    text = (CONFIG / "default.toml").read_text()
    for path in setting_paths():
        assert f"{path.rsplit('.', 1)[1]} =" in text, path


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"P2PNODE_NODE_ECHO": "maybe"}, "P2PNODE_NODE_ECHO"),
        ({"P2PNODE_NODE_REBROADCAST": "-1"}, "node.rebroadcast"),
        ({"P2PNODE_CONSENSUS_MINIMUM_PROVERS": "0"}, "consensus.minimum_provers"),
    ],
)
def test_bad_environment_values_are_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(None, environ)


def test_bad_flags_are_named() -> None:
    with pytest.raises(SettingsError, match="--set"):
        load_settings(None, {}, ["consensus.timeouts.voting"])
    with pytest.raises(SettingsError, match=r"unknown setting node\.nope"):
        load_settings(None, {}, ["node.nope=1"])


@pytest.mark.parametrize(
    ("named", "reason"),
    [
        (["QmNotAnEd25519Id"], "is not a peer id"),
        ("12D3KooW", "must be a list of peer ids"),
        ([3], "must be a list of peer ids"),
    ],
)
def test_named_peers_must_be_peer_ids(named: object, reason: str) -> None:
    with pytest.raises(SettingsError, match=f"node.named.*{reason}"):
        node_settings({"node": {"named": named}})


def test_named_peers_are_read() -> None:
    peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
    assert node_settings({"node": {"named": [peer]}}).named == (peer,)
