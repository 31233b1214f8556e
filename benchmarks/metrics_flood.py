"""A follower's CPU, idle and under a loop of /metrics requests from 6 threads on its public
metrics server (node.metrics), from /proc: `python -m benchmarks.metrics_flood [SECONDS]`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

CLIENTS = 6


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _p2pnode(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2pnode", *args]


def _follower(base: Path) -> tuple[subprocess.Popen[str], str]:
    """A follower alone (a one-prover network it is not the prover of): idle but serving."""
    solo, home = base / "solo", base / "follower"
    for args in (["--home", str(solo), "--network", "solo"], ["--home", str(home)]):
        subprocess.run(_p2pnode("init", *args), check=True, capture_output=True)
    shutil.copy(solo / "genesis.json", home / "genesis.json")
    command = _p2pnode("run", "--home", str(home), "--set", "node.metrics=127.0.0.1:0")
    peer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    for line in peer.stdout:
        if line.startswith("metrics and health"):
            return peer, line.split()[-2].removesuffix("/metrics")
    raise SystemExit("the follower did not start")


def _flood(url: str, seconds: float) -> int:
    """Requests answered while CLIENTS threads each ask in a loop for `seconds`."""
    end, answered = time.monotonic() + seconds, [0] * CLIENTS

    def ask(index: int) -> None:
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
                    reply.read()
                answered[index] += 1
            except OSError:
                pass

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answered)


def _share(pid: int, work: Callable[[], object]) -> float:
    """The share of a core `pid` used while `work` ran."""
    start, cpu = time.monotonic(), _cpu_seconds(pid)
    work()
    return (_cpu_seconds(pid) - cpu) / (time.monotonic() - start)


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    with tempfile.TemporaryDirectory() as base:
        peer, url = _follower(Path(base))
        try:
            idle = _share(peer.pid, lambda: time.sleep(seconds))
            answered: list[int] = []
            flood = _share(peer.pid, lambda: answered.append(_flood(url, seconds)))
        finally:
            peer.send_signal(signal.SIGTERM)
            peer.wait()
    print(f"{'phase':<8} {'% of a core':>12} {'answered':>9}")
    print(f"{'idle':<8} {100 * idle:>12.1f} {'':>9}")
    print(f"{'flood':<8} {100 * flood:>12.1f} {answered[0]:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
