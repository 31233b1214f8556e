"""Timeouts and bounds of the engine, with the original's defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from p2pnode.consensus.states import Event, State


def _check_positive(record: object) -> None:
    for field in fields(record):  # type: ignore[arg-type]
        value = getattr(record, field.name)
        if not (isinstance(value, int | float) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{field.name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds each state may last before its timeout event, and the engine's other delays."""

    starting: float = 1.0
    loading: float = 36000.0
    collecting: float = 1.0
    liveness_check: float = 1.0
    proving: float = 120.0
    publishing: float = 1.0
    voting: float = 1.0
    """Also (attempts only) the longest an unlocked prover waits, from the start of an attempt
    (in attempt 0, from the start of proving), for the proposal of the attempt's top
    prover before it votes for the best one at hand."""
    finalizing: float = 1.0
    verifying: float = 1.0
    stopping: float = 30.0
    attempt: float = 4.0
    """Length of the first attempt of a rank; each later attempt doubles it (attempts only)."""
    attempt_max: float = 60.0
    """Upper bound of an attempt's length."""
    grace: float = 2.0
    """How long an attempt lasts once a quorum of provers has voted in it (attempts only). The
    grown length bounds an attempt while a quorum cannot even vote; once it can, a split is
    known within a few message delays, so a long attempt is not waited out."""
    retry: float = 0.1
    """First delay before retrying a provider call that failed transiently; doubles per failure."""
    retry_max: float = 5.0
    """Upper bound of that delay."""
    resync: float = 1.0
    """How often a follower (a peer that is not a prover) synchronizes again."""

    def __post_init__(self) -> None:
        _check_positive(self)

    def settle(self, splits: int) -> float:
        """How long a prover waits at the start of an attempt before it votes, after `splits`
        attempts of the round in which a quorum voted and nothing was decided: none at first,
        then an eighth of `grace`, doubling with each such attempt up to `grace` itself: a
        precommit sent at the very end of an attempt, which a network that keeps `grace`'s
        promise delivers within it, is then in before the vote."""
        if splits == 0:
            return 0.0
        return self.grace / 2.0 ** max(0, 4 - splits)

    def for_proving(self, seconds: float) -> Timeouts:
        """These timeouts, raised where needed for proofs that take `seconds`: an unlocked
        prover waits for the top prover's proposal (`voting`) twice a proving time from
        the start of the attempt, an attempt lasts two proving times, that wait and two more
        seconds, and proving itself is allowed four times its expected time. Never lowered."""
        voting = max(self.voting, 2.0 * seconds)
        attempt = max(self.attempt, 2.0 * seconds + voting + 2.0)
        return replace(
            self,
            voting=voting,
            attempt=attempt,
            attempt_max=max(self.attempt_max, attempt),
            proving=max(self.proving, 4.0 * seconds),
        )

    def of(self, state: State) -> tuple[float, Event] | None:
        """The timeout of `state` and the event it raises, or None for a state without one."""
        spec = _TIMEOUT_EVENTS.get(state)
        if spec is None:
            return None
        return float(getattr(self, spec[0])), spec[1]

    def attempt_length(self, attempt: int) -> float:
        """Bounded exponential backoff: the timeout grows with the attempt number."""
        return min(self.attempt * 2.0 ** min(attempt, 64), self.attempt_max)

    def retry_delay(self, failures: int) -> float:
        return min(self.retry * 2.0 ** min(max(failures - 1, 0), 64), self.retry_max)


_TIMEOUT_EVENTS: dict[State, tuple[str, Event]] = {
    State.STARTING: ("starting", Event.INIT_COMPLETE),
    State.LOADING: ("loading", Event.SYNC_TIMEOUT),
    State.COLLECTING: ("collecting", Event.COLLECTION_DONE),
    State.LIVENESS_CHECK: ("liveness_check", Event.LIVENESS_TIMEOUT),
    State.PROVING: ("proving", Event.PUBLISH_TIMEOUT),
    State.PUBLISHING: ("publishing", Event.PUBLISH_TIMEOUT),
    State.VOTING: ("voting", Event.VOTING_TIMEOUT),
    State.FINALIZING: ("finalizing", Event.AGGREGATION_TIMEOUT),
    State.VERIFYING: ("verifying", Event.VERIFICATION_TIMEOUT),
    State.STOPPING: ("stopping", Event.CLEANUP_COMPLETE),
}


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what the engine keeps, so no peer can make it grow without limit."""

    ranks_ahead: int = 8
    """Messages for ranks beyond the finalized rank plus this are ignored."""
    attempts_ahead: int = 8
    """Votes and confirmations for attempts beyond the current one plus this are not stored."""
    senders_per_rank: int = 256
    """At most this many senders are kept per rank and kind of message."""
    failures_before_sync: int = 8
    """Transient provider failures in one round before the engine induces a sync."""
    evidence_kept: int = 64
    """Equivocation evidence kept for inspection."""

    def __post_init__(self) -> None:
        _check_positive(self)
        for field in fields(self):
            if not isinstance(getattr(self, field.name), int):
                raise TypeError(f"{field.name} must be an integer")
