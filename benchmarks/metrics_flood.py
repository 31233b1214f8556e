"""A follower's public metrics server (node.metrics) under a loop of /metrics requests from 6
threads, from one /24 and then from 200: the follower's CPU (from /proc), the requests it
answered, and the latency of a scraper asking once a second from another /24.
`python -m benchmarks.metrics_flood [SECONDS]`."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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
    command = _p2pnode("run", "--home", str(home), "--set", "node.metrics=0.0.0.0:0")
    peer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None
    for line in peer.stdout:
        if line.startswith("metrics and health"):
            return peer, line.split()[-2].removesuffix("/metrics")  # http://0.0.0.0:PORT
    raise SystemExit("the follower did not start")


SCRAPER = "127.0.250.1"
"""The scraper's address: a /24 of its own."""


def _get(port: int, source: str, timeout: float) -> bool:
    """GET /metrics from `source`; whether it was answered whole."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout, (source, 0)) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        return reply.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def _flood(port: int, seconds: float, networks: int) -> tuple[int, list[float], int]:
    """While CLIENTS threads each ask in a loop for `seconds`, from `networks` /24s in turn:
    the requests answered, the scraper's latencies (ms) and its failures."""
    end, answered = time.monotonic() + seconds, [0] * CLIENTS
    sources = [f"127.0.{n}.{1 + i}" for n in range(networks) for i in range(CLIENTS)]

    def ask(index: int) -> None:
        turn = index
        while time.monotonic() < end:
            answered[index] += _get(port, sources[turn % len(sources)], 5.0)
            turn += CLIENTS

    latencies: list[float] = []
    failures = [0]

    def scrape() -> None:
        while time.monotonic() < end:
            start = time.monotonic()
            if _get(port, SCRAPER, 10.0):
                latencies.append(1000 * (time.monotonic() - start))
            else:
                failures[0] += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start)))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(CLIENTS)]
    threads.append(threading.Thread(target=scrape))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(answered), latencies, failures[0]


def _share(pid: int, work: Callable[[], object]) -> float:
    """The share of a core `pid` used while `work` ran."""
    start, cpu = time.monotonic(), _cpu_seconds(pid)
    work()
    return (_cpu_seconds(pid) - cpu) / (time.monotonic() - start)


Row = tuple[str, float, str, str, str]


def _flooded(pid: int, port: int, seconds: float, networks: int) -> Row:
    """A table row: a flood from `networks` /24s, and what it cost and left the scraper."""
    got: list[tuple[int, list[float], int]] = []
    share = _share(pid, lambda: got.append(_flood(port, seconds, networks)))
    answered, latencies, failures = got[0]
    late = "-"
    if latencies:
        late = f"{statistics.median(latencies):.0f} / {max(latencies):.0f}"
    return (f"{networks} /24", 100 * share, str(answered), late, str(failures))


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 10.0
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as base:
        peer, url = _follower(Path(base))
        port = int(url.rsplit(":", 1)[1])
        try:
            idle = _share(peer.pid, lambda: time.sleep(seconds))
            rows.append(("idle", 100 * idle, "", "", ""))
            rows += [_flooded(peer.pid, port, seconds, networks) for networks in (1, 200)]
        finally:
            peer.send_signal(signal.SIGTERM)
            peer.wait()
    head = ("flood from", "% of a core", "answered", "scraper ms p50 / max", "failed")
    print(f"{head[0]:<10} {head[1]:>12} {head[2]:>9} {head[3]:>21} {head[4]:>7}")
    for name, share, answered, late, failed in rows:
        print(f"{name:<10} {share:>12.1f} {answered:>9} {late:>21} {failed:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
