"""The engine's closed sets: its states, its events and the guards on transitions."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """A state of the consensus engine (the original's names and strings)."""

    STOPPED = "stopped"
    STARTING = "starting"
    LOADING = "loading"
    COLLECTING = "collecting"
    LIVENESS_CHECK = "liveness_check"
    PROVING = "proving"
    PUBLISHING = "publishing"
    VOTING = "voting"
    FINALIZING = "finalizing"
    VERIFYING = "verifying"
    STOPPING = "stopping"


class Event(enum.StrEnum):
    """An event that may move the engine between states (the original's names and strings)."""

    START = "start"
    STOP = "stop"
    SYNC_TIMEOUT = "sync_timeout"
    INDUCE_SYNC = "induce_sync"
    SYNC_COMPLETE = "sync_complete"
    INIT_COMPLETE = "init_complete"
    COLLECTION_DONE = "collection_done"
    LIVENESS_CHECK_RECEIVED = "liveness_check_received"
    LIVENESS_TIMEOUT = "liveness_timeout"
    PROVER_SIGNAL = "prover_signal"
    PROOF_COMPLETE = "proof_complete"
    PUBLISH_COMPLETE = "publish_complete"
    PUBLISH_TIMEOUT = "publish_timeout"
    PROPOSAL_RECEIVED = "proposal_received"
    VOTE_RECEIVED = "vote_received"
    QUORUM_REACHED = "quorum_reached"
    VOTING_TIMEOUT = "voting_timeout"
    AGGREGATION_DONE = "aggregation_done"
    AGGREGATION_TIMEOUT = "aggregation_timeout"
    CONFIRMATION_RECEIVED = "confirmation_received"
    VERIFICATION_DONE = "verification_done"
    VERIFICATION_TIMEOUT = "verification_timeout"
    CLEANUP_COMPLETE = "cleanup_complete"


class Guard(enum.Enum):
    """A condition a transition needs; the machine evaluates it when the event is handled."""

    COMMITTED = "committed"
    """The commit watcher found proof that the current round's frame is final."""


# Events raised by the receive methods: they only re-evaluate a state, so a queued one
# makes another of the same kind redundant.
RECEIVE_EVENTS = frozenset(
    {
        Event.LIVENESS_CHECK_RECEIVED,
        Event.PROPOSAL_RECEIVED,
        Event.VOTE_RECEIVED,
        Event.CONFIRMATION_RECEIVED,
    }
)

# States in which a round (one target rank) is being decided.
ROUND_STATES = (
    State.COLLECTING,
    State.LIVENESS_CHECK,
    State.PROVING,
    State.PUBLISHING,
    State.VOTING,
    State.FINALIZING,
    State.VERIFYING,
)

# States in which received confirmations can finalize the round at once.
COMMIT_WATCH_STATES = ROUND_STATES[:-1]
