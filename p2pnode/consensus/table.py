"""The transition table, kept as data: the original's transitions plus the few the port adds."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from p2pnode.consensus.states import COMMIT_WATCH_STATES, ROUND_STATES, Event, Guard, State


@dataclass(frozen=True, slots=True)
class Transition:
    """Move from `source` to `target` on `event`, if `guard` (when set) holds."""

    source: State
    event: Event
    target: State
    guard: Guard | None = None

    @property
    def is_self_loop(self) -> bool:
        return self.source is self.target


def _seed() -> Iterator[Transition]:
    """The original's own table, unchanged."""
    s, e = State, Event
    yield Transition(s.STOPPED, e.START, s.STARTING)
    yield Transition(s.STARTING, e.INIT_COMPLETE, s.LOADING)
    yield Transition(s.LOADING, e.SYNC_TIMEOUT, s.LOADING)
    yield Transition(s.LOADING, e.SYNC_COMPLETE, s.COLLECTING)
    yield Transition(s.COLLECTING, e.COLLECTION_DONE, s.LIVENESS_CHECK)
    yield Transition(s.LIVENESS_CHECK, e.PROVER_SIGNAL, s.PROVING)
    yield Transition(s.LIVENESS_CHECK, e.LIVENESS_TIMEOUT, s.LIVENESS_CHECK)
    yield Transition(s.LIVENESS_CHECK, e.LIVENESS_CHECK_RECEIVED, s.LIVENESS_CHECK)
    yield Transition(s.PROVING, e.PROOF_COMPLETE, s.PUBLISHING)
    yield Transition(s.PROVING, e.PUBLISH_TIMEOUT, s.VOTING)
    yield Transition(s.PUBLISHING, e.PUBLISH_COMPLETE, s.VOTING)
    yield Transition(s.PUBLISHING, e.PUBLISH_TIMEOUT, s.VOTING)
    yield Transition(s.VOTING, e.PROPOSAL_RECEIVED, s.VOTING)
    yield Transition(s.VOTING, e.VOTE_RECEIVED, s.VOTING)
    yield Transition(s.VOTING, e.QUORUM_REACHED, s.FINALIZING)
    yield Transition(s.VOTING, e.VOTING_TIMEOUT, s.VOTING)
    yield Transition(s.FINALIZING, e.AGGREGATION_DONE, s.VERIFYING)
    yield Transition(s.FINALIZING, e.AGGREGATION_TIMEOUT, s.FINALIZING)
    yield Transition(s.VERIFYING, e.VERIFICATION_DONE, s.COLLECTING)
    yield Transition(s.VERIFYING, e.VERIFICATION_TIMEOUT, s.VERIFYING)
    for state in (s.STARTING, s.LOADING, *ROUND_STATES):
        yield Transition(state, e.STOP, s.STOPPING)
        yield Transition(state, e.INDUCE_SYNC, s.LOADING)
    yield Transition(s.STOPPING, e.CLEANUP_COMPLETE, s.STOPPED)


def _extensions() -> Iterator[Transition]:
    """What the port adds: confirmations are used, and an attempt can expire after voting."""
    s, e = State, Event
    for state in COMMIT_WATCH_STATES:
        # A round proven final by received confirmations ends at once (guard first: it wins).
        yield Transition(state, e.CONFIRMATION_RECEIVED, s.VERIFYING, Guard.COMMITTED)
    for state in (s.LOADING, *ROUND_STATES):
        yield Transition(state, e.CONFIRMATION_RECEIVED, state)
    # While waiting for the commit of an attempt, votes of later attempts may move us on.
    yield Transition(s.FINALIZING, e.VOTE_RECEIVED, s.FINALIZING)
    # The attempt ran out before a commit: vote again in the next attempt.
    yield Transition(s.FINALIZING, e.VOTING_TIMEOUT, s.VOTING)


TRANSITIONS: tuple[Transition, ...] = (*_extensions(), *_seed())


def _index(table: tuple[Transition, ...]) -> Mapping[tuple[State, Event], tuple[Transition, ...]]:
    index: dict[tuple[State, Event], list[Transition]] = {}
    for transition in table:
        index.setdefault((transition.source, transition.event), []).append(transition)
    return {key: tuple(found) for key, found in index.items()}


TABLE: Mapping[tuple[State, Event], tuple[Transition, ...]] = _index(TRANSITIONS)
"""Candidate transitions per (state, event), in priority order: the first whose guard holds."""


def candidates(state: State, event: Event) -> tuple[Transition, ...]:
    return TABLE.get((state, event), ())
