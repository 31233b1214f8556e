"""A local testnet's supervisor: an exited peer is told with how it ended, and restarted."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

import trio

from p2pnode.cli.testnet import supervised_reader
from p2pnode.dashboard.model import Reading, Unreachable
from p2pnode.local.homes import generate_testnet
from p2pnode.local.supervisor import Supervised, Supervisor, exit_text, last_line
from p2pnode.peer.home import Home
from tests.status_sample import SAMPLE


def test_an_exit_says_its_status_or_its_signal() -> None:
    assert exit_text(1) == "exited with status 1"
    assert exit_text(-9) == "killed by SIGKILL"
    assert exit_text(-99) == "killed by signal 99"


def test_the_last_line_of_a_log_is_its_last_words(tmp_path: Path) -> None:
    log = tmp_path / "process.log"
    log.write_text("peer id: x\n" + "y" * 10_000 + "\np2pnode run: it broke\n\n")
    assert last_line(log) == "p2pnode run: it broke"
    log.write_text("z" * 500)
    assert last_line(log, width=20) == "z" * 19 + "…"
    assert last_line(tmp_path / "none") == ""


async def test_an_exited_peer_is_told_with_its_last_words_and_restarted(tmp_path: Path) -> None:
    home = generate_testnet(tmp_path, 1, base_port=0, difficulty=100)[1][0]
    home.key_file.rename(tmp_path / "elsewhere")  # the peer exits at once: no key
    supervisor = Supervisor(restart=True, first_delay=0.0)
    peer = supervisor.start(home)
    with trio.fail_after(60):
        await trio.to_thread.run_sync(peer.process.wait)
        assert supervisor.exited(home) is None, "not yet checked"
        assert supervisor.check() == [peer]
        assert supervisor.check() == [], "an exit is noted once"
        told = supervisor.exited(home)
        assert told is not None
        assert told.startswith(f"exited with status 1: p2pnode run: no key in {home.path}")
        assert told.endswith("(restarting)")
        first = peer.process
        await supervisor.restart_later(peer)
        assert peer.process is not first
        assert supervisor.exited(home) is None, "running again"
        await trio.to_thread.run_sync(peer.process.wait)
        assert supervisor.check() == [peer]
    assert len(peer.exits) == 2
    assert supervisor.stop(5) == [f"{home.path.name} {peer.exits[-1]}"]


async def test_the_testnet_view_reads_an_exited_peer_as_ended_not_unreachable(
    tmp_path: Path,
) -> None:
    home = Home(tmp_path)
    supervisor = Supervisor(restart=False)
    asked: list[str] = []

    async def fetch(url: str, timeout: float) -> Reading:
        asked.append(url)
        return SAMPLE

    read = supervised_reader(supervisor, {"http://127.0.0.1:1": home}, fetch)
    assert await read("http://127.0.0.1:1", 1.0) == SAMPLE
    assert asked == ["http://127.0.0.1:1"], "no status.url: the URL it started with"
    (tmp_path / "status.url").write_text("http://127.0.0.1:2\n")
    await read("http://127.0.0.1:1", 1.0)
    assert asked[-1] == "http://127.0.0.1:2", "the URL its home names now"

    class Ended:
        returncode = -9

        def poll(self) -> int:
            return -9

    ended = cast("subprocess.Popen[bytes]", Ended())
    supervisor.peers.append(Supervised(home, (), tmp_path / "process.log", ended))
    supervisor.check()
    reading = await read("http://127.0.0.1:1", 1.0)
    assert reading == Unreachable("http://127.0.0.1:1", "killed by SIGKILL", ended=True)
