"""`scripts/attack`: a 4-prover testnet on loopback and one outsider, each attack in turn.

For every attack: the slowest peer's rounds/s in a control phase, then while the outsider (a
process of its own, `p2pnode.chaos.outsider`) attacks every peer; the growth of the peers'
logs; connections opened to a bystander; how many rounds an honest submit took to be final.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from rich.console import Console
from rich.table import Table

from benchmarks.bench_run import Fleet
from p2pnode.api.client import ClientError, get_json, get_status, post_json, status_url
from p2pnode.api.server import CBOR
from p2pnode.chain.mempool import mutation_id
from p2pnode.local.homes import generate_testnet
from p2pnode.peer.home import Home

if TYPE_CHECKING:
    from trio_typing import TaskStatus

ATTACKS = (
    "bad-signatures",
    "graft-eclipse",
    "mutation-flood",
    "iwant-flood",
    "made-up-peers",
    "raw-sockets",
    "stream-churn",
    "syn-resets",
    "tag-submit",
)
"""The outsider's attacks, and a local one: 256 KB bodies of CBOR tag 30 to POST /submit."""
NETWORK = "testnet"
BYSTANDER = "127.0.0.9"
OUTSIDER = "127.0.1.1"
TAG_BOMB = b"\xd8\x1e\x82" + (b"\xc2\x5a" + (128_000).to_bytes(4, "big") + b"\x01" * 128_000) * 2


@dataclass(frozen=True, slots=True)
class Outcome:
    attack: str
    control: float
    """Rounds/s of the slowest peer before the attack."""
    attacked: float
    log_kb: float
    """Growth of all the peers' logs during the attack."""
    bystander_per_min: float
    """Connections the peers opened to the bystander, per minute of attack."""
    submit_rounds: int | None
    """Ranks from an honest submit (mid-attack) to the frame that holds it; None: not final."""
    sent: dict[str, int]
    cpu_per_round: tuple[float, float]
    """CPU ms per final round per peer (mean of the peers), before and under the attack."""
    outsider_cores: float
    """CPU the outsider's process used, in cores, while it attacked."""

    @property
    def kept(self) -> float:
        return self.attacked / self.control if self.control else 0.0


async def _ranks(homes: Sequence[Home]) -> list[int]:
    ranks = []
    for home in homes:
        try:
            ranks.append((await get_status(status_url(home), timeout=5)).finalized_rank)
        except ClientError:
            ranks.append(-1)
    return ranks


async def _rate(fleet: Fleet, seconds: float) -> tuple[float, float]:
    """Rounds per second of the slowest peer over `seconds`, and the peers' mean CPU ms per
    round of that rate."""
    before, cpu = await _ranks(fleet.homes), fleet.cpu()
    await trio.sleep(seconds)
    after, used = await _ranks(fleet.homes), fleet.cpu()
    rounds = min(b - a for a, b in zip(before, after, strict=True))
    spent = sum(u - c for u, c in zip(used, cpu, strict=True)) / len(cpu)
    return rounds / seconds, spent * 1000 / max(rounds, 1)


def _log_bytes(homes: Sequence[Home]) -> int:
    return sum(home.log_file.stat().st_size for home in homes if home.log_file.exists())


