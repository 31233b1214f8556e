"""Where each round's time went: the engine's states folded into the phases of a round."""

from __future__ import annotations

import enum
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from p2pnode.consensus import Event, State


class Phase(enum.Enum):
    """A stretch of a round on this peer, named after what it waits for."""

    LIVENESS = "liveness"
    """Collecting mutations and waiting for a quorum of provers to announce themselves."""
    PROVING = "proving"
    """Evaluating the VDF and publishing the proposal."""
    VOTING = "voting"
    """Waiting for proposals, checking the voted proof, voting, waiting for a vote quorum."""
    CONFIRMATION = "confirmation"
    """Precommitting and waiting for a quorum of precommits (the commit)."""
    COMMIT = "commit"
    """Keeping the committed frame."""
    OTHER = "other"
    """Catching up, starting, stopping."""


PHASE_OF: dict[State, Phase] = {
    State.COLLECTING: Phase.LIVENESS,
    State.LIVENESS_CHECK: Phase.LIVENESS,
    State.PROVING: Phase.PROVING,
    State.PUBLISHING: Phase.PROVING,
    State.VOTING: Phase.VOTING,
    State.FINALIZING: Phase.CONFIRMATION,
    State.VERIFYING: Phase.COMMIT,
}


@dataclass(frozen=True, slots=True)
class RoundPhases:
    """Milliseconds this peer spent in each phase while deciding `rank`."""

    rank: int
    millis: dict[Phase, int]

    def to_json(self) -> dict[str, int]:
        return {phase.value: self.millis[phase] for phase in Phase}


class PhaseClock:
    """A transition listener that times the phases of each round (monotonic clock).

    A round ends when a frame becomes final here, whichever state that happens in: the time
    since the previous final frame is split over the states passed through.
    """

    def __init__(self, keep: int = 64, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entered = clock()
        self._state = State.STOPPED
        self._spent = dict.fromkeys(Phase, 0.0)
        self.rounds: deque[RoundPhases] = deque(maxlen=keep)

    def on_transition(self, from_: State, to: State, event: Event) -> None:
        if from_ is not to:
            self._close_stretch()
            self._state = to

    def on_final(self, rank: int) -> None:
        self._close_stretch()
        millis = {phase: round(seconds * 1000) for phase, seconds in self._spent.items()}
        self.rounds.append(RoundPhases(rank, millis))
        self._spent = dict.fromkeys(Phase, 0.0)

    def _close_stretch(self) -> None:
        now = self._clock()
        self._spent[PHASE_OF.get(self._state, Phase.OTHER)] += now - self._entered
        self._entered = now

    def of(self, rank: int) -> RoundPhases | None:
        """The phases of `rank`, if it is among the rounds kept and this peer decided it."""
        return next((phases for phases in self.rounds if phases.rank == rank), None)
