"""The peer process's logging: to its home while it runs, and nothing left behind."""

from __future__ import annotations

import logging
from pathlib import Path

from p2pnode.cli.daemon import log_to
from p2pnode.peer.home import Home


def test_a_peer_s_log_goes_to_its_home_and_the_root_logger_is_restored_after(
    tmp_path: Path,
) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    home = Home(tmp_path)
    with log_to(home):
        assert [type(handler) for handler in root.handlers] == [logging.FileHandler]
        logging.getLogger("p2pnode.test").warning("into the home's log")
    assert (list(root.handlers), root.level) == before
    assert "into the home's log" in home.log_file.read_text()
