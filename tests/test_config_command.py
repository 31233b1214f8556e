"""`p2pnode config`, $P2PNODE_HOME, and misspelt settings named with what was meant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pnode.cli import parse
from p2pnode.peer.settings import SettingsError, from_environment, load_settings, node_settings
from p2pnode.peer.sources import effective_settings
from tests.test_cli import one_line_error, p2pnode


def test_each_setting_says_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        "[node]\necho = false\nrebroadcast = 3.0\n[consensus.limits]\nranks_ahead = 4\n"
    )
    environ = {"P2PNODE_NODE_REBROADCAST": "5", "P2PNODE_CONSENSUS_TIMEOUTS_GRACE": "3"}
    found = {
        s.path: (s.value, s.source) for s in effective_settings(config, environ, ["node.echo=true"])
    }
    assert found["node.echo"] == (True, "--set")
    assert found["node.rebroadcast"] == (5.0, "P2PNODE_NODE_REBROADCAST")
    assert found["consensus.timeouts.grace"] == (3.0, "P2PNODE_CONSENSUS_TIMEOUTS_GRACE")
    assert found["consensus.limits.ranks_ahead"] == (4, str(config))
    assert found["node.log_format"] == ("text", "default")
    assert found["consensus.minimum_provers"] == (None, "default")


def test_the_defaults_printed_read_back_as_the_defaults() -> None:
    printed = p2pnode("config", env={"P2PNODE_HOME": ""})
    assert printed.returncode == 0, printed.stderr
    lines = [line.split("  #")[0].strip() for line in printed.stdout.splitlines()]
    assignments = [line.replace(" = ", "=", 1) for line in lines if not line.startswith("#")]
    assert len(assignments) > 30
    assert load_settings(None, {}, assignments) == load_settings(None, {})
    assert all(line.endswith("# default") for line in printed.stdout.splitlines())


def test_config_of_a_home_given_by_p2pnode_home(tmp_path: Path) -> None:
    home = tmp_path / "peer"
    assert p2pnode("init", "--home", str(home), "--network", "n").returncode == 0
    shown = p2pnode("config", "--json", env={"P2PNODE_HOME": str(home)})
    listen = json.loads(shown.stdout)["node.listen"]
    assert listen["source"] == str(home / "config.toml")
    assert listen["value"][0].startswith("/ip4/127.0.0.1/tcp/")
    assert "config --home" in (home / "config.toml").read_text(), "not a path in the repository"
    ident = p2pnode("id", env={"P2PNODE_HOME": str(home)})
    assert ident.stdout.startswith("peer id: 12D3KooW")
    status = p2pnode("status", env={"P2PNODE_HOME": str(home)})
    one_line_error(status, f"no peer is running in {home} (never run)")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: load_settings(None, {}, ["node.bootstrapp=x"]),
            "--set: unknown setting node.bootstrapp (did you mean node.bootstrap?)",
        ),
        (
            lambda: node_settings({"consensus": {"timeouts": {"votin": 1}}}),
            "unknown setting consensus.timeouts.votin (did you mean consensus.timeouts.voting?)",
        ),
        (
            lambda: from_environment({"P2PNODE_NODE_ECH": "false"}),
            "P2PNODE_NODE_ECH names no setting (did you mean P2PNODE_NODE_ECHO?)",
        ),
        (
            lambda: node_settings({"node": {"zzz": 1}}),
            "unknown setting node.zzz",
        ),
    ],
)
def test_a_misspelt_setting_is_named_with_what_was_meant(make: object, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        make()  # type: ignore[operator]
    assert str(caught.value) == message


def test_config_of_a_home_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    one_line_error(p2pnode("config", "--home", str(tmp_path / "none")), "no home at")
    one_line_error(p2pnode("config", "--set", "node.ech=1"), "did you mean node.echo?")


@pytest.mark.parametrize("name", ["peer 0", "x" * 33, "../etc", 7])
def test_a_name_that_is_not_a_short_word_is_refused(name: object) -> None:
    with pytest.raises(SettingsError, match=r"node\.name must be up to 32 letters"):
        node_settings({"node": {"name": name}})


def test_p2pnode_home_stands_for_a_home_left_out_and_only_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("P2PNODE_HOME", "/env")
    assert parse(["dashboard", "--home", "/b"]).home == ["/b"], "not /env beside it"
    assert parse(["dashboard"]).home == ["/env"]
    assert parse(["dashboard", "--url", "http://127.0.0.1:1"]).home is None
    assert parse(["status"]).home == "/env"
    assert parse(["init"]).home == "/env"
    assert parse(["run", "--home", "/c"]).home == "/c"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"name": "x"}, "unknown section [name] (did you mean name under [node]?)"),
        ({"nodes": {}}, "unknown section [nodes] (did you mean [node]?)"),
        ({"zz": {}}, "unknown section [zz]"),
        ({"grace": 3}, "unknown section [grace] (did you mean grace under [consensus.timeouts]?)"),
    ],
)
def test_a_setting_or_section_in_the_wrong_place_is_named(
    document: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        node_settings(document)
    assert str(caught.value) == message


def test_a_log_level_is_read_in_any_case_and_warn_is_warning() -> None:
    assert node_settings({"node": {"log_level": "DEBUG"}}).log_level.value == "debug"
    assert node_settings({"node": {"log_level": "warn"}}).log_level.value == "warning"
