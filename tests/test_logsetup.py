"""A peer's log: level, one line per record as text or JSON, rotation with a cap, stdout."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from p2pnode.peer.logsetup import (
    LogCounter,
    LogFormat,
    LogLevel,
    LogSettings,
    LogTarget,
    counting,
    logging_to,
)
from p2pnode.peer.settings import SettingsError, node_settings

log = logging.getLogger("p2pnode.peer.test")


def _raise() -> None:
    raise ValueError("first line\nsecond line")


def _failure() -> None:
    try:
        _raise()
    except ValueError:
        log.exception("it failed\nacross lines")


def test_a_peer_s_log_goes_to_its_file_only_and_the_root_logger_is_restored_after(
    tmp_path: Path,
) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    with logging_to(tmp_path / "node.log", LogSettings()):
        assert len(root.handlers) == 1
        log.warning("into the home's log")
    assert (list(root.handlers), root.level) == before
    assert "WARNING p2pnode.peer.test: into the home's log" in (tmp_path / "node.log").read_text()


def test_a_text_record_with_line_breaks_and_a_traceback_is_one_line(tmp_path: Path) -> None:
    with logging_to(tmp_path / "node.log", LogSettings()):
        _failure()
        log.info("after")
    lines = (tmp_path / "node.log").read_text().splitlines()
    assert len(lines) == 2
    assert "ERROR p2pnode.peer.test: it failed\\nacross lines\\nTraceback" in lines[0]
    assert lines[0].endswith("ValueError: first line\\nsecond line")


def test_json_lines_parse_one_record_each_with_its_exception(tmp_path: Path) -> None:
    with logging_to(tmp_path / "node.log", LogSettings(format=LogFormat.JSON)):
        log.info("hello %s", "there")
        _failure()
    records = [json.loads(line) for line in (tmp_path / "node.log").read_text().splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("info", "p2pnode.peer.test", "hello there"),
        ("error", "p2pnode.peer.test", "it failed\nacross lines"),
    ]
    assert records[1]["exception"].endswith("ValueError: first line\nsecond line")
    assert records[0]["time"].endswith("Z")
    assert "T" in records[0]["time"]
    assert "exception" not in records[0]


def test_the_level_setting_drops_what_is_below_it(tmp_path: Path) -> None:
    with logging_to(tmp_path / "node.log", LogSettings(level=LogLevel.WARNING)):
        log.info("routine")
        log.warning("worth a look")
    assert (tmp_path / "node.log").read_text().count("\n") == 1
    assert "worth a look" in (tmp_path / "node.log").read_text()


def test_the_log_is_rotated_and_never_takes_more_than_keep_plus_one_files(
    tmp_path: Path,
) -> None:
    settings = LogSettings(max_mb=0.01, keep=2)  # ~10 KB a file
    with logging_to(tmp_path / "node.log", settings):
        for index in range(2_000):
            log.info("line %d of a long log %s", index, "x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
    assert all(p.stat().st_size <= 10_486 for p in tmp_path.iterdir())
    assert "line 1999 of" in (tmp_path / "node.log").read_text()


def test_stdout_gets_the_records_and_no_file_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = LogSettings(format=LogFormat.JSON, to=LogTarget.STDOUT)
    with logging_to(tmp_path / "node.log", settings):
        log.info("to the journal")
    assert json.loads(capsys.readouterr().out)["message"] == "to the journal"
    assert not (tmp_path / "node.log").exists()


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"log_level": "loud"}, "node.log_level must be 'debug' or 'info' or 'warning' or 'error'"),
        ({"log_format": "xml"}, "node.log_format must be 'text' or 'json', got 'xml'"),
        ({"log_to": "syslog"}, "node.log_to must be 'file' or 'stdout', got 'syslog'"),
        ({"log_max_mb": 0}, "node.log_max_mb must be a number of MB from 0.01 to 100000"),
        ({"log_keep": 0}, "node.log_keep must be a whole number of files from 1 to 1000"),
        ({"log_keep": 2.5}, "node.log_keep must be a whole number of files from 1 to 1000"),
    ],
)
def test_a_bad_log_setting_is_named(node: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        node_settings({"node": node})
    assert str(caught.value).startswith(message)


def test_the_log_settings_are_read_from_the_node_section() -> None:
    settings = node_settings(
        {"node": {"log_level": "debug", "log_format": "json", "log_to": "stdout", "log_keep": 1}}
    )
    assert settings.log == LogSettings(LogLevel.DEBUG, LogFormat.JSON, LogTarget.STDOUT, 10.0, 1)


def test_warnings_and_errors_are_counted_for_the_status_with_the_last_error() -> None:
    counter = LogCounter()
    with counting(counter):
        log.info("routine")
        log.warning("odd")
        _failure()
        log.error("the store is %s", "read-only")
    log.error("after the block: not counted")
    assert (counter.warnings, counter.errors) == (1, 2)
    assert counter.last_error == "the store is read-only"
    assert counter not in logging.getLogger().handlers
