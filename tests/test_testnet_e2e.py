"""`p2pnode testnet --peers 4` in a pseudo-terminal: the dashboard shows the finalized rank
advance; Ctrl-C stops it and leaves no process behind."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import IO

ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78])")
FINAL = re.compile(r"final (\d+)")


def spawn_in_terminal(argv: list[str], rows: int, columns: int) -> tuple[int, int]:
    """Start `argv` with a pseudo-terminal as its controlling terminal; (pid, master fd)."""
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once
        os.execvpe(argv[0], argv, {**os.environ, "TERM": "xterm-256color"})
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return pid, master


def read_screen(master: int, seconds: float) -> str:
    """What the terminal received within `seconds`, control sequences removed."""
    chunks = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], min(left, 0.2))
        if ready:
            try:
                chunks.append(os.read(master, 65536))
            except OSError:  # the child closed the terminal
                break
    return ANSI.sub(b"", b"".join(chunks)).decode(errors="replace")


def wait_exit(pid: int, timeout: float) -> int:
    """The child's wait status once it exits; fails if it is still running after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)  # another process: its exit can only be polled from here
    raise AssertionError(f"the testnet command did not exit within {timeout} s of Ctrl-C")


def peers_alive(out: Path, home: str = "") -> list[int]:
    """Processes whose command line runs a peer of the testnet in `out` (in its `home`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(out / home).encode() in command and b"\x00run\x00" in command:
                found.append(int(entry.name))
    return found


def test_testnet_shows_ranks_advancing_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "net"
    argv = [sys.executable, "-m", "p2pnode", "testnet", "--peers", "4", "--out", str(out)]
    argv += ["--base-port", "0", "--difficulty", "200"]  # ports the system picks
    pid, master = spawn_in_terminal(argv, rows=30, columns=100)
    try:
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (len(set(seen)) < 3 or max(seen) < 3):
            seen += [int(rank) for rank in FINAL.findall(read_screen(master, 2))]
        assert len(set(seen)) >= 3, f"the final rank did not advance on screen: {seen}"
        assert max(seen) >= 3
        assert len(peers_alive(out)) == 4, "four peer processes run behind the dashboard"
        screen = read_screen(master, 1)
        assert "peer0" in screen, "peers are called by their homes' names"
        assert "Ctrl-C stops the testnet" in screen
        assert "join with --bootstrap /ip4/127.0.0.1/tcp/" in screen
        # A dead peer shows as ended, with how (it showed as unreachable, and counted as
        # stopped at the end).
        os.kill(peers_alive(out, "peer3")[0], signal.SIGKILL)
        screen = ""
        deadline = time.monotonic() + 30
        while "killed by SIGKILL" not in screen and time.monotonic() < deadline:
            screen = read_screen(master, 1)
        assert "killed by SIGKILL" in screen
        assert "ended" in screen
        os.write(master, b"\x03")  # Ctrl-C
        tail = read_screen(master, 1)
        status = wait_exit(pid, timeout=30)
        assert os.WIFEXITED(status), f"ended by a signal: {status}"
        assert os.WEXITSTATUS(status) == 1, tail  # a peer had ended on its own
        assert "stopped 3 peers" in tail
        assert "peer3 killed by SIGKILL" in tail
        assert peers_alive(out) == []
    finally:
        os.close(master)
        for stray in peers_alive(out):
            os.kill(stray, signal.SIGKILL)
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_a_restarted_first_peer_keeps_its_address_and_the_testnet_goes_on(tmp_path: Path) -> None:
    """`--restart` of peer0 on ports the system picks: it came back on another port, where
    the others (told its old address) never found it, and the testnet stalled."""
    out = tmp_path / "net"
    argv = [sys.executable, "-m", "p2pnode", "testnet", "--peers", "2", "--out", str(out)]
    argv += ["--base-port", "0", "--difficulty", "200", "--no-dashboard", "--restart"]
    testnet = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert testnet.stdout is not None
        before = _rank_reaching(testnet.stdout, 2)
        first = peers_alive(out, "peer0")
        os.kill(first[0], signal.SIGKILL)
        told = _line_with(testnet.stdout, "killed by")
        assert told.startswith("peer0 killed by SIGKILL: ")
        assert told.endswith("(restarting)\n")
        # Back, and the two finalize together again: rank beyond what they had.
        _rank_reaching(testnet.stdout, before + 3, timeout=90)
        assert peers_alive(out, "peer0") != first
    finally:
        testnet.send_signal(signal.SIGINT)
        assert testnet.wait(timeout=30) == 0
        for stray in peers_alive(out):
            os.kill(stray, signal.SIGKILL)


def _line_with(stream: IO[str], needle: str, timeout: float = 30) -> str:
    """The next line of `stream` holding `needle` (a thread reads: no hang past `timeout`)."""
    found: list[str] = []

    def read() -> None:
        for line in stream:
            if needle in line:
                found.append(line)
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"no line with {needle!r} within {timeout} s"
    return found[0]


def _rank_reaching(stream: IO[str], rank: int, timeout: float = 60) -> int:
    """Read lines (`…  rank N  state  sync`) until one shows a rank of at least `rank`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no peer reached rank {rank}"
        line = _line_with(stream, "  rank ", left)
        seen = int(line.split("  rank ")[1].split()[0])
        if seen >= rank:
            return seen
