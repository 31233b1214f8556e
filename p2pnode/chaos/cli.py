"""`scripts/chaos`: real peers in network namespaces, real faults, a table and a verdict."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from rich.console import Console

from p2pnode.chaos import faults, links, report, strangers
from p2pnode.chaos.checks import Check
from p2pnode.chaos.cluster import Cluster, ClusterError, write_homes
from p2pnode.chaos.faults import Event, Fault, Run
from p2pnode.chaos.netns import Fabric, NetnsError
from p2pnode.cli import OneLineParser

PEERS = 4
CYCLE = (
    Fault.KILL,
    Fault.PAUSE,
    Fault.PARTITION,
    Fault.ISOLATE,
    Fault.CUT_OFF,
    Fault.FLAP,
    Fault.OUTSIDER,
)
HOLD = {
    Fault.KILL: faults.KILL_SECONDS,
    Fault.PAUSE: faults.PAUSE_SECONDS,
    Fault.PARTITION: faults.PARTITION_SECONDS,
    Fault.ISOLATE: links.ISOLATE_SECONDS,
    Fault.CUT_OFF: links.ISOLATE_SECONDS,
    Fault.FLAP: links.FLAPS * 2 * links.FLAP_SECONDS,
    Fault.OUTSIDER: strangers.PHASE_SECONDS,
}
QUICK_HOLD = {
    **HOLD,
    Fault.KILL: 10.0,
    Fault.PAUSE: 15.0,
    Fault.PARTITION: 15.0,
    Fault.OUTSIDER: 2 * len(strangers.FLOODS) * 8.0,
}
"""--quick (CI): each fault once, the quorum losses and floods held shorter (still beyond every
timeout that matters: TCP's unacknowledged-data bound, the first attempts); a link stays down
30 s and flaps six times, as in a long run."""
SHORTEST_PHASE = 5.0
"""A --minutes run ends rather than start a phase shorter than this."""
PHASES: dict[Fault, Callable[[Run, float], Awaitable[None]]] = {
    Fault.KILL: faults.kill_phase,
    Fault.PAUSE: faults.pause_phase,
    Fault.PARTITION: faults.partition_phase,
    Fault.ISOLATE: links.isolate_phase,
    Fault.CUT_OFF: links.cut_off_phase,
    Fault.FLAP: links.flap_phase,
    Fault.OUTSIDER: strangers.outsider_phase,
}


@dataclass(frozen=True, slots=True)
class Plan:
    minutes: float | None
    """None: --quick, each fault once."""
    seed: int
    out: Path
    cycle: tuple[Fault, ...] = CYCLE
    """The faults run, in this order."""
    outage: float = links.ISOLATE_SECONDS
    """How long isolate and cut-off hold links down."""


def next_phase(turn: Fault, left: float) -> tuple[Fault, float] | None:
    """In a --minutes run with `left` seconds to go, the phase to run for `turn` and how long
    it holds: a pause or partition that would not end in time (with its resume) gives way to
    kill -9 for the time left; None once too little is left for anything."""
    if left < SHORTEST_PHASE:
        return None
    if turn is Fault.KILL or left < HOLD[turn] + faults.RESUME_BOUND:
        return Fault.KILL, min(HOLD[Fault.KILL], left)
    return turn, HOLD[turn]


async def phases(run: Run, plan: Plan) -> None:
    outages = {Fault.ISOLATE: plan.outage, Fault.CUT_OFF: plan.outage}
    if plan.minutes is None:
        for fault in plan.cycle:
            await PHASES[fault](run, outages.get(fault, QUICK_HOLD[fault]))
        return
    deadline = run.started + plan.minutes * 60
    for turn in itertools.cycle(plan.cycle):
        chosen = next_phase(turn, deadline - trio.current_time())
        if chosen is None:
            return
        fault, hold = chosen
        await PHASES[fault](run, outages.get(fault, hold))


async def chaos(plan: Plan, events: list[Event], say: Callable[[Event], None]) -> None:
    """Set up the namespaces and the peers, run the faults, finish; everything created is
    removed on the way out, however the run ends."""
    fabric = Fabric(f"p2pc{os.getpid()}")
    try:
        fabric.build(PEERS)
        cluster = Cluster(fabric, await write_homes(plan.out, fabric.links))
        run = Run(cluster, random.Random(plan.seed), trio.current_time(), events, say)
        try:
            if await faults.start(run):
                await phases(run, plan)
            await faults.finish(run)
        finally:
            cluster.stop()  # synchronous: it completes even in a cancelled run
    except (NetnsError, ClusterError) as err:
        fault, target = (Fault.END, "harness") if events else (Fault.START, "set up")
        event = Event(fault, target, 0.0, None, None, (Check("harness", False, str(err)),))
        events.append(event)
        say(event)
    finally:
        for error in fabric.remove():
            print(f"cleanup: {error}", file=sys.stderr)


async def execute(plan: Plan, events: list[Event], say: Callable[[Event], None]) -> bool:
    """Run the chaos until done or until SIGINT or SIGTERM; True if interrupted."""
    interrupted = False
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            await chaos(plan, events, say)
            nursery.cancel_scope.cancel()
    return interrupted


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = OneLineParser(
        prog="chaos", description="Run real p2pnode peers through real faults; check them."
    )
    length = parser.add_mutually_exclusive_group(required=True)
    length.add_argument("--quick", action="store_true", help="each fault once (under 4 min)")
    length.add_argument("--minutes", type=float, help="cycle the faults for this long")
    parser.add_argument(
        "--faults",
        type=_faults,
        default=CYCLE,
        metavar="F,F…",
        help=f"the faults to run, in order (default: all: {','.join(_NAMES)})",
    )
    parser.add_argument(
        "--outage",
        type=float,
        default=links.ISOLATE_SECONDS,
        metavar="SECONDS",
        help=f"how long isolate and cut-off hold a link down (default {links.ISOLATE_SECONDS:g})",
    )
    parser.add_argument("--seed", type=int, help="the choice of victims (default: random)")
    parser.add_argument("--out", type=Path, help="peer homes and logs (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir at the end")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    args = parser.parse_args(argv)
    if args.minutes is not None and not args.minutes > 0:
        parser.error("--minutes must be positive")
    if not args.outage > 0:
        parser.error("--outage must be positive")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: no folder {args.json.parent}")
    if os.geteuid() != 0:
        parser.error("needs root: every peer runs in a network namespace of its own")
    if shutil.which("ip") is None:
        parser.error("needs `ip` (iproute2) for the network namespaces")
    return args


_NAMES = {fault.value.replace(" ", "-").replace("kill--9", "kill"): fault for fault in CYCLE}


def _faults(text: str) -> tuple[Fault, ...]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in _NAMES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"not a fault: {', '.join(unknown) or text!r}")
    return tuple(_NAMES[name] for name in chosen)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**6)
    signal.signal(signal.SIGTERM, _interrupt)  # outside the run too, so the temp dir goes
    out = args.out or Path(tempfile.mkdtemp(prefix="p2pnode-chaos-"))
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=140)
    console.print(f"chaos: {PEERS} provers in {out}, seed {seed}")
    events: list[Event] = []
    began = time.monotonic()
    try:
        plan = Plan(args.minutes, seed, out, args.faults, args.outage)
        interrupted = trio.run(execute, plan, events, lambda e: console.print(_line(e)))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if args.out is None and not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    wall = time.monotonic() - began
    kept = out if args.out is not None or args.keep else None
    return _conclude(console, events, args.json, kept, wall, seed, interrupted)


def _line(event: Event) -> str:
    state = "pass" if event.ok else "FAIL: " + ", ".join(c.name for c in event.checks if not c.ok)
    resume = "" if event.resume is None else f", resumed in {event.resume:.1f} s"
    return f"  +{event.at:5.1f} s  {event.fault.value} {event.target}{resume}: {state}"


def _conclude(
    console: Console,
    events: list[Event],
    json_file: Path | None,
    kept: Path | None,
    wall: float,
    seed: int,
    interrupted: bool,
) -> int:
    console.print(report.table(events))
    for line in report.failures(events):
        console.print(line, soft_wrap=True, markup=False, highlight=False)
    result = report.verdict(events, wall=wall, seed=seed, interrupted=interrupted)
    if json_file is not None:
        document = report.to_json(events, result, wall=wall, seed=seed)
        json_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    if kept is not None:
        console.print(f"peer homes and logs kept in {kept}")
    console.print(result.line, markup=False, highlight=False)
    return 0 if result.ok else 1
