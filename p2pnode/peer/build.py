"""What was built: the package's version and, from a git checkout, its commit."""

from __future__ import annotations

import functools
import re
from pathlib import Path

from p2pnode import __version__

CHECKOUT = Path(__file__).resolve().parent.parent.parent
_COMMIT = re.compile(r"[0-9a-f]{40}")


@functools.cache
def commit(checkout: Path = CHECKOUT) -> str:
    """The commit the package runs from (12 hex digits), or "unknown" outside a checkout.
    Read from .git directly: no git binary, no subprocess."""
    git = checkout / ".git"
    try:
        if git.is_file():  # a worktree: "gitdir: <path>"
            git = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if not loose.exists() and (git / "commondir").exists():
                loose = git / (git / "commondir").read_text(encoding="utf-8").strip() / ref
            head = (
                loose.read_text(encoding="utf-8").strip() if loose.exists() else _packed(git, ref)
            )
    except (OSError, IndexError, UnicodeDecodeError):
        return "unknown"
    return head[:12] if _COMMIT.fullmatch(head) else "unknown"


def _packed(git: Path, ref: str) -> str:
    for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
        if line.endswith(f" {ref}"):
            return line.split()[0]
    return ""


VERSION = __version__
