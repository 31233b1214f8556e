"""Entry point of the `p2pnode` command."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run the p2pnode command line."""
    args = sys.argv[1:] if argv is None else argv
    if args in ([], ["--help"], ["-h"]):
        print("usage: p2pnode --version")
        return 0
    if args == ["--version"]:
        from p2pnode import __version__

        print(__version__)
        return 0
    print(f"p2pnode: unknown arguments: {' '.join(args)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
