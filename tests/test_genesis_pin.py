"""A genesis from an untrusted peer or file: the pinned hash, the size cap, one-line errors."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from p2pnode.chain.crypto import Keypair
from p2pnode.chain.genesis import MAX_GENESIS_SIZE, Genesis, GenesisError
from p2pnode.cli.daemon import ensure_genesis
from p2pnode.net import NetConfig, Topic, Verdict, open_network
from p2pnode.peer.home import Home, HomeError
from p2pnode.peer.settings import NodeSettings, SettingsError, load_settings
from tests.test_cli import one_line_error, p2pnode

KEYS = [Keypair.from_seed(bytes([i]) * 32) for i in range(1, 4)]
GENESIS = Genesis.create("pinned", [k.prover for k in KEYS], 100, 1_700_000_000_000)
DIGEST = GENESIS.hash().hex()
OTHER = Genesis.create("pinned", [k.prover for k in KEYS], 101, 1_700_000_000_000)
OTHER_DIGEST = OTHER.hash().hex()
FETCH_BOUND = 30.0


def canonical(**changes: str) -> bytes:
    """The genesis's canonical bytes with some fields' JSON text replaced verbatim."""
    document = json.loads(GENESIS.to_bytes())
    for name in changes:
        document[name] = f"@{name}@"
    text = json.dumps(document)
    for name, raw in changes.items():
        text = text.replace(f'"@{name}@"', raw)
    return text.encode()


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# --- malformed bytes ------------------------------------------------------------------------

MALFORMED = [
    pytest.param(b"[" * 50_000, "nested too deeply", id="deep-unclosed"),
    pytest.param(canonical(network=nested(5_000)), "nested too deeply", id="deep-field"),
    pytest.param(canonical(difficulty="9" * 5_000), "number too long", id="huge-int"),
    pytest.param(canonical(timestamp="-" + "9" * 5_000), "number too long", id="huge-neg-int"),
    pytest.param(canonical(timestamp=str(10**100)), "below 2\\*\\*63", id="absurd-timestamp"),
    pytest.param(canonical(difficulty=str(10**30)), "difficulty must be between", id="absurd"),
    pytest.param(canonical(difficulty="NaN"), "difficulty must be an integer", id="nan"),
    pytest.param(canonical(difficulty="1e3"), "difficulty must be an integer", id="float"),
    pytest.param(canonical(version="true"), "unsupported genesis version", id="bool-version"),
    pytest.param(canonical(version=nested(400)), "version of type list", id="nested-version"),
    pytest.param(canonical(provers='{"a": 1}'), "provers must be a list", id="provers-dict"),
    pytest.param(canonical(provers=json.dumps(["x" * 5_000])), "not a peer id", id="long-id"),
    pytest.param(canonical(provers=json.dumps(["1"] * 200)), "1 to 64 provers", id="many"),
    pytest.param(canonical(network='"pinned\\n"'), "network name", id="newline-name"),
    pytest.param(canonical(network='"' + "a" * 5_000 + '"'), "network name", id="long-name"),
    pytest.param(canonical(network="null"), "network must be a string", id="null-name"),
    pytest.param(b'{"version": 1}', "must have the fields", id="missing-fields"),
    pytest.param(
        GENESIS.to_bytes()[:-2] + b',"network":"other"}', "repeats a key", id="duplicate-key"
    ),
    pytest.param(b"\xff\xfe\x00", "not JSON", id="not-utf"),
    pytest.param(b" " * (MAX_GENESIS_SIZE + 1), "exceeds", id="oversize"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_a_malformed_genesis_is_one_short_line(data: bytes, reason: str) -> None:
    with pytest.raises(GenesisError, match=reason) as caught:
        Genesis.from_bytes(data)
    message = str(caught.value)
    assert "\n" not in message
    assert len(message) < 200, message


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_raise_only_genesis_errors(data: bytes) -> None:
    message = ""
    try:
        Genesis.from_bytes(data)
    except GenesisError as err:  # anything else fails the test
        message = str(err)
    assert "\n" not in message


@given(st.dictionaries(st.sampled_from(sorted(GENESIS.to_json())), JSON), st.booleans())
def test_arbitrary_genesis_fields_raise_only_genesis_errors(
    changes: dict[str, Any], nest: bool
) -> None:
    document = {**GENESIS.to_json(), **changes}
    text = json.dumps(document)
    if nest:  # the same document, buried too deep for the parser
        text = nested(3_000)[:3_000] + text + nested(3_000)[3_000:]
    message = ""
    try:
        Genesis.from_bytes(text.encode())
    except GenesisError as err:  # anything else fails the test
        message = str(err)
    assert "\n" not in message


def test_a_genesis_file_over_the_cap_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    path.write_bytes(GENESIS.to_bytes() + b" " * MAX_GENESIS_SIZE)
    with pytest.raises(GenesisError, match=f"{path}: genesis exceeds"):
        Genesis.load(path)
    path.write_bytes(GENESIS.to_bytes() + b" " * 100)  # whitespace within the cap is fine
    assert Genesis.load(path) == GENESIS


# --- the pin on a genesis already in the home -----------------------------------------------


def home_with(tmp_path: Path, genesis: Genesis | None) -> Home:
    home = Home(tmp_path / "home")
    home.path.mkdir()
    if genesis is not None:
        genesis.save(home.genesis_file)
    return home


async def test_the_pin_is_checked_on_the_genesis_in_the_home(tmp_path: Path) -> None:
    home = home_with(tmp_path, GENESIS)
    said: list[str] = []
    for pin in (None, DIGEST, DIGEST.upper()):
        settings = NodeSettings(genesis_sha256=pin)
        assert await ensure_genesis(home, settings, said.append) == GENESIS
    assert said == [], "a genesis the operator put in the home is not trusted on first use"
    with pytest.raises(GenesisError) as caught:
        await ensure_genesis(home, NodeSettings(genesis_sha256=OTHER_DIGEST), said.append)
    assert f"has sha256 {DIGEST}, not the pinned {OTHER_DIGEST}" in str(caught.value)
    assert str(home.genesis_file) in str(caught.value)


# --- the pin on a fetched genesis, over real libp2p -----------------------------------------


@asynccontextmanager
async def serving(genesis: bytes) -> AsyncIterator[str]:
    """A peer on a free loopback port that serves `genesis`; yields its full multiaddr."""
    config = NetConfig(network="pinned", seed=bytes([9]) * 32, genesis=genesis)
    async with open_network(config, _Judge()) as holder:
        yield holder.addrs()[0]


class _Judge:
    def judge(self, topic: Topic, origin: str, data: bytes) -> Verdict:
        return Verdict.ACCEPT  # only the holder's own peer announcements arrive


async def fetch(
    tmp_path: Path, served: bytes, pin: str | None, say: Callable[[str], None]
) -> Genesis:
    """ensure_genesis in a new home, bootstrapping from a peer that serves `served`."""
    home = home_with(tmp_path, None)
    failure: Exception | None = None
    with trio.fail_after(FETCH_BOUND):
        async with serving(served) as address:
            settings = NodeSettings(bootstrap=(address,), genesis_sha256=pin)
            try:
                genesis = await ensure_genesis(home, settings, say)
            except (GenesisError, HomeError) as err:  # raised here, not in the holder's group
                failure = err
    if failure is not None:
        raise failure
    return genesis


def saved(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "home").iterdir())


async def test_a_fetched_genesis_with_the_pinned_hash_is_saved(tmp_path: Path) -> None:
    said: list[str] = []
    assert await fetch(tmp_path, GENESIS.to_bytes(), DIGEST, said.append) == GENESIS
    assert Genesis.load(tmp_path / "home" / "genesis.json") == GENESIS
    assert saved(tmp_path) == ["genesis.json"]
    assert not any("warning" in line for line in said), said


async def test_a_fetched_genesis_with_another_hash_is_refused_and_not_saved(
    tmp_path: Path,
) -> None:
    with pytest.raises(GenesisError) as caught:
        await fetch(tmp_path, GENESIS.to_bytes(), OTHER_DIGEST, print)
    assert f"has sha256 {DIGEST}, not the pinned {OTHER_DIGEST}" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert saved(tmp_path) == []


async def test_without_a_pin_the_first_genesis_is_trusted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    said: list[str] = []
    assert await fetch(tmp_path, GENESIS.to_bytes(), None, said.append) == GENESIS
    warnings = [line for line in said if line.startswith("warning:")]
    assert len(warnings) == 1, said
    assert f"--genesis-sha256 {DIGEST}" in warnings[0]
    assert "first use" in warnings[0]
    assert any(DIGEST in r.message for r in caplog.records if r.levelname == "WARNING")
    assert saved(tmp_path) == ["genesis.json"]


@pytest.mark.parametrize(
    ("served", "reason"),
    [
        (canonical(difficulty="9" * 5_000), "number too long"),
        (b"[" * 50_000, "nested too deeply"),
        (GENESIS.to_bytes() + b" " * MAX_GENESIS_SIZE, "exceeds"),
    ],
    ids=["huge-int", "deep", "oversize"],
)
async def test_a_malformed_fetched_genesis_is_refused_and_not_saved(
    tmp_path: Path, served: bytes, reason: str
) -> None:
    with pytest.raises(HomeError, match=reason) as caught:
        await fetch(tmp_path, served, None, print)
    assert "\n" not in str(caught.value)
    assert saved(tmp_path) == []


# --- the setting ----------------------------------------------------------------------------


def test_the_pin_is_a_setting_of_every_layer(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[node]\ngenesis_sha256 = "{DIGEST}"\n')
    assert load_settings(config).genesis_sha256 == DIGEST
    environ = {"P2PNODE_NODE_GENESIS_SHA256": OTHER_DIGEST.upper()}
    assert load_settings(config, environ).genesis_sha256 == OTHER_DIGEST
    assert load_settings(config, environ, [f"node.genesis_sha256={DIGEST}"]).genesis_sha256 == (
        DIGEST
    )
    assert load_settings(None).genesis_sha256 is None


@pytest.mark.parametrize("value", ["abc", DIGEST[:-1], DIGEST + "0", "g" * 64, "12"])
def test_a_pin_that_is_not_a_sha256_is_named(value: str) -> None:
    with pytest.raises(SettingsError, match=r"node\.genesis_sha256"):
        load_settings(None, {"P2PNODE_NODE_GENESIS_SHA256": value})


# --- the command ----------------------------------------------------------------------------


@pytest.fixture
def solo(tmp_path: Path) -> Path:
    home = tmp_path / "solo"
    assert p2pnode("init", "--home", str(home), "--network", "solo").returncode == 0
    return home


def test_run_with_another_pin_is_one_line(solo: Path) -> None:
    digest = Genesis.load(solo / "genesis.json").hash().hex()
    result = p2pnode("run", "--home", str(solo), "--genesis-sha256", OTHER_DIGEST)
    one_line_error(result, f"has sha256 {digest}", f"not the pinned {OTHER_DIGEST}")
    env = {"P2PNODE_NODE_GENESIS_SHA256": OTHER_DIGEST}
    one_line_error(p2pnode("run", "--home", str(solo), env=env), "not the pinned")
    one_line_error(
        p2pnode("run", "--home", str(solo), "--genesis-sha256", "nothex"), "node.genesis_sha256"
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[" * 50_000, "nested too deeply"),
        (canonical(timestamp="9" * 5_000), "number too long"),
        (canonical(difficulty='"100"'), "difficulty must be an integer"),
        (b"{" * (MAX_GENESIS_SIZE + 1), "exceeds"),
    ],
    ids=["deep", "huge-int", "wrong-type", "oversize"],
)
def test_run_with_a_malformed_genesis_file_is_one_line(
    solo: Path, content: bytes, reason: str
) -> None:
    (solo / "genesis.json").write_bytes(content)
    one_line_error(p2pnode("run", "--home", str(solo)), "genesis.json", reason)


async def test_run_refuses_a_fetched_genesis_with_another_hash(tmp_path: Path) -> None:
    home = tmp_path / "new"
    assert p2pnode("init", "--home", str(home)).returncode == 0
    with trio.fail_after(FETCH_BOUND + 30):
        async with serving(GENESIS.to_bytes()) as address:
            command = [sys.executable, "-m", "p2pnode", "run", "--home", str(home)]
            command += ["--bootstrap", address, "--genesis-sha256", OTHER_DIGEST]
            result = await trio.run_process(
                command, capture_stdout=True, capture_stderr=True, check=False
            )
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert f"has sha256 {DIGEST}, not the pinned {OTHER_DIGEST}" in lines[0]
    assert not (home / "genesis.json").exists()
