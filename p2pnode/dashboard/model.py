"""What the dashboard shows of each peer: its status record, or why it could not be read."""

from __future__ import annotations

from dataclasses import dataclass

from p2pnode.peer.status import PeerStatus


@dataclass(frozen=True, slots=True)
class Unreachable:
    """A peer whose status could not be read; `since` is when polling it started to fail."""

    url: str
    reason: str
    since: float | None = None
    ended: bool = False
    """Its process is known to have ended (a supervisor saw it): `reason` says how."""


Reading = PeerStatus | Unreachable
