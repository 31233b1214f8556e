"""The `p2pnode` command: init, run, testnet, id, config, status, dashboard, submit, mutation…"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from p2pnode import __version__

Command = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line (and a non-zero exit), not a usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


HOME_VARIABLE = "P2PNODE_HOME"
"""The --home of every command that takes one, when the flag is left out."""


def _home_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """--home, required unless $P2PNODE_HOME gives it."""
    home = os.environ.get(HOME_VARIABLE) or None
    parser.add_argument(
        "--home", required=home is None, default=home, help=f"{what} (default: ${HOME_VARIABLE})"
    )


def _target(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    """--home DIR or --url URL: the peer a command talks to."""
    action = "append" if many else "store"
    again = " (repeatable)" if many else ""
    home = os.environ.get(HOME_VARIABLE) or None
    group = parser.add_mutually_exclusive_group(required=home is None)
    # An `append` default would be kept beside the flags given: filled in after parsing.
    group.add_argument(
        "--home",
        action=action,
        default=None if many else home,
        help=f"the home folder of a running peer{again} (default: ${HOME_VARIABLE})",
    )
    group.add_argument(
        "--url", action=action, help=f"a peer's status url, http://127.0.0.1:PORT{again}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="p2pnode",
        description="A peer of a round-based BFT consensus network over libp2p gossipsub.",
    )
    parser.add_argument("--version", action="version", version=f"p2pnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _peer_commands(sub)
    _client_commands(sub)
    return parser


def _peer_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    """Commands that make or run peers."""
    from p2pnode.chain.genesis import DEFAULT_DIFFICULTY, DEFAULT_VDF_BITS, VDF_BITS
    from p2pnode.cli import commands, config, reset, testnet

    init = sub.add_parser("init", help="create a peer home: key, config and maybe a genesis")
    _home_flag(init, "the folder to create")
    init.add_argument("--network", help="start a new network of this name with this peer")
    init.add_argument("--listen", help="multiaddr to listen on (default: a free loopback port)")
    init.add_argument(
        "--difficulty",
        type=int,
        help=f"VDF iterations per frame of the new network (default {DEFAULT_DIFFICULTY})",
    )
    init.add_argument(
        "--vdf-bits",
        type=int,
        choices=VDF_BITS,
        help=f"the new network's proof size in bits (default {DEFAULT_VDF_BITS})",
    )
    init.set_defaults(run=commands.init)

    run = sub.add_parser(
        "run",
        help="run a peer until Ctrl-C",
        epilog="`p2pnode config` lists every setting --set takes, with its default.",
    )
    _home_flag(run, "the peer's home folder")
    run.add_argument("--listen", action="append", help="multiaddr to listen on (repeatable)")
    run.add_argument(
        "--bootstrap", action="append", help="multiaddr of a peer to join, with /p2p/ (repeatable)"
    )
    run.add_argument(
        "--announce",
        action="append",
        metavar="MA",
        help="multiaddr to share instead of the listen ones, e.g. a public IP (repeatable)",
    )
    run.add_argument(
        "--genesis-sha256",
        metavar="HEX",
        help="refuse a genesis with another sha256 (default: trust the first bootstrap peer's)",
    )
    run.add_argument("--dashboard", action="store_true", help="show the live dashboard")
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting of config.toml, e.g. consensus.timeouts.voting=2 (repeatable)",
    )
    run.set_defaults(run=commands.run)

    net = sub.add_parser("testnet", help="start N local provers and show them live")
    net.add_argument("--peers", type=int, required=True, help="how many provers")
    net.add_argument("--out", default="testnet", help="where the homes go (default ./testnet)")
    net.add_argument(
        "--base-port",
        type=int,
        help="new homes: peer I listens on base+I (default 4001; 0: ports the system picks)",
    )
    net.add_argument(
        "--difficulty", type=int, default=DEFAULT_DIFFICULTY, help="VDF iterations per frame"
    )
    net.add_argument(
        "--vdf-bits",
        type=int,
        choices=VDF_BITS,
        default=DEFAULT_VDF_BITS,
        help=f"proof size in bits (default {DEFAULT_VDF_BITS})",
    )
    net.add_argument("--no-dashboard", action="store_true", help="print a line per peer instead")
    net.add_argument("--generate-only", action="store_true", help="write the homes and exit")
    net.add_argument(
        "--restart", action="store_true", help="start a peer that exited again (after 1 to 30 s)"
    )
    net.set_defaults(run=testnet.testnet)

    ident = sub.add_parser("id", help="a home's peer id and multiaddrs")
    _home_flag(ident, "the peer's home folder")
    ident.set_defaults(run=commands.ident)

    wipe = sub.add_parser(
        "reset",
        help="wipe a stopped peer's store (it syncs again); keeps its key, genesis and config",
    )
    _home_flag(wipe, "the peer's home folder")
    wipe.add_argument(
        "--unsafe",
        action="store_true",
        help="reset a prover too, though it forgets the votes it signed",
    )
    wipe.set_defaults(run=reset.reset)

    settings = sub.add_parser(
        "config", help="every setting's value and where it comes from (the defaults: no --home)"
    )
    settings.add_argument(
        "--home",
        default=os.environ.get(HOME_VARIABLE) or None,
        help=f"the peer's home folder (default: ${HOME_VARIABLE}, else none)",
    )
    settings.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="as run takes it (repeatable)",
    )
    settings.add_argument("--json", action="store_true", help="as one JSON object")
    settings.set_defaults(run=config.config)


def _client_commands(sub: argparse._SubParsersAction[OneLineParser]) -> None:
    """Commands that ask running peers, and one that needs no peer at all."""
    from p2pnode.cli import commands, mutations, states

    status = sub.add_parser("status", help="a running peer's status")
    _target(status)
    status.add_argument("--json", action="store_true", help="the status as one JSON object")
    status.set_defaults(run=commands.status)

    dashboard = sub.add_parser("dashboard", help="attach the live dashboard to running peers")
    _target(dashboard, many=True)
    dashboard.set_defaults(run=commands.dashboard)

    submit = sub.add_parser("submit", help="submit a mutation, or a file of them")
    _target(submit)
    what = submit.add_mutually_exclusive_group(required=True)
    what.add_argument("data", nargs="?", help="the mutation (at most 1024 bytes of UTF-8)")
    what.add_argument(
        "--file",
        metavar="PATH",
        help="submit a mutation per line of PATH (- reads stdin), in batches; prints each "
        "one's id and a summary",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help=f"wait until final frames hold them (at most {mutations.WAIT_FINAL:.0f} s)",
    )
    submit.add_argument("--json", action="store_true", help="the results as one JSON object")
    submit.set_defaults(run=mutations.submit)

    mutation = sub.add_parser(
        "mutation",
        help="where a mutation is: final (rank, frame), pending, expired, displaced, unknown",
        description="Exits 0 if the mutation is final or pending, 1 if the peer no longer "
        "holds it (expired, displaced, unknown).",
    )
    _target(mutation)
    mutation.add_argument("id", help="the mutation's id, as submit prints it")
    mutation.add_argument("--json", action="store_true", help="the answer as one JSON object")
    mutation.set_defaults(run=mutations.mutation)

    frames = sub.add_parser("frames", help="final frames and their mutations")
    _target(frames)
    frames.add_argument("--from", dest="start", type=int, help="from this rank (default: last 16)")
    frames.set_defaults(run=commands.frames)

    machine = sub.add_parser("states", help="the consensus engine's transition table")
    machine.add_argument("--mermaid", action="store_true", help="as a Mermaid state diagram")
    machine.set_defaults(run=states.states)


INTERRUPTED = 130
"""The exit status of a command stopped by Ctrl-C (128 + SIGINT), as a shell reports it."""
READER_GONE = 141
"""The exit status of a command whose reader went away (128 + SIGPIPE), as `… | head` makes it."""


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse(words)
        command: Command = args.run
        return command(args)
    except BaseException as err:
        status = quiet_exit(err, next((w for w in words if not w.startswith("-")), ""))
        if status is None:
            raise
        return status


def parse(words: Sequence[str]) -> argparse.Namespace:
    """The command line's arguments; $P2PNODE_HOME fills in a --home left out (for the
    dashboard's repeatable one too, but only when no --home and no --url is given)."""
    args = build_parser().parse_args(words)
    if getattr(args, "home", "") is None and getattr(args, "url", None) is None:
        home = os.environ.get(HOME_VARIABLE) or None
        args.home = [home] if home and args.command == "dashboard" else home
    return args


def quiet_exit(err: BaseException, command: str) -> int | None:
    """The exit status for what ends a command without a traceback: Ctrl-C, a reader that went
    away, or a user error (printed in one line); None for anything else. trio hands Ctrl-C and
    errors of a nursery's tasks over in exception groups."""
    if _holds(err, KeyboardInterrupt):
        return INTERRUPTED
    if _holds(err, BrokenPipeError):
        # Whatever is left in stdout's buffer cannot be written either: send it nowhere, so
        # that the flush at exit does not complain again.
        with contextlib.suppress(OSError, ValueError):  # not a file (a test's capture)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return READER_GONE
    if not isinstance(err, Exception):
        return None
    # Imported only now: the user errors' modules pull in libp2p, slow for a quick command.
    from p2pnode.cli.errors import user_message

    message = user_message(err)
    if message is None:
        return None
    print(f"p2pnode {command}: {message}", file=sys.stderr)
    return 1


def _holds(err: BaseException, kind: type[BaseException]) -> bool:
    """Whether `err` is a `kind`, or an exception group with one among its leaves."""
    if isinstance(err, BaseExceptionGroup):
        return err.subgroup(kind) is not None
    return isinstance(err, kind)