async def _bystander(
    count: list[int], *, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A host nobody should dial: counts the connections it gets, and answers none."""

    async def handler(stream: trio.SocketStream) -> None:
        count[0] += 1
        await stream.aclose()

    listeners = await trio.open_tcp_listeners(0, host=BYSTANDER)
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


async def _honest_submit(home: Home, seconds: float) -> int | None:
    """Submit one mutation half way into the attack; ranks until a final frame holds it."""
    await trio.sleep(seconds / 2)
    url, data = status_url(home), b"honest %f" % trio.current_time()
    start = (await get_status(url)).finalized_rank
    await post_json(url, "/submit", data)
    key = mutation_id(data).hex()
    deadline = trio.current_time() + seconds
    while trio.current_time() < deadline:
        rank = (await get_json(url, f"/mutation?id={key}"))["rank"]
        if isinstance(rank, int):
            return rank - start
        await trio.sleep(0.2)
    return None


async def _tag_bombs(homes: Sequence[Home], until: float, sent: dict[str, int]) -> None:
    while trio.current_time() < until:
        for home in homes:
            try:
                await post_json(status_url(home), "/submit", TAG_BOMB, content_type=CBOR)
            except ClientError:
                sent["refused"] = sent.get("refused", 0) + 1
            sent["bodies"] = sent.get("bodies", 0) + 1
        await trio.sleep(0.5)


async def _outsider(
    attack: str, targets: Sequence[str], seconds: float, bystander: int
) -> dict[str, int]:
    command = [sys.executable, "-m", "p2pnode.chaos.outsider", attack, "--network", NETWORK]
    command += [arg for addr in targets for arg in ("--target", addr)]
    command += ["--seconds", str(seconds), "--third-party", f"{BYSTANDER}:{bystander}"]
    # Raw sockets come from an address of their own: the provers' (127.0.0.1) is never held
    # to the inbound rate, as a prover's address is not.
    command += ["--source", OUTSIDER]
    done = await trio.run_process(command, capture_stdout=True, check=False)
    lines = done.stdout.decode().strip().splitlines()
    return dict(json.loads(lines[-1])) if done.returncode == 0 and lines else {"failed": 1}


async def _one(
    attack: str, fleet: Fleet, targets: Sequence[str], seconds: float, port: int, hits: list[int]
) -> Outcome:
    homes = fleet.homes
    control, control_cpu = await _rate(fleet, seconds)
    logs, before = _log_bytes(homes), hits[0]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    sent: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        if attack == "tag-submit":
            nursery.start_soon(_tag_bombs, homes, trio.current_time() + seconds, sent)
        else:

            async def outsider() -> None:
                sent.update(await _outsider(attack, targets, seconds, port))

            nursery.start_soon(outsider)
        submitted: list[int | None] = []

        async def submit() -> None:
            submitted.append(await _honest_submit(homes[0], seconds))

        nursery.start_soon(submit)
        attacked, attacked_cpu = await _rate(fleet, seconds)
    growth = (_log_bytes(homes) - logs) / 1024
    per_min = (hits[0] - before) * 60 / seconds
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)  # the outsider, and only it
    used = reaped.ru_utime + reaped.ru_stime - children.ru_utime - children.ru_stime
    cores = max(0.0, used / seconds)
    cpu = (control_cpu, attacked_cpu)
    return Outcome(attack, control, attacked, growth, per_min, submitted[0], sent, cpu, cores)


async def run(attacks: Sequence[str], seconds: float, base: Path) -> list[Outcome]:
    _, homes = generate_testnet(base, 4, network=NETWORK, base_port=0)
    fleet = Fleet(homes)
    outcomes = []
    hits = [0]
    try:
        await fleet.start()
        with trio.fail_after(120):
            while min(await _ranks(homes)) < 2:
                await trio.sleep(0.2)
        targets = [(await get_status(status_url(h))).addrs[0] for h in homes]
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_bystander, hits)
            for attack in attacks:
                outcomes.append(await _one(attack, fleet, targets, seconds, port, hits))
            nursery.cancel_scope.cancel()
    finally:
        fleet.stop()
    return outcomes


def table(outcomes: Sequence[Outcome]) -> Table:
    out = Table(title="one outsider against 4 provers on loopback (slowest peer)")
    for column in (
        "attack",
        "control rounds/s",
        "attacked rounds/s",
        "kept",
        "CPU ms/round/peer",
        "outsider cores",
        "log growth",
        "bystander conns/min",
        "honest submit final after",
        "the outsider sent",
    ):
        out.add_column(column, justify="right")
    for o in outcomes:
        out.add_row(
            o.attack,
            f"{o.control:.2f}",
            f"{o.attacked:.2f}",
            f"{o.kept:.0%}",
            f"{o.cpu_per_round[0]:.0f} → {o.cpu_per_round[1]:.0f}",
            f"{o.outsider_cores:.2f}",
            f"{o.log_kb:.0f} KB",
            f"{o.bystander_per_min:.0f}",
            "not final" if o.submit_rounds is None else f"{o.submit_rounds} ranks",
            ", ".join(f"{v} {k}" for k, v in sorted(o.sent.items())),
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="attack", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="per control and attack phase")
    parser.add_argument("--attack", action="append", choices=ATTACKS, help="default: all")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    with tempfile.TemporaryDirectory(prefix="p2pnode-attack-") as folder:
        outcomes = trio.run(run, args.attack or ATTACKS, args.seconds, Path(folder))
    Console(width=200).print(table(outcomes))
    if args.json is not None:
        rows = [{**asdict(o), "kept": o.kept} for o in outcomes]
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
